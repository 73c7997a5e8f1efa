"""``FusionPipeline.step(frame) -> FusionResult``: the stages in order, each timed.

    health       every sensor's health from its data (blackout, frozen, sector loss, silence, ...)
    geometry     frame -> network inputs (pillarize lidar and radar, camera lift geometry)
    network      encoders, fuser (gated by the modalities' health), backbone, heads (torch)
    decode       peaks + rotated NMS -> boxes above ``outputs.score_threshold``
    consistency  each modality's evidence per detection, flags, tracking, flags confirmed over frames

Every transport (rclpy node, bag replay, DDS bridge) calls this same ``step`` through
``runtime.FusionService``; the timed run is the real run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .config import FusionConfig
from .consistency import DetectionEvidence, detection_evidence
from .consistency.board import HealthBoard
from .consistency.health import HealthEstimate
from .consistency.stage import ConsistencyStage
from .frame import Frame
from .model.config import MODALITIES
from .model.decode import decode_detections
from .model.inputs import CameraGeometryCache, frame_inputs
from .model.network import FusionNet
from .model.refine import check_refined_classes, refine_long_boxes
from .model.weights import load_configured_model
from .timing import StageTimer
from .types import Detections3D

__all__ = ['FusionPipeline', 'FusionResult']


@dataclass(frozen=True, eq=False)
class FusionResult:
    """One frame's output: detections with each modality's evidence and the flags they raise."""

    frame: Frame
    detections: Detections3D
    evidence: DetectionEvidence
    flags: tuple[tuple[str, ...], ...]  # per detection, its confirmed disagreement reasons (empty: agreement)
    gates: tuple[float, float, float]  # the fuser's weight of camera, lidar, radar
    timings_ms: Mapping[str, float] = field(default_factory=dict)  # stage -> milliseconds, this frame
    flag_scores: tuple[Mapping[str, float], ...] = ()  # per detection, each confirmed flag's mean score
    raw_flags: tuple[tuple[str, ...], ...] = ()  # per detection, this frame's own flags before confirmation
    health: Mapping[str, HealthEstimate] = field(default_factory=dict)  # per sensor, as of this frame
    calibration: Mapping[str, Any] = field(default_factory=dict)  # camera drift, radar clock offset estimates
    sensor_states: Mapping[str, str] = field(default_factory=dict)  # per sensor, the worse of health and calibration

    @property
    def flagged(self) -> int:
        return sum(1 for f in self.flags if f)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, p in zip(MODALITIES, self.evidence.present) if p)


class FusionPipeline:
    """The network and its surrounding stages for one configuration; one frame per ``step``."""

    def __init__(self, config: FusionConfig, net: FusionNet | None = None, *, weights: str | None = None,
                 timer: StageTimer | None = None) -> None:
        self.config = config
        self.net = (net if net is not None else load_configured_model(config, weights)).eval()
        device = next(self.net.parameters()).device
        self.timer = timer or StageTimer(synchronize=torch.cuda.synchronize if device.type == 'cuda' else None)
        self.cache = CameraGeometryCache(self.net.config.grid, self.net.config.camera)
        self.head = dataclasses.replace(self.net.config.head, score_threshold=config.outputs.score_threshold)
        check_refined_classes(config.refine, self.head.classes)
        self.consistency = ConsistencyStage(config.tracking)
        self.health = HealthBoard(config)
        self._brightness: dict[str, float] = {}  # camera -> mean grey level of its latest image

    def step(self, frame: Frame, health: Sequence[float] | None = None) -> FusionResult:
        """Detect in one frame. ``health`` (camera, lidar, radar in [0, 1]) feeds the gated fuser;
        by default it is what the sensor health monitors make of this frame and the ones before."""
        grid = self.net.config.grid
        with self.timer.frame():
            with self.timer.stage('health'):
                estimates = self.health.update(frame)
                if health is None:
                    health = self.health.modality_health()
            with self.timer.stage('geometry'):
                inputs = frame_inputs(frame, self.net.config, self.cache, health)
            with torch.inference_mode():
                with self.timer.stage('network'):
                    outputs = self.net(inputs)
                with self.timer.stage('decode'):
                    detections = decode_detections(outputs, grid, self.head, frame.stamp_ns, frame.frame_id)
                    detections = refine_long_boxes(detections, frame.lidar, self.config.refine)
                with self.timer.stage('consistency'):
                    blind = [name for name, e in estimates.items() if e.modality == 'camera' and
                             (e.state == 'failed' or {'blackout', 'frozen'} & set(e.conditions))]
                    for name, e in estimates.items():
                        if e.modality == 'camera' and np.isfinite(e.estimates.get('mean_brightness', np.nan)):
                            self._brightness[name] = e.estimates['mean_brightness']
                    dark = [name for name, b in self._brightness.items() if b < self.config.consistency.camera_dark_mean]
                    evidence = detection_evidence(frame, detections, outputs, grid, self.head, self.config.consistency,
                                                  blind, dark, self.health.blind_radars(), self.health.radar_mounts(),
                                                  self.health.lost_lidar_sectors(), self.health.degraded_sensors(),
                                                  self.health.occluded_regions())
                    healthy = [all(e.state == 'ok' for e in estimates.values() if e.modality == m) for m in MODALITIES]
                    tracked = self.consistency.update(frame, detections, evidence, self.head.classes,
                                                      self.config.consistency, healthy)
                    self.health.update_offsets(frame, tracked.detections, tracked.settled)
        gates = tuple(float(g) for g in outputs.gates.detach().cpu())
        return FusionResult(frame, tracked.detections, evidence, tracked.flags, gates, self.timer.last,  # type: ignore[arg-type]
                            tracked.scores, tracked.raw, estimates, dict(self.health.calibration),
                            self.health.states())

    def reset(self, new_run: bool = False) -> None:
        """Forget earlier frames: objects and sensor histories (time went backwards, a new recording).

        ``new_run``: also start the track ids afresh (same input, same ids, whoever runs it)."""
        self.consistency.reset(restart_ids=new_run)
        self.health.reset()
        self._brightness.clear()
