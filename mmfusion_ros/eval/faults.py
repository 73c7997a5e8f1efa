"""The fault benchmark: does the system say which sensor is wrong, about which objects, how soon?

Input: simulator recordings with injected faults (``/mmfusion/faults`` says what, which sensor, when,
and which objects it hides or distorts) and, for the robustness ratio, clean renders of the same
scenes (same seeds: the same drive without the fault). Every frame of a recording runs through
``FusionPipeline`` in order (tracking and flag confirmation need the frames in sequence).

Per fault type:

- ``flag_recall_3``: of the (fault, object) pairs where the object is affected, scored (it has a
  lidar or radar return, as in ``mmfusion eval``) and detected in at least 3 frames of the fault,
  the share whose detection carries a confirmed flag naming the faulted sensor's modality within 3
  frames of the object's first affected and detected frame; ``time_to_flag_frames`` (mean, median
  over the pairs flagged at all) and ``flag_recall_any`` (flagged at some point of the fault);
- ``precision``: of the confirmed flags raised on detections in frames where the fault is active,
  the share that is on an affected object and names the faulted modality;
- ``false_flag_rate_clean``: flagged detections / detections on the clean renders (and, per fault
  type, on the frames of the faulted recordings before the fault starts); overall also
  ``false_flag_rate_objects``: of the detections that are a scored ground-truth object, those flagged;
  and ``health_false_alarms``: on the clean renders, the sensors' states other than ok (per frame and
  sensor, the recordings with any, and the frames per sensor);
- ``health_recall`` / ``health_latency_frames``: the faulted sensor's health leaves ``ok`` during the
  fault (and how many frames after its start), when the pipeline reports health;
- the same counted from the fault's *onset* (``flag_recall_3_from_onset``,
  ``time_to_flag_from_onset_frames``, ``health_latency_from_onset_frames``): the first frame of the
  fault in which the faulted sensor's data differ from the clean render's (``sensor_fingerprints``).
  A fault can not be seen before it shows: a frozen camera's first image of the fault is a fresh one
  (the freeze shows at the next), a silent radar is only late once its next scan is due, a dropped
  message is missed where the next would have come. ``onset_frames`` says how long that took after
  the start; where the two renders differ already before the start (or there is no clean render) the
  onset is the start (``onset_unknown`` counts those windows);
- ``mAP_fault``, ``mAP_clean``, ``NDS_fault``, ``NDS_clean`` over the frames of the fault window, and
  ``resistance_ability`` = mAP_fault / mAP_clean (MultiCorrupt's RA).
"""

from __future__ import annotations

import collections
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..config import FusionConfig
from ..consistency import flag_modality
from ..errors import EvalError
from ..frame import Frame
from ..pipeline import FusionPipeline
from ..sim.faults import parse_fault_statuses
from ..sync.keyframes import bag_frames
from ..types import Detections3D
from .detection import DetectionEvalConfig, evaluate_detections
from .run import recordings, scored_truth

__all__ = ['FaultFrame', 'clean_summary', 'evaluate_fault_recordings', 'fault_metrics', 'health_false_alarms',
           'run_recording', 'sensor_fingerprints']

MATCH_M = 2.0  # a detection within this of a ground-truth centre is that object's
RECALL_FRAMES = 3


@dataclass(frozen=True, eq=False)
class FaultFrame:
    """What the benchmark keeps of one frame."""

    recording: str
    index: int  # frame number in its recording
    stamp_ns: int
    faults: tuple[Any, ...]  # RecordedFault active at this frame
    truth: Detections3D  # scored ground truth (ids = object ids)
    detections: Detections3D
    flags: tuple[tuple[str, ...], ...]  # confirmed, per detection
    matched: np.ndarray  # (len(truth),) int: the detection row of each ground-truth object, -1 none
    health: dict[str, str] = field(default_factory=dict)  # sensor -> state, when the pipeline has health
    fingerprints: dict[str, int] = field(default_factory=dict)  # sensor -> checksum of its data in the frame


