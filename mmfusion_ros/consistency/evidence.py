"""What each modality says about each fused detection, and the flags where they disagree.

Per detection and modality (camera, lidar, radar):

- ``head``: the modality's own auxiliary heatmap at the detection (the best score of the detection's
  class in the 3x3 head cells around its centre): what that modality alone believes; NaN when the
  modality is absent from the frame;
- ``lidar_points``: current-sweep lidar points inside the box; ``radar_points``: radar returns inside
  the box grown by ``radar_margin_m`` in x and y (radar is sparse and its azimuth coarse);
- ``in_camera_view``: the box centre projects into at least one camera image of the frame.

A modality *supports* a detection when its head scores it at least ``support_score``, or (lidar,
radar) when it has at least the configured number of returns in the box. It is *expected* to see a
detection when it is present in the frame, and for cameras when the box lies in a camera's view.
Flags: ``missing_in_<m>`` (expected, no support), ``only_<m>`` (the one supporting modality among at
least two expected). Occlusion, range, sensor health, velocity/class/position conflicts and the
temporal filter that confirms a flag over frames build on this evidence in the consistency stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConsistencySection, GridConfig
from ..frame import Frame
from ..geometry.boxes import points_in_boxes
from ..model.config import MODALITIES, HeadConfig
from ..model.network import NetOutputs
from ..types import Detections3D

__all__ = ['DetectionEvidence', 'detection_evidence', 'disagreement_flags']


@dataclass(frozen=True, eq=False)
class DetectionEvidence:
    """Per-detection support, one row per detection, modality columns in ``MODALITIES`` order."""

    head: np.ndarray  # (N, 3) float64 the modality's own head score at the object; NaN: modality absent
    lidar_points: np.ndarray  # (N,) int32 current-sweep lidar points in the box
    radar_points: np.ndarray  # (N,) int32 radar returns in the grown box
    in_camera_view: np.ndarray  # (N,) bool the centre projects into a camera image
    present: tuple[bool, bool, bool]  # the modality is in the frame

    def __len__(self) -> int:
        return len(self.lidar_points)

    def supports(self, config: ConsistencySection) -> np.ndarray:
        """(N, 3) bool: the modality supports the detection (head score or returns)."""
        support = np.nan_to_num(self.head, nan=0.0) >= config.support_score
        support[:, 1] |= self.lidar_points >= config.min_lidar_points
        support[:, 2] |= self.radar_points >= config.min_radar_points
        return support & np.array(self.present)[None, :]

    def expected(self) -> np.ndarray:
        """(N, 3) bool: the modality is present and (cameras) the object is in its view."""
        expected = np.tile(np.array(self.present), (len(self), 1))
        expected[:, 0] &= self.in_camera_view
        return expected

    @classmethod
    def empty(cls, present: tuple[bool, bool, bool]) -> DetectionEvidence:
        return cls(np.zeros((0, 3)), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, bool), present)


def _head_scores(outputs: NetOutputs, detections: Detections3D, grid: GridConfig, head: HeadConfig) -> np.ndarray:
    n = len(detections)
    scores = np.full((n, len(MODALITIES)), np.nan)
    if n == 0:
        return scores
    cell = grid.cell_size * head.output_stride
    H, W = outputs.head.heatmap.shape[-2:]
    cols = np.clip(np.floor((detections.centers[:, 0] - grid.x_range[0]) / cell).astype(int), 0, W - 1)
    rows = np.clip(np.floor((detections.centers[:, 1] - grid.y_range[0]) / cell).astype(int), 0, H - 1)
    labels = np.array([head.classes.index(label) for label in detections.labels])
    for m, modality in enumerate(MODALITIES):
        if not bool(outputs.present[m]):
            continue
        heat = torch.sigmoid(outputs.aux_heatmaps[modality].detach().float().cpu())  # (1, K, H, W)
        best = F.max_pool2d(heat, 3, stride=1, padding=1)[0].numpy()  # the best of the 3x3 cells around
        scores[:, m] = best[labels, rows, cols]
    return scores


def _in_camera_view(frame: Frame, centers: np.ndarray) -> np.ndarray:
    visible = np.zeros(len(centers), bool)
    for view in frame.cameras:
        to_camera = view.camera_to_base.inverse()
        p = to_camera.apply(centers)  # (N, 3) in the camera's optical frame (z forward)
        K = view.intrinsics.p[:, :3]
        ahead = p[:, 2] > 0.5
        with np.errstate(divide='ignore', invalid='ignore'):
            u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
            v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
        visible |= ahead & (u >= 0) & (u < view.intrinsics.width) & (v >= 0) & (v < view.intrinsics.height)
    return visible


def detection_evidence(frame: Frame, detections: Detections3D, outputs: NetOutputs, grid: GridConfig,
                       head: HeadConfig, config: ConsistencySection) -> DetectionEvidence:
    """Each modality's support for each of ``detections`` (in the frame's base frame)."""
    present = tuple(bool(p) for p in outputs.present)
    n = len(detections)
    if n == 0:
        return DetectionEvidence.empty(present)  # type: ignore[arg-type]
    boxes = np.column_stack([detections.centers, detections.sizes, detections.yaws])  # (N, 7)
    lidar_points = np.zeros(n, np.int32)
    if frame.lidar is not None and len(frame.lidar):
        age = frame.lidar[:, 4]
        current = frame.lidar[age <= age.min() + 1e-3, :3]
        _, lidar_points = points_in_boxes(np.ascontiguousarray(current), boxes)
    radar_points = np.zeros(n, np.int32)
    if frame.radar is not None and len(frame.radar):
        grown = boxes.copy()
        grown[:, 3:5] += 2 * config.radar_margin_m
        grown[:, 5] += 2.0  # radar elevation is coarse: any height near the box
        _, radar_points = points_in_boxes(np.ascontiguousarray(frame.radar[:, :3]), grown)
    return DetectionEvidence(_head_scores(outputs, detections, grid, head), lidar_points.astype(np.int32),
                             radar_points.astype(np.int32), _in_camera_view(frame, detections.centers), present)  # type: ignore[arg-type]


def disagreement_flags(evidence: DetectionEvidence, config: ConsistencySection) -> tuple[tuple[str, ...], ...]:
    """Per detection, its flags in a fixed order: ``missing_in_<m>`` then ``only_<m>``."""
    support = evidence.supports(config)
    expected = evidence.expected()
    flags = []
    for i in range(len(evidence)):
        reasons = [f'missing_in_{m}' for k, m in enumerate(MODALITIES) if expected[i, k] and not support[i, k]]
        backing = [m for k, m in enumerate(MODALITIES) if support[i, k]]
        if len(backing) == 1 and expected[i].sum() >= 2:
            reasons.append(f'only_{backing[0]}')
        flags.append(tuple(reasons))
    return tuple(flags)
