"""The consistency stage over time: track the detections, confirm their flags over frames.

``ConsistencyStage.update(frame, detections, evidence, ...)`` runs once per frame, in order:

1. the tracker associates this frame's detections with the objects of earlier frames in the fixed
   frame (``frame.pose``; the base frame when the pose is unknown), so an object keeps its id and
   gets a smoothed velocity (positions, the network's velocity and, within its gate, the radar's
   doppler);
2. each detection's single-frame flags are raised from its evidence (the radar's doppler checked
   against the track's velocity once the track has a few detections). Per track and modality the
   stage counts the frames the modality saw the object: a healthy modality that has not seen it in
   ``missing_after_sightings`` frames yet may have a blind spot there that geometry does not know (a
   median barrier below a radar, a dark doorway for a camera): no ``missing_in`` for it (health
   saying its sensor is blind still raises one). Once seen, the object is expected for the rest of
   its track: its loss is what a failing sensor looks like;
3. they go to the flag filter under the detection's track id (a camera that health already calls
   blind passes its ``missing_in_camera`` straight through: that was confirmed over frames): a flag is
   published once it was raised in 2 of the last 3 frames of that object, and cleared after 2
   frames without it. One noisy frame raises nothing.

The published detections carry the track ids as their ids and the tracker's velocity where it has
one (the network's otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..config import ConsistencySection, TrackingSection
from ..frame import Frame
from ..types import Detections3D
from .evidence import DetectionEvidence, disagreement_flags
from .tracking import FlagFilter, Tracker

__all__ = ['ConsistencyStage', 'TrackedFlags']


@dataclass(frozen=True, eq=False)
class TrackedFlags:
    detections: Detections3D  # ids = track ids; velocities smoothed by the tracker where known
    flags: tuple[tuple[str, ...], ...]  # per detection, the confirmed flags
    scores: tuple[Mapping[str, float], ...]  # per detection, each confirmed flag's mean score over its window
    raw: tuple[tuple[str, ...], ...]  # per detection, this frame's own flags
    settled: np.ndarray  # (N,) bool the detection's track has a velocity from enough detections


class ConsistencyStage:
    velocity_hits = 3  # detections of a track before its velocity is the radar's reference

    def __init__(self, config: TrackingSection = TrackingSection()) -> None:
        self.tracker = Tracker(config)
        self.filter = FlagFilter(config)
        # track id -> (3,) int: frames each modality saw it
        self._sightings: dict[str, np.ndarray] = {}

    def reset(self, restart_ids: bool = False) -> None:
        ended = self.tracker.reset(restart_ids)
        self.filter.forget(ended)
        self._sightings.clear()

    def _unproven(self, ids: Sequence[str], support: np.ndarray, config: ConsistencySection,
                  healthy: Sequence[bool]) -> np.ndarray:
        """(N, 3) bool per the module docstring, from this frame's ``support`` (N, 3); then this frame's
        sightings are counted per track."""
        unproven = np.zeros(support.shape, bool)
        for i, track_id in enumerate(ids):
            if not track_id:
                continue
            tally = self._sightings.setdefault(track_id, np.zeros(3, np.int64))
            unproven[i] = (tally < config.missing_after_sightings) & np.asarray(healthy, bool)
            tally += support[i]
        return unproven

    def update(self, frame: Frame, detections: Detections3D, evidence: DetectionEvidence,
               classes: tuple[str, ...], config: ConsistencySection,
               healthy: Sequence[bool] = (True, True, True)) -> TrackedFlags:
        """``healthy``: per modality, every sensor of it is ok by health (only then is an unseen object's
        absence put down to a blind spot)."""
        pose = frame.pose.matrix if frame.pose is not None else None
        tracked = self.tracker.update(detections, pose, (evidence.doppler_measured, evidence.doppler_los))
        if tracked.ended:
            self.filter.forget(tracked.ended)
            for track_id in tracked.ended:
                self._sightings.pop(track_id, None)
        n = len(detections)
        ids = tracked.track_ids[:n]
        # The radar's doppler is checked against the object's motion over frames (tracks with a few
        # hits), not against one frame's regressed velocity.
        settled = tracked.hits[:n] >= self.velocity_hits
        track_velocity = np.where(settled[:, None], tracked.velocities[:n], np.nan)
        support = evidence.supports(config)
        unproven = self._unproven(ids, support, config, healthy)
        raw = disagreement_flags(evidence, detections, classes, config, track_velocity, unproven, support)
        names = [[name for name, _ in row] for row in raw]
        scores = [dict(row) for row in raw]
        confirmed = self.filter.update(ids, names, scores)
        # A camera whose health is failed (black, frozen) was confirmed over frames already: what only it
        # should see is missing in the camera from the first frame, without waiting for the filter.
        # (and the same for a radar that health calls silent or failed, and a lidar's lost sector).
        at_once = [{m for m, blind in (('missing_in_camera', evidence.camera_blind[i]),
                                        ('missing_in_lidar', evidence.lidar_blind[i]),
                                        ('missing_in_radar', evidence.radar_blind[i])) if blind and m in names[i]}
                   | {flag for flag in names[i] if flag.startswith('degraded:')}  # health confirmed it
                   for i in range(n)]
        confirmed = tuple(tuple(sorted({*flags, *extra})) if extra else flags
                          for flags, extra in zip(confirmed, at_once))
        velocities = detections.velocities.copy()
        known = np.isfinite(tracked.velocities[:n]).all(axis=1)
        velocities[known] = tracked.velocities[:n][known]
        # Ids are unique within a frame: a second detection of one track (the tracker's duplicate) and an
        # untracked row (non-finite centre) get the row number added.
        published_ids, seen = [], set()
        for row, track_id in enumerate(ids):
            published = track_id if track_id and track_id not in seen else f'{track_id or "untracked"}.{row}'
            seen.add(published)
            published_ids.append(published)
        out = Detections3D(detections.stamp_ns, detections.frame_id, detections.centers, detections.sizes,
                           detections.yaws, velocities, detections.labels, detections.scores, tuple(published_ids))
        flag_scores = tuple({flag: round(self.filter.score(track_id, flag), 3) for flag in flags}
                            for track_id, flags in zip(ids, confirmed))
        return TrackedFlags(out, confirmed, flag_scores, tuple(tuple(row) for row in names),
                            settled & np.isfinite(tracked.velocities[:n]).all(axis=1))