def sensor_fingerprints(frame: Frame) -> dict[str, int]:
    """Per sensor, a checksum of what it put into ``frame``: a camera's image and stamp, a lidar's or
    radar's returns (its newest scan and the older sweeps kept with it) and its newest scan's stamp.
    Two renders of one scene agree sensor by sensor until a fault changes what that sensor sends."""
    out: dict[str, int] = {}
    for view in frame.cameras:
        out[view.name] = zlib.crc32(np.ascontiguousarray(view.pixels), view.stamp_ns & 0xFFFFFFFF)
    for cloud, index, names in ((frame.lidar, frame.lidar_sensor, frame.lidar_sensors),
                                (frame.radar, frame.radar_sensor, frame.radar_sensors)):
        if cloud is None or index is None:
            continue
        for k, name in enumerate(names):
            rows = np.ascontiguousarray(cloud[index == k])
            out[name] = zlib.crc32(rows, zlib.crc32(str(frame.scan_stamps.get(name, -1)).encode()))
    return out


def _match(truth: Detections3D, detections: Detections3D) -> np.ndarray:
    """Greedy nearest-centre matching within MATCH_M, class-agnostic: ground-truth row -> detection row."""
    matched = np.full(len(truth), -1)
    if not len(truth) or not len(detections):
        return matched
    distance = np.linalg.norm(truth.centers[:, None, :2] - detections.centers[None, :, :2], axis=2)
    for flat in np.argsort(distance, axis=None):
        i, j = divmod(int(flat), distance.shape[1])
        if distance[i, j] > MATCH_M:
            break
        if matched[i] < 0 and j not in matched:
            matched[i] = j
    return matched


def run_recording(path: Path, config: FusionConfig, pipeline: FusionPipeline) -> list[FaultFrame]:
    """Every annotated frame of one recording through the pipeline, in order."""
    pipeline.reset(new_run=True)
    frames = []
    for index, frame in enumerate(bag_frames(path, config, lidar_sweeps=pipeline.net.config.lidar.sweeps,
                                             radar_sweeps=pipeline.net.config.radar.sweeps, keys='ground_truth')):
        result = pipeline.step(frame)
        truth = scored_truth(frame)
        health = dict(result.sensor_states)  # the worse of health and calibration, per sensor
        frames.append(FaultFrame(str(path), index, frame.stamp_ns, tuple(parse_fault_statuses(frame.faults)), truth,
                                 result.detections, result.flags, _match(truth, result.detections), health,
                                 sensor_fingerprints(frame)))
    return frames


def _modality_of(sensor: str, config: FusionConfig) -> str:
    return config.sensors[sensor].modality if sensor in config.sensors else ''


def _onset(run: Sequence[FaultFrame], reference: Sequence[FaultFrame] | None, sensor: str,
           indices: Sequence[int]) -> int | None:
    """The first of the fault's frames ``indices`` where ``sensor``'s data differ from the clean render's;
    None where that can not be told: no clean render, the renders differ before the fault already, or
    they never differ while it lasts."""
    if reference is None or not any(sensor in f.fingerprints for f in run):
        return None

    def differ(i: int) -> bool:
        return run[i].fingerprints.get(sensor) != reference[i].fingerprints.get(sensor)

    if any(differ(i) for i in range(min(indices[0], len(reference)))):
        return None
    return next((i for i in indices if i < len(reference) and differ(i)), None)


def _mean_max(values: Sequence[int]) -> dict[str, float | int | None]:
    return {'mean': round(float(np.mean(values)), 2) if values else None, 'max': int(max(values)) if values else None}


def _mean_median(values: Sequence[int]) -> dict[str, float | None]:
    return {'mean': round(float(np.mean(values)), 2) if values else None,
            'median': float(np.median(values)) if values else None}


