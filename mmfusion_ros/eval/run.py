"""``mmfusion eval``: run the network over annotated recordings and score it, per modality subset.

Every key frame of every recording (each ``scene_*`` of a dataset folder, or the bags named) is
assembled once; the network then sees it with each subset of modalities (``SUBSETS``: the fused
model, each modality alone, and each one removed), and each subset's detections are scored with
the nuScenes metrics of ``eval/detection.py`` against the same ground truth.

Ground-truth boxes with no sensor evidence (no point of the current lidar sweep and no radar point
inside the box) are left out, as nuScenes leaves out boxes without lidar or radar points: an object
no sensor returned anything from (behind a building) can not be detected and is not scored. The
evidence is counted in the recorded data, whatever subset the network sees.

Detections are decoded with a score threshold of ``EVAL_SCORE_THRESHOLD`` instead of the runtime's
(``head.score_threshold``): average precision integrates over every confidence, and a box cut at the
runtime threshold is recall the metric can no longer see (nuScenes submissions keep up to 500
boxes a frame for the same reason).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..config import FusionConfig
from ..errors import EvalError
from ..frame import Frame
from ..geometry.boxes import points_in_boxes
from ..model.decode import decode_detections
from ..model.inputs import CameraGeometryCache, frame_inputs
from ..model.network import FusionNet
from ..model.refine import check_refined_classes, refine_long_boxes
from ..sync.keyframes import bag_frames
from ..types import Detections3D
from .detection import DetectionEvalConfig, evaluate_detections

__all__ = ['EVAL_SCORE_THRESHOLD', 'SUBSETS', 'evaluate_model', 'evidence_counts', 'recordings', 'scored_truth']

EVAL_SCORE_THRESHOLD = 0.05

SUBSETS: dict[str, tuple[str, ...]] = {
    'fused': ('camera', 'lidar', 'radar'),
    'camera_only': ('camera',),
    'lidar_only': ('lidar',),
    'radar_only': ('radar',),
    'without_camera': ('lidar', 'radar'),
    'without_lidar': ('camera', 'radar'),
    'without_radar': ('camera', 'lidar'),
}


def evidence_counts(truth: Detections3D, lidar: np.ndarray | None, radar: np.ndarray | None) -> np.ndarray:
    """(M,) int: current-sweep lidar points plus radar points inside each ground-truth box."""
    counts = np.zeros(len(truth), np.int64)
    if len(truth) == 0:
        return counts
    boxes = np.hstack([truth.centers, truth.sizes, truth.yaws[:, None]])
    for points in (None if lidar is None else lidar[lidar[:, -1] < 1e-6, :3],
                   None if radar is None else radar[:, :3]):
        if points is not None and len(points):
            counts += points_in_boxes(np.ascontiguousarray(points, np.float32), boxes)[1]
    return counts


def scored_truth(frame: Frame) -> Detections3D:
    """The frame's ground truth with the boxes no sensor has evidence of left out."""
    truth = frame.ground_truth
    if truth is None:
        raise EvalError(f'frame {frame.stamp_ns}: no ground truth')
    keep = evidence_counts(truth, frame.lidar, frame.radar) > 0
    return Detections3D(truth.stamp_ns, truth.frame_id, truth.centers[keep], truth.sizes[keep], truth.yaws[keep],
                        truth.velocities[keep], tuple(np.asarray(truth.labels, object)[keep]),
                        truth.scores[keep], tuple(np.asarray(truth.ids, object)[keep]) if truth.ids else ())


def recordings(paths: Sequence[Path]) -> list[Path]:
    """The bags to score: a dataset folder (with ``scene_*`` bags) expands to its scenes."""
    found: list[Path] = []
    for path in paths:
        scenes = sorted(p for p in path.iterdir() if p.is_dir() and p.name.startswith('scene_')) \
            if path.is_dir() else []
        found += scenes or [path]
    return found