def fault_metrics(faulted: Sequence[Sequence[FaultFrame]], clean: Sequence[Sequence[FaultFrame]],
                  config: FusionConfig, classes: Sequence[str]) -> dict[str, Any]:
    """The module docstring's figures for recordings of one fault type (``clean``: the same scenes)."""
    pairs_total = pairs_flagged_3 = pairs_flagged_any = 0
    delays: list[int] = []
    onset_pairs = onset_flagged_3 = onset_unknown = 0
    onset_delays: list[int] = []
    onsets: list[int] = []
    onset_health_delays: list[int] = []
    flags_during = flags_right = 0
    pre_detections = pre_flagged = 0
    health_faults = health_caught = 0
    health_delays: list[int] = []
    fault_pairs: list[tuple[Detections3D, Detections3D]] = []
    clean_pairs: list[tuple[Detections3D, Detections3D]] = []
    clean_by_recording = {Path(run[0].recording).name: run for run in clean if run}
    types = set()
    for run in faulted:
        windows: dict[tuple[str, str], list[int]] = collections.defaultdict(list)  # (type, sensor) -> frames
        for f in run:
            for fault in f.faults:
                windows[(fault.type, fault.sensor)].append(f.index)
                types.add(fault.type)
        first_fault = min((frames[0] for frames in windows.values()), default=len(run))
        for f in run[:first_fault]:
            pre_detections += len(f.detections)
            pre_flagged += sum(1 for flags in f.flags if flags)
        reference = clean_by_recording.get(Path(run[0].recording).name) if run else None
        for (fault_type, sensor), indices in windows.items():
            modality = _modality_of(sensor, config)
            onset = _onset(run, reference, sensor, indices)
            onset_unknown += int(onset is None)
            first = indices[0] if onset is None else onset
            onsets.append(first - indices[0])
            # Per object: frames where it is affected and detected, and when a right flag came.
            seen: dict[str, list[int]] = collections.defaultdict(list)
            flagged_at: dict[str, int] = {}
            for index in indices:
                f = run[index]
                fault = next(x for x in f.faults if (x.type, x.sensor) == (fault_type, sensor))
                affected = set(fault.object_ids)
                for i, object_id in enumerate(f.truth.ids):
                    row = f.matched[i]
                    if object_id in affected and row >= 0:
                        seen[object_id].append(index)
                        if object_id not in flagged_at and any(flag_modality(x) == modality for x in f.flags[row]):
                            flagged_at[object_id] = index
                truth_rows = {int(r): f.truth.ids[i] for i, r in enumerate(f.matched) if r >= 0}
                for row, flags in enumerate(f.flags):
                    for flag in flags:
                        flags_during += 1
                        flags_right += int(truth_rows.get(row) in affected and flag_modality(flag) == modality)
                fault_pairs.append((f.truth, f.detections))
                if reference is not None and index < len(reference):
                    clean_pairs.append((reference[index].truth, reference[index].detections))
            for object_id, frames in seen.items():
                if len(frames) < RECALL_FRAMES:
                    continue
                pairs_total += 1
                if object_id in flagged_at:
                    delay = frames.index(flagged_at[object_id]) if flagged_at[object_id] in frames else \
                        flagged_at[object_id] - frames[0]
                    pairs_flagged_any += 1
                    delays.append(delay)
                    pairs_flagged_3 += int(delay < RECALL_FRAMES)
                shown = [i for i in frames if i >= first]  # its frames once the fault shows
                if len(shown) < RECALL_FRAMES:
                    continue
                onset_pairs += 1
                if object_id in flagged_at:
                    at = flagged_at[object_id]
                    delay = max(0, shown.index(at) if at in shown else at - shown[0])
                    onset_delays.append(delay)
                    onset_flagged_3 += int(delay < RECALL_FRAMES)
            states = [run[i].health.get(sensor) for i in indices]
            if any(s is not None for s in states):
                health_faults += 1
                late = next((k for k, s in enumerate(states) if s not in (None, 'ok')), None)
                if late is not None:
                    health_caught += 1
                    health_delays.append(late)
                    onset_health_delays.append(max(0, late - (first - indices[0])))
    eval_config = DetectionEvalConfig(classes=tuple(classes))
    fault_scores = evaluate_detections(fault_pairs, eval_config) if fault_pairs else None
    clean_scores = evaluate_detections(clean_pairs, eval_config) if clean_pairs else None
    clean_detections = sum(len(f.detections) for run in clean for f in run)
    clean_flagged = sum(1 for run in clean for f in run for flags in f.flags if flags)

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    return {
        'fault_types': sorted(types),
        'recordings': len(faulted),
        'object_fault_pairs': pairs_total,
        'flag_recall_3': ratio(pairs_flagged_3, pairs_total),
        'flag_recall_any': ratio(pairs_flagged_any, pairs_total),
        'time_to_flag_frames': _mean_median(delays),
        'onset_frames': _mean_max(onsets),
        'onset_unknown': onset_unknown,
        'object_fault_pairs_from_onset': onset_pairs,
        'flag_recall_3_from_onset': ratio(onset_flagged_3, onset_pairs),
        'time_to_flag_from_onset_frames': _mean_median(onset_delays),
        'precision': ratio(flags_right, flags_during),
        'flags_during_fault': flags_during,
        'false_flag_rate_before_fault': ratio(pre_flagged, pre_detections),
        'false_flag_rate_clean': ratio(clean_flagged, clean_detections),
        'health_recall': ratio(health_caught, health_faults),
        'health_latency_frames': _mean_max(health_delays),
        'health_latency_from_onset_frames': _mean_max(onset_health_delays),
        'mAP_fault': round(fault_scores.mean_ap, 4) if fault_scores else None,
        'NDS_fault': round(fault_scores.nds, 4) if fault_scores else None,
        'mAP_clean': round(clean_scores.mean_ap, 4) if clean_scores else None,
        'NDS_clean': round(clean_scores.nds, 4) if clean_scores else None,
        'resistance_ability': ratio(fault_scores.mean_ap, clean_scores.mean_ap) if fault_scores and clean_scores else None,
    }


def clean_summary(runs: Sequence[Sequence[FaultFrame]]) -> dict[str, Any]:
    """False flags on recordings without faults: of the detections, and of the detections that are a
    scored ground-truth object (a flag on a false detection says the modalities disagree about
    something that is not there, which is right); and the flags by kind."""
    detections = sum(len(f.detections) for run in runs for f in run)
    flagged = sum(1 for run in runs for f in run for flags in f.flags if flags)
    objects = [(f, int(row)) for run in runs for f in run for row in f.matched if row >= 0]
    objects_flagged = sum(1 for f, row in objects if f.flags[row])
    kinds = collections.Counter(flag.split(':')[0] for run in runs for f in run for flags in f.flags for flag in flags)
    return {'recordings': len(runs), 'frames': sum(len(run) for run in runs), 'detections': detections,
            'false_flag_rate': round(flagged / detections, 4) if detections else None,
            'objects': len(objects),
            'false_flag_rate_objects': round(objects_flagged / len(objects), 4) if objects else None,
            'flags_by_kind': dict(sorted(kinds.items())),
            'health_false_alarms': health_false_alarms(runs)}


def health_false_alarms(runs: Sequence[Sequence[FaultFrame]]) -> dict[str, Any]:
    """Health (and calibration) verdicts other than ok on recordings without faults: the share of
    (frame, sensor) states, the recordings with any, and the frames per sensor."""
    states = [(name, state) for run in runs for f in run for name, state in f.health.items()]
    alarms = collections.Counter(name for name, state in states if state != 'ok')
    return {'sensor_frames': len(states),
            'rate': round(sum(alarms.values()) / len(states), 4) if states else None,
            'recordings': sum(1 for run in runs if any(s != 'ok' for f in run for s in f.health.values())),
            'frames_by_sensor': dict(sorted(alarms.items()))}


def evaluate_fault_recordings(faulted: Sequence[Path], clean: Sequence[Path], config: FusionConfig,
                              pipeline: FusionPipeline, progress: Callable[[Iterable], Iterable] = iter,
                              ) -> dict[str, Any]:
    """The benchmark over recordings (bags or dataset folders); grouped by the fault types they carry."""
    faulted_bags, clean_bags = recordings(faulted), recordings(clean) if clean else []
    if not faulted_bags:
        raise EvalError('no recordings with faults given')
    runs = {bag: run_recording(bag, config, pipeline) for bag in progress(faulted_bags)}
    clean_runs = [run_recording(bag, config, pipeline) for bag in progress(clean_bags)]
    if not any(f.faults for run in runs.values() for f in run):
        # Clean drives alone (no recording carries a fault): what they show is the false flags.
        clean_runs = [*runs.values(), *clean_runs]
        runs = {}
    by_type: dict[str, list[list[FaultFrame]]] = collections.defaultdict(list)
    for bag, run in runs.items():
        kinds = sorted({fault.type for f in run for fault in f.faults})
        if not kinds:
            continue
        by_type['+'.join(kinds)].append(run)
    classes = pipeline.net.config.head.classes
    return {
        'by_fault': {kind: fault_metrics(found, clean_runs, config, classes) for kind, found in sorted(by_type.items())},
        'clean': clean_summary(clean_runs),
        'faulted_recordings': [str(b) for b in faulted_bags], 'clean_recordings': [str(b) for b in clean_bags],
    }