def with_modalities(frame: Frame, modalities: Iterable[str]) -> Frame:
    keep = set(modalities)
    lidar, radar = 'lidar' in keep, 'radar' in keep
    return dataclasses.replace(frame, cameras=frame.cameras if 'camera' in keep else (),
                               lidar=frame.lidar if lidar else None, lidar_sensor=frame.lidar_sensor if lidar else None,
                               radar=frame.radar if radar else None, radar_sensor=frame.radar_sensor if radar else None,
                               radar_origin=frame.radar_origin if radar else None)


def _frames(paths: Sequence[Path], config: FusionConfig, net: FusionNet, every: int) -> Iterator[Frame]:
    for path in paths:
        yield from bag_frames(path, config, lidar_sweeps=net.config.lidar.sweeps,
                              radar_sweeps=net.config.radar.sweeps, keys='ground_truth', every=every)


def evaluate_model(paths: Sequence[Path], config: FusionConfig, net: FusionNet, *, every: int = 1,
                   subsets: Sequence[str] = tuple(SUBSETS), progress: bool = True) -> dict[str, Any]:
    """Score ``net`` on the recordings; the result has ``mAP``, ``NDS``, ``per_class`` (the fused
    model's) and ``by_modality`` (every subset's summary)."""
    from tqdm import tqdm

    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise EvalError(f'unknown modality subsets {unknown}; choose from {", ".join(SUBSETS)}')
    check_refined_classes(config.refine, net.config.head.classes)
    bags = recordings(paths)
    net.eval()
    cache = CameraGeometryCache(net.config.grid, net.config.camera)
    head = dataclasses.replace(net.config.head, score_threshold=min(EVAL_SCORE_THRESHOLD, net.config.head.score_threshold))
    pairs: dict[str, list[tuple[Detections3D, Detections3D]]] = {s: [] for s in subsets}
    seconds = {s: 0.0 for s in subsets}
    frames = 0
    with torch.inference_mode():
        for frame in tqdm(_frames(bags, config, net, every), desc='evaluating', unit='frame', disable=not progress):
            truth = scored_truth(frame)
            frames += 1
            for subset in subsets:
                started = time.perf_counter()
                seen = with_modalities(frame, SUBSETS[subset])
                inputs = frame_inputs(seen, net.config, cache)
                detections = decode_detections(net(inputs), net.config.grid, head, frame.stamp_ns, frame.frame_id)
                detections = refine_long_boxes(detections, seen.lidar, config.refine)
                seconds[subset] += time.perf_counter() - started
                pairs[subset].append((truth, detections))
    if not frames:
        raise EvalError(f'no annotated frames in {", ".join(map(str, bags))} (is there a /mmfusion/ground_truth topic?)')
    eval_config = DetectionEvalConfig(classes=net.config.head.classes)
    results = {s: evaluate_detections(pairs[s], eval_config).to_json() for s in subsets}
    main = results['fused'] if 'fused' in results else results[subsets[0]]
    by_modality = {s: {'modalities': list(SUBSETS[s]), 'mAP': r['mAP'], 'NDS': r['NDS'],
                       'NDS_nuscenes': r['NDS_nuscenes'], 'tp_errors': r['tp_errors'],
                       'AP_per_class': {c: m['AP_mean'] for c, m in r['per_class'].items()},
                       'ms_per_frame': round(1e3 * seconds[s] / frames, 2)}
                   for s, r in results.items()}
    fused_nds = main['NDS']
    for s, entry in by_modality.items():
        entry['NDS_ratio_to_fused'] = round(entry['NDS'] / fused_nds, 4) if fused_nds > 0 else None
    return {
        'recordings': [str(p) for p in bags], 'frames': frames, 'every': every,
        'ground_truth_boxes': int(sum(len(t) for t, _ in pairs[subsets[0]])),
        'mAP': main['mAP'], 'NDS': main['NDS'], 'NDS_nuscenes': main['NDS_nuscenes'],
        'tp_errors': main['tp_errors'], 'per_class': main['per_class'], 'by_modality': by_modality,
        'config': main['config'],
    }
