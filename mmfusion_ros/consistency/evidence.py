"""What each modality says about each fused detection, and the flags where they disagree.

Evidence per detection and modality (camera, lidar, radar):

- ``head``: the modality's own auxiliary heatmap at the detection (the best score of the
  detection's class in the 3x3 head cells around its centre): what that modality alone believes;
  NaN when the modality is absent from the frame. ``head_class`` / ``head_class_score``: the class
  that modality's head likes best there, over those of the 3x3 cells that are nearer this detection
  than any other (a car's peak beside a cyclist is the car's class, not a class conflict of the
  cyclist's);
- ``offset``: where the modality's own head puts the object, minus the fused centre (metres; the
  score-weighted centroid of its best cell's 3x3 neighbourhood within two cells of the detection, three for the radar),
  and ``peak``, that best cell's score;
- ``lidar_points``: current-sweep lidar points in the box grown by ``lidar_margin_m`` (its returns lie
  on the faces); ``radar_points``: radar returns in the box
  grown by ``radar_margin_m``; ``doppler_measured``: their median radial ground speed (each seen from
  its own radar), checked against the object's velocity projected on their line of sight;
- expectation: ``in_camera_view`` (the box projects into a camera image of the frame, within range
  (pedestrians and cyclists: ``camera_small_range_m``),
  not hidden behind nearer objects; ``camera_blind`` when each such camera is black, frozen or failed
  by its health, so it can not support the object), ``lidar_expected`` (in range, big enough at its
  range to give ``lidar_expected_points`` returns (``expected_lidar_returns``), not in the shadow of
  nearer large objects, not behind returns of its own that stop nearer (``lidar_line_of_sight``);
  ``lidar_blind`` in an azimuth sector health says the lidar has lost),
  ``radar_expected`` (in a radar's field of view and range, pedestrians only nearer, not in a shadow,
  and not behind what the lidar shows low between the radar and the object: ``radar_line_of_sight``).

Flags (``disagreement_flags``), each with a score (how far past its threshold, >= 1 when raised):

- ``missing_in_<m>``: modality ``m`` is present and expected to see the object and does not
  support it (its head's best class below ``support_score`` and, for lidar and radar, too few returns);
- ``degraded:<m>``: the object is in the field of view of a sensor of ``m`` whose health or
  calibration (a camera's drift, a radar's clock) is not ok (however far: its evidence for the object,
  or its absence, comes from a sensor in trouble);
- ``only_<m>``: ``m`` is the one supporting modality of at least two expected;
- ``velocity_conflict:radar``: fewer than ``doppler_agreement`` of the object's radar returns have a
  doppler within ``velocity_tolerance_mps`` + 25 % of its speed of its radial velocity (each return
  along its own line of sight; the score is the median return's miss over that tolerance);
- ``class_conflict:<m>``: ``m``'s own head prefers another class by ``class_margin`` (not the radar's
  unless ``radar_class_conflicts``: it tells a car from a truck poorly);
- ``position_conflict:<m>``: ``m``'s own head puts the object more than ``position_tolerance_m``
  (radar: ``radar_position_tolerance_m``; long vehicles: half their length) away (for the camera,
  only the part across the line of sight counts: its depth is coarse).

These are single-frame judgements; the consistency stage confirms them over frames per tracked
object (``tracking.FlagFilter``) before they are published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConsistencySection, GridConfig
from ..frame import Frame
from ..geometry.boxes import points_in_boxes
from ..model.config import MODALITIES, HeadConfig
from ..model.network import NetOutputs
from ..types import Detections3D, RigidTransform

__all__ = ['DetectionEvidence', 'detection_evidence', 'disagreement_flags', 'expected_lidar_returns', 'flag_modality',
           'lidar_line_of_sight', 'radar_line_of_sight']

_BIG_CLASSES = frozenset({'car', 'truck', 'bus'})  # what hides an object behind it
_SMALL_CLASSES = frozenset({'pedestrian', 'cyclist'})  # what a camera resolves only nearer
RADAR_LAG_S = 0.08  # how much older than the frame a radar's newest scan can be (a 13 Hz period)
# Head cells either side of a detection in which a modality's own peak is looked for: far enough to
# see past each tolerance (2.5 m; the radar's 4 m), near enough not to reach the next object.
_WINDOW = {'camera': 2, 'lidar': 2, 'radar': 3}


@dataclass(frozen=True, eq=False)
class DetectionEvidence:
    """Per-detection support, one row per detection, modality columns in ``MODALITIES`` order."""

    head: np.ndarray  # (N, 3) float64 the modality's own head score at the object; NaN: modality absent
    head_class: np.ndarray  # (N, 3) int64 its best class index there; -1: absent
    head_class_score: np.ndarray  # (N, 3) float64 that class's score
    offset: np.ndarray  # (N, 3, 2) float64 its own peak minus the fused centre, metres; NaN: no peak
    peak: np.ndarray  # (N, 3) float64 the score of that peak
    lidar_points: np.ndarray  # (N,) int32 current-sweep lidar points in the box
    radar_points: np.ndarray  # (N,) int32 radar returns in the grown box
    doppler_measured: np.ndarray  # (N,) float64 median radial ground speed of its radar returns, NaN: too few
    doppler_los: np.ndarray  # (N, 2) float64 their mean line of sight (unit)
    # Each return used for the doppler: its detection row, radial ground speed and line of sight.
    return_rows: np.ndarray  # (R,) int64
    return_radial: np.ndarray  # (R,) float64
    return_los: np.ndarray  # (R, 2) float64
    in_camera_view: np.ndarray  # (N,) bool in a camera image, in range, not hidden
    camera_blind: np.ndarray  # (N,) bool every camera that should see it is black, frozen or failed (health)
    radar_blind: np.ndarray  # (N,) bool every radar whose field of view holds it is silent or failed (health)
    lidar_blind: np.ndarray  # (N,) bool in an azimuth sector every lidar has lost (health: sector_loss)
    degraded: np.ndarray  # (N, 3) bool in the view of a sensor of that modality whose health is not ok
    lidar_expected: np.ndarray  # (N,) bool
    radar_expected: np.ndarray  # (N,) bool
    present: tuple[bool, bool, bool]  # the modality is in the frame

    def __len__(self) -> int:
        return len(self.lidar_points)

    def supports(self, config: ConsistencySection) -> np.ndarray:
        """(N, 3) bool: the modality supports the detection (its head's score there, of any class, or
        returns)."""
        # Support is seeing an object there, of any class (another class is a class conflict).
        head = np.nan_to_num(np.fmax(self.head, self.head_class_score), nan=0.0)
        support = head >= config.support_score
        support[:, 0] = (head[:, 0] >= config.camera_support_score) & ~self.camera_blind
        support[:, 1] |= self.lidar_points >= config.min_lidar_points
        support[:, 2] |= self.radar_points >= config.min_radar_points
        support[:, 2] &= ~self.radar_blind  # returns left from before it fell silent are no support now
        support[:, 1] &= ~self.lidar_blind  # nor older sweeps' points in a sector the lidar has lost
        return support & np.array(self.present)[None, :]

    def doppler_residual(self, velocities: np.ndarray) -> np.ndarray:
        """(N,) measured radial speed - the velocities (N, 2) projected on the line of sight, m/s."""
        return self.doppler_measured - np.sum(self.doppler_los * velocities, axis=1)

    def doppler_agreement(self, velocities: np.ndarray, tolerances: np.ndarray) -> np.ndarray:
        """(N,) share of each detection's returns whose radial speed is within its tolerance (N,) of
        the velocities (N, 2) along their own line of sight; NaN where it has no returns."""
        n = len(self)
        predicted = np.sum(self.return_los * velocities[self.return_rows], axis=1)
        agree = np.abs(self.return_radial - predicted) <= tolerances[self.return_rows]
        count = np.bincount(self.return_rows, minlength=n).astype(np.float64)
        agreeing = np.bincount(self.return_rows, weights=agree.astype(np.float64), minlength=n)
        with np.errstate(invalid='ignore', divide='ignore'):
            return np.where(count > 0, agreeing / count, np.nan)

    def expected(self) -> np.ndarray:
        """(N, 3) bool: the modality is present and placed to see the object."""
        expected = np.stack([self.in_camera_view, self.lidar_expected, self.radar_expected], axis=1)
        return expected & np.array(self.present)[None, :]

    @classmethod
    def empty(cls, present: tuple[bool, bool, bool]) -> DetectionEvidence:
        n3, none = np.zeros((0, 3)), np.zeros(0, bool)
        return cls(head=n3, head_class=np.zeros((0, 3), np.int64), head_class_score=n3, offset=np.zeros((0, 3, 2)),
                   peak=n3, lidar_points=np.zeros(0, np.int32), radar_points=np.zeros(0, np.int32),
                   doppler_measured=np.zeros(0), doppler_los=np.zeros((0, 2)), return_rows=np.zeros(0, np.int64),
                   return_radial=np.zeros(0), return_los=np.zeros((0, 2)), in_camera_view=none, camera_blind=none,
                   radar_blind=none, lidar_blind=none, degraded=np.zeros((0, 3), bool), lidar_expected=none,
                   radar_expected=none, present=present)


def flag_modality(flag: str) -> str | None:
    """The modality a flag names: ``missing_in_camera`` -> camera, ``position_conflict:lidar`` -> lidar."""
    for prefix in ('missing_in_', 'only_'):
        if flag.startswith(prefix):
            return flag[len(prefix):]
    return flag.split(':', 1)[1] if ':' in flag else None


# ---------------------------------------------------------------------------------------------------
# Evidence


def _own_cells(centers: np.ndarray, i: int, r0: int, r1: int, c0: int, c1: int, grid: GridConfig,
               cell: float) -> np.ndarray:
    """(r1 - r0, c1 - c0) bool: the window's head cells nearer detection ``i`` than any other detection.

    A modality's own peak found there is this object's; one nearer a neighbour is the neighbour's
    (two cars parked 4 m apart are not one car seen 4 m off by the lidar).
    """
    ys, xs = np.mgrid[r0:r1, c0:c1]
    x = grid.x_range[0] + (xs + 0.5) * cell
    y = grid.y_range[0] + (ys + 0.5) * cell
    d2 = (x[..., None] - centers[:, 0]) ** 2 + (y[..., None] - centers[:, 1]) ** 2  # (h, w, N)
    finite = np.isfinite(d2)
    d2 = np.where(finite, d2, np.inf)
    return d2[..., i] <= d2.min(axis=-1)


def _head_evidence(outputs: NetOutputs, detections: Detections3D, grid: GridConfig,
                   head: HeadConfig) -> tuple[np.ndarray, ...]:
    n, K = len(detections), head.num_classes
    scores = np.full((n, 3), np.nan)
    best_class = np.full((n, 3), -1, np.int64)
    best_score = np.full((n, 3), np.nan)
    offset = np.full((n, 3, 2), np.nan)
    peak = np.full((n, 3), np.nan)
    cell = grid.cell_size * head.output_stride
    H, W = outputs.head.heatmap.shape[-2:]
    cols = np.clip(np.floor((detections.centers[:, 0] - grid.x_range[0]) / cell).astype(int), 0, W - 1)
    rows = np.clip(np.floor((detections.centers[:, 1] - grid.y_range[0]) / cell).astype(int), 0, H - 1)
    labels = np.array([head.classes.index(label) for label in detections.labels], np.int64)
    # Which head cells around each detection are its own (geometry alone: the same for every modality),
    # over the widest window any modality searches; each search below takes its part of it.
    widest = max(_WINDOW.values())
    owned = []  # per detection: (first row, first column, (h, w) bool)
    for i in range(n):
        r0, c0 = max(rows[i] - widest, 0), max(cols[i] - widest, 0)
        r1, c1 = min(rows[i] + widest + 1, H), min(cols[i] + widest + 1, W)
        owned.append((r0, c0, _own_cells(detections.centers[:, :2], i, r0, r1, c0, c1, grid, cell)))

    def own(i: int, reach: int) -> tuple[int, int, int, int, np.ndarray]:
        """Detection ``i``'s window of ``reach`` cells around its centre cell and its own cells there."""
        R0, C0, mask = owned[i]
        r0, r1 = max(rows[i] - reach, 0), min(rows[i] + reach + 1, H)
        c0, c1 = max(cols[i] - reach, 0), min(cols[i] + reach + 1, W)
        return r0, r1, c0, c1, mask[r0 - R0:r1 - R0, c0 - C0:c1 - C0]

    for m, modality in enumerate(MODALITIES):
        if not bool(outputs.present[m]):
            continue
        heat = torch.sigmoid(outputs.aux_heatmaps[modality].detach().float().cpu())[0]  # (K, H, W)
        near = F.max_pool2d(heat[None], 3, stride=1, padding=1)[0].numpy()  # the best of the 3x3 cells around
        heat = heat.numpy()
        scores[:, m] = near[labels, rows, cols]
        for i in range(n):
            # What the modality calls the object: its best class over the 3x3 cells around the centre
            # that are this object's (a car's peak beside a cyclist is the car's, not the cyclist's class).
            r0, r1, c0, c1, mine = own(i, 1)
            mine = mine.copy()
            mine[rows[i] - r0, cols[i] - c0] = True  # the centre cell is always its own
            per_class = np.where(mine, heat[:, r0:r1, c0:c1], -1.0).reshape(K, -1).max(axis=1)  # (K,)
            best_class[i, m] = int(per_class.argmax())
            best_score[i, m] = float(per_class.max())
            r0, r1, c0, c1, mine = own(i, _WINDOW[modality])
            window = np.where(mine, heat[labels[i], r0:r1, c0:c1], -1.0)
            r, c = np.unravel_index(int(window.argmax()), window.shape)
            r, c = r + r0, c + c0
            peak[i, m] = heat[labels[i], r, c]
            rr, cc = slice(max(r - 1, 0), min(r + 2, H)), slice(max(c - 1, 0), min(c + 2, W))
            weights = heat[labels[i], rr, cc]
            if weights.sum() <= 0:
                continue
            ys, xs = np.mgrid[rr, cc]
            x = grid.x_range[0] + (np.sum(weights * (xs + 0.5)) / weights.sum()) * cell
            y = grid.y_range[0] + (np.sum(weights * (ys + 0.5)) / weights.sum()) * cell
            offset[i, m] = (x - detections.centers[i, 0], y - detections.centers[i, 1])
    return scores, best_class, best_score, offset, peak


def _box_corners(detections: Detections3D) -> np.ndarray:
    """(N, 8, 3) corners in the detections' frame."""
    l, w, h = detections.sizes.T / 2
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)  # (8, 3)
    local = signs[None] * np.stack([l, w, h], axis=1)[:, None, :]  # (N, 8, 3)
    c, s = np.cos(detections.yaws)[:, None], np.sin(detections.yaws)[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], axis=-1) + detections.centers[:, None, :]


def _covered(boxes: np.ndarray, order: np.ndarray, hides: np.ndarray, threshold: float) -> np.ndarray:
    """Which intervals/rectangles are hidden: ``boxes`` (N, 2 or 4) lo/hi, nearest first in ``order``.

    A box is hidden when the union of the nearer hiding boxes covers ``threshold`` of it, measured on a
    small raster of the box (exact enough to tell 'behind a bus' from 'beside it').
    """
    n = len(boxes)
    hidden = np.zeros(n, bool)
    dims = boxes.shape[1] // 2
    for rank, i in enumerate(order):
        nearer = [j for j in order[:rank] if hides[j]]
        if not nearer:
            continue
        lo, hi = boxes[i, :dims], boxes[i, dims:]
        if np.any(hi <= lo):
            continue
        samples = np.stack(np.meshgrid(*[np.linspace(a, b, 9) for a, b in zip(lo, hi)], indexing='ij'), -1)
        samples = samples.reshape(-1, dims)
        inside = np.zeros(len(samples), bool)
        for j in nearer:
            inside |= np.all((samples >= boxes[j, :dims]) & (samples <= boxes[j, dims:]), axis=1)
        hidden[i] = inside.mean() >= threshold
    return hidden


def _camera_view(frame: Frame, detections: Detections3D, config: ConsistencySection,
                 blind_cameras: frozenset[str], dark_cameras: frozenset[str],
                 degraded_cameras: frozenset[str] = frozenset(),
                 occluded: Mapping[str, tuple[float, float, float, float]] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(in some camera's view, every camera whose view it is in is blind, in a degraded camera's view);
    dark cameras see nothing. A camera with an ``occluded`` region (x0, y0, x1, y1, fractions of the
    image) is blind to what lies mostly behind it, and in trouble only for what it touches."""
    occluded = occluded or {}
    corners = _box_corners(detections)  # (N, 8, 3)
    n = len(detections)
    seen = np.zeros(n, bool)
    seen_by_sighted = np.zeros(n, bool)
    seen_by_degraded = np.zeros(n, bool)
    distance = np.hypot(detections.centers[:, 0], detections.centers[:, 1])
    big = np.array([label in _BIG_CLASSES for label in detections.labels])
    small = np.array([label in _SMALL_CLASSES for label in detections.labels])
    camera_range = np.where(small, config.camera_small_range_m, config.camera_range_m)
    for view in frame.cameras:
        if view.name in dark_cameras and view.name not in blind_cameras:
            continue  # night: an unlit object is no camera's to see
        to_camera = view.camera_to_base.inverse()
        p = to_camera.apply(corners.reshape(-1, 3)).reshape(n, 8, 3)  # optical frame, z forward
        K = view.intrinsics.p[:, :3]
        front = p[..., 2] > 0.5
        depth = np.where(front, p[..., 2], 1.0)
        u = K[0, 0] * p[..., 0] / depth + K[0, 2]
        v = K[1, 1] * p[..., 1] / depth + K[1, 2]
        width, height = view.intrinsics.width, view.intrinsics.height
        # The image rectangle of the corners in front of the camera (corners behind it are left out:
        # a box the camera is inside of is not one it sees as an object).
        rect = np.stack([np.where(front, u, np.inf).min(1), np.where(front, v, np.inf).min(1),
                         np.where(front, u, -np.inf).max(1), np.where(front, v, -np.inf).max(1)], axis=1)  # (N, 4)
        rect = np.clip(rect, [0, 0, 0, 0], [width, height, width, height])
        visible_area = np.maximum(rect[:, 2] - rect[:, 0], 0) * np.maximum(rect[:, 3] - rect[:, 1], 0)
        centre_in_front = to_camera.apply(detections.centers)[:, 2] > 0.5
        in_image = centre_in_front & (visible_area > 4.0)
        behind_patch = touches_patch = np.zeros(n, bool)
        if view.name in occluded:
            patch = np.asarray(occluded[view.name], float) * [width, height, width, height]
            overlap = np.maximum(np.minimum(rect[:, 2], patch[2]) - np.maximum(rect[:, 0], patch[0]), 0) * \
                np.maximum(np.minimum(rect[:, 3], patch[3]) - np.maximum(rect[:, 1], patch[1]), 0)
            share = overlap / np.maximum(visible_area, 1e-9)
            behind_patch, touches_patch = share >= 0.5, share >= 0.25
        if view.name in degraded_cameras:
            # Imaged by a camera in trouble, whether it could resolve it or not (an occluded one: near its patch).
            seen_by_degraded |= in_image & touches_patch if view.name in occluded else in_image
        candidate = in_image & (distance <= camera_range)
        if not candidate.any():
            continue
        depth = np.linalg.norm(to_camera.apply(detections.centers), axis=1)
        order = np.argsort(np.where(candidate, depth, np.inf))
        order = order[candidate[order]]
        hidden = np.zeros(n, bool)
        hidden_c = _covered(rect[order][:, [0, 1, 2, 3]], np.arange(len(order)), big[order], config.occluded_fraction)
        hidden[order] = hidden_c
        seen |= candidate & ~hidden
        if view.name not in blind_cameras:
            seen_by_sighted |= candidate & ~hidden & ~behind_patch
    return seen, seen & ~seen_by_sighted, seen_by_degraded


def expected_lidar_returns(detections: Detections3D, config: ConsistencySection) -> np.ndarray:
    """(N,) how many returns each box should give the lidar (at the base origin) by its size at its
    range: the beams its height spans times the firings across the width it shows (its footprint's
    extent across the line of sight)."""
    distance = np.maximum(np.hypot(detections.centers[:, 0], detections.centers[:, 1]), 1e-3)
    bearing = np.arctan2(detections.centers[:, 1], detections.centers[:, 0])
    turn = detections.yaws - bearing
    length, width, height = detections.sizes.T
    across = np.abs(length * np.sin(turn)) + np.abs(width * np.cos(turn))
    beams = np.degrees(2 * np.arctan2(height / 2, distance)) / config.lidar_beam_spacing_deg
    firings = np.degrees(2 * np.arctan2(across / 2, distance)) / config.lidar_azimuth_step_deg
    return beams * firings


def _shadowed(detections: Detections3D, config: ConsistencySection) -> np.ndarray:
    """In the shadow (azimuth interval, seen from the vehicle) of nearer large objects."""
    corners = _box_corners(detections)[:, :4, :2]  # (N, 4, 2): the xy footprint (z pairs repeat)
    distance = np.hypot(detections.centers[:, 0], detections.centers[:, 1])
    azimuth = np.arctan2(corners[..., 1], corners[..., 0])  # (N, 4)
    centre_azimuth = np.arctan2(detections.centers[:, 1], detections.centers[:, 0])[:, None]
    relative = np.angle(np.exp(1j * (azimuth - centre_azimuth)))  # unwrap around each box's own bearing
    lo = centre_azimuth[:, 0] + relative.min(axis=1)
    hi = centre_azimuth[:, 0] + relative.max(axis=1)
    order = np.argsort(distance)
    big = np.array([label in _BIG_CLASSES for label in detections.labels])
    # Express every interval around one reference so nearby bearings compare (objects behind the
    # vehicle straddle +-pi: shift those by 2 pi together).
    wrap = np.where(np.abs(centre_azimuth[:, 0]) > np.pi / 2, np.where(centre_azimuth[:, 0] < 0, 2 * np.pi, 0.0), 0.0)
    intervals = np.stack([lo + wrap, hi + wrap], axis=1)
    return _covered(intervals, order, big, config.occluded_fraction)


def _doppler(frame: Frame, detections: Detections3D, inside: np.ndarray,
             config: ConsistencySection) -> tuple[np.ndarray, ...]:
    """Per detection: the median compensated radial speed of its radar returns and their mean line of
    sight, each return seen from where its radar was when it scanned it (else from its radar's mount
    now, else from the base origin);
    and per return used: its detection row, radial speed and line of sight."""
    measured = np.full(len(detections), np.nan)
    mean_los = np.zeros((len(detections), 2))
    used_rows, used_radial, used_los = [], [], []
    if frame.radar is None or not len(frame.radar):
        return measured, mean_los, np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2))
    radar = frame.radar
    origins = np.zeros((len(radar), 2))
    if frame.radar_origin is not None:  # where each scan was taken from (the vehicle moves between scans)
        origins = frame.radar_origin[:, :2].astype(np.float64)
    elif frame.radar_sensor is not None:
        for index in np.unique(frame.radar_sensor):
            name = frame.radar_sensors[index]
            if name in frame.sensor_to_base:
                origins[frame.radar_sensor == index] = frame.sensor_to_base[name].translation[:2]
    for i in range(len(detections)):
        rows = np.flatnonzero(inside == i)
        if len(rows) < config.min_doppler_returns:
            continue
        xy = radar[rows, :2].astype(np.float64) - origins[rows]
        los = xy / np.maximum(np.linalg.norm(xy, axis=1, keepdims=True), 1e-6)  # (R, 2)
        radial = np.sum(radar[rows, 3:5] * los, axis=1)  # compensated radial ground speed
        measured[i] = float(np.median(radial))
        mean = los.mean(axis=0)
        mean_los[i] = mean / max(float(np.linalg.norm(mean)), 1e-6)
        used_rows.append(np.full(len(rows), i, np.int64))
        used_radial.append(radial.astype(np.float64))
        used_los.append(los)
    if not used_rows:
        return measured, mean_los, np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2))
    return measured, mean_los, np.concatenate(used_rows), np.concatenate(used_radial), np.concatenate(used_los)


def _radar_coverage(detections: Detections3D, mounts: Mapping[str, RigidTransform],
                    config: ConsistencySection) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per radar, ((N,) bool inside its field of view, (N,) bool within its range as well)."""
    coverage = {}
    for name, mount in mounts.items():
        local = mount.inverse().apply(detections.centers)  # (N, 3) in the radar's frame, x ahead
        bearing = np.degrees(np.arctan2(local[:, 1], local[:, 0]))
        inside = np.abs(bearing) <= config.radar_hfov_deg / 2
        coverage[name] = inside, inside & (np.hypot(local[:, 0], local[:, 1]) <= config.radar_range_m)
    return coverage


def lidar_line_of_sight(frame: Frame, detections: Detections3D, config: ConsistencySection) -> np.ndarray:
    """(N,) bool: some lidar's beams reach the object. Seen from each lidar of the frame (its mount, its
    current sweep), of the directions across the object's face (``sight_bin_deg`` of azimuth by
    ``lidar_beam_spacing_deg`` of elevation, from its bottom to its top at its near face) from which a
    return came back, those with one nearer than that face (by ``sight_margin_m``) are blocked: the
    beam stopped on something in between, detected or not (a wall, a parked truck beside the vehicle
    that hides the cyclist behind it). An object with ``occluded_fraction`` of them blocked is hidden
    from that lidar; one no return came back from around is not. A lidar whose mount the frame lacks
    (``sensor_to_base``), or a frame without lidar, hides nothing."""
    n = len(detections)
    seen = np.zeros(n, bool)
    if frame.lidar is None or not len(frame.lidar) or frame.lidar_sensor is None:
        return ~seen
    age = frame.lidar[:, 4]
    current = age <= age.min() + 1e-3
    corners = _box_corners(detections)  # (N, 8, 3)
    bottom = detections.centers[:, 2] - detections.sizes[:, 2] / 2
    top = detections.centers[:, 2] + detections.sizes[:, 2] / 2
    az_step = np.radians(config.sight_bin_deg)
    el_step = np.radians(config.lidar_beam_spacing_deg)
    judged = np.zeros(n, bool)
    for k, name in enumerate(frame.lidar_sensors):
        mount = frame.sensor_to_base.get(name)
        mine = current & (frame.lidar_sensor == k)
        if mount is None or not mine.any():
            continue
        judged[:] = True
        to_lidar = mount.inverse()
        p = to_lidar.apply(frame.lidar[mine, :3].astype(np.float64))
        rho = np.hypot(p[:, 0], p[:, 1])
        azimuth = np.arctan2(p[:, 1], p[:, 0])
        elevation = np.arctan2(p[:, 2], rho)
        local = to_lidar.apply(corners.reshape(-1, 3)).reshape(n, 8, 3)
        centre = to_lidar.apply(detections.centers)
        bearing = np.arctan2(centre[:, 1], centre[:, 0])
        relative = np.angle(np.exp(1j * (np.arctan2(local[..., 1], local[..., 0]) - bearing[:, None])))
        lo, hi = bearing + relative.min(axis=1), bearing + relative.max(axis=1)
        near = np.hypot(local[..., 0], local[..., 1]).min(axis=1)
        height = centre[:, 2] - detections.centers[:, 2]  # base z -> lidar z
        for i in np.flatnonzero(~seen):
            if near[i] <= config.sight_margin_m:
                seen[i] = True
                continue
            el_lo = np.arctan2(bottom[i] + height[i], near[i])
            el_hi = np.arctan2(top[i] + height[i], near[i])
            turn = np.angle(np.exp(1j * (azimuth - bearing[i])))  # around the object's bearing
            toward = (turn >= lo[i] - bearing[i]) & (turn <= hi[i] - bearing[i]) & \
                (elevation >= el_lo) & (elevation <= el_hi)
            if not toward.any():
                seen[i] = True  # no beam came back from that way: nothing shows it hidden
                continue
            # Directions are counted where a beam came back (from it, from before it or from behind it).
            cells = ((turn[toward] - (lo[i] - bearing[i])) // az_step).astype(np.int64) * 4096 + \
                ((elevation[toward] - el_lo) // el_step).astype(np.int64)
            stopped = rho[toward] < near[i] - config.sight_margin_m
            blocked = len(np.unique(cells[stopped])) / len(np.unique(cells))
            seen[i] = blocked < config.occluded_fraction
    return seen | ~judged


def radar_line_of_sight(points: np.ndarray | None, detections: Detections3D,
                        mounts: Mapping[str, RigidTransform], config: ConsistencySection) -> np.ndarray:
    """(N,) bool: some radar holds the object in its field of view and range, and its beam reaches the
    object over what the lidar's ``points`` (base frame, current sweep) show nearer in that direction.

    Radars sit low (bumper height) and see along the road, not over it: a median barrier, a parked car
    or a kerbside wall that the lidar on the roof looks over hides what is behind it from them. Seen
    from each radar, a direction (``sight_bin_deg`` of azimuth) across the object is blocked when
    ``radar_sight_min_points`` lidar returns nearer than the object's near face (by ``sight_margin_m``)
    rise so high, seen from the radar, that a ray over them shows less than ``radar_sight_visible_m``
    of the object's height (a strip of roof over a barrier reflects too little to count on), or leaves
    the radar's beam (``radar_vfov_deg`` / 2 above its axis). Each return is raised by the lidar's
    beam gap at its range (``lidar_beam_spacing_deg``): the surface it hit may reach that much higher.
    The object is hidden from that radar when ``occluded_fraction`` of its directions are blocked.
    Without mounts, every object in range is in sight (the expectation is then the range alone)."""
    n = len(detections)
    distance = np.hypot(detections.centers[:, 0], detections.centers[:, 1])
    pedestrian = np.array([label == 'pedestrian' for label in detections.labels], bool)
    reach = np.where(pedestrian, config.radar_pedestrian_range_m, config.radar_range_m)
    if not mounts:
        return distance <= reach
    footprint = _box_corners(detections)[:, :4, :]  # (N, 4, 3): the bottom corners
    top = detections.centers[:, 2] + detections.sizes[:, 2] / 2
    upper_edge = np.tan(np.radians(config.radar_vfov_deg / 2))
    bin_rad = np.radians(config.sight_bin_deg)
    points = np.zeros((0, 3)) if points is None else np.asarray(points, np.float64)[:, :3]
    # The lidar samples a surface's height at its beams only: what it hit may reach one beam gap higher.
    beam_gap = np.hypot(points[:, 0], points[:, 1]) * np.tan(np.radians(config.lidar_beam_spacing_deg))
    seen = np.zeros(n, bool)
    for mount in mounts.values():
        to_radar = mount.inverse()
        local = to_radar.apply(detections.centers)
        bearing = np.arctan2(local[:, 1], local[:, 0])
        candidates = (np.abs(np.degrees(bearing)) <= config.radar_hfov_deg / 2) & \
            (np.hypot(local[:, 0], local[:, 1]) <= reach) & ~seen
        if not candidates.any():
            continue
        corners = to_radar.apply(footprint.reshape(-1, 3)).reshape(n, 4, 3)
        near = np.hypot(corners[..., 0], corners[..., 1]).min(axis=1) - config.sight_margin_m
        relative = np.angle(np.exp(1j * (np.arctan2(corners[..., 1], corners[..., 0]) - bearing[:, None])))
        first = np.floor((bearing + relative.min(axis=1)) / bin_rad).astype(np.int64)
        last = np.floor((bearing + relative.max(axis=1)) / bin_rad).astype(np.int64)
        top_local = top - detections.centers[:, 2] + local[:, 2]  # the object's top, radar frame
        p = to_radar.apply(points) if len(points) else np.zeros((0, 3))
        r = np.hypot(p[:, 0], p[:, 1])
        keep = (r > 0.5) & (r < near[candidates].max())
        p, r = p[keep], r[keep]
        rise = (p[:, 2] + beam_gap[keep]) / r  # the slope from the radar up (or down) to each surface
        azimuth_bin = np.floor(np.arctan2(p[:, 1], p[:, 0]) / bin_rad).astype(np.int64)
        for i in np.flatnonzero(candidates):
            if near[i] <= 0.5:
                seen[i] = True  # touching the radar: nothing stands between
                continue
            # A ray over a return this steep or steeper passes the object's near face less than
            # radar_sight_visible_m below its top (or leaves the beam): too little of it to reflect.
            steep = min(upper_edge, (top_local[i] - config.radar_sight_visible_m) / near[i])
            width = last[i] - first[i] + 1
            mine = (r < near[i]) & (azimuth_bin >= first[i]) & (azimuth_bin <= last[i]) & (rise >= steep)
            blockers = np.bincount(azimuth_bin[mine] - first[i], minlength=width)
            blocked = float(np.mean(blockers >= config.radar_sight_min_points))
            seen[i] = blocked < config.occluded_fraction
    return seen


def _radar_blind(n: int, coverage: Mapping[str, tuple[np.ndarray, np.ndarray]], blind: frozenset[str]) -> np.ndarray:
    """Objects inside the field of view of some radar, and of blind radars only."""
    covered = np.zeros(n, bool)
    covered_by_sighted = np.zeros(n, bool)
    if not blind:
        return covered
    for name, (_, inside) in coverage.items():
        covered |= inside
        if name not in blind:
            covered_by_sighted |= inside
    return covered & ~covered_by_sighted


def _lidar_blind(detections: Detections3D, lost: Mapping[str, tuple[RigidTransform, float, float]]) -> np.ndarray:
    """Objects whose centre lies in the lost azimuth arc of every lidar that has lost one."""
    if not lost:
        return np.zeros(len(detections), bool)
    blind = np.ones(len(detections), bool)
    for mount, start, end in lost.values():
        local = mount.inverse().apply(detections.centers)
        azimuth = np.degrees(np.arctan2(local[:, 1], local[:, 0]))
        blind &= np.mod(azimuth - start, 360.0) <= np.mod(end - start, 360.0)
    return blind


def detection_evidence(frame: Frame, detections: Detections3D, outputs: NetOutputs, grid: GridConfig,
                       head: HeadConfig, config: ConsistencySection,
                       blind_cameras: Iterable[str] = (), dark_cameras: Iterable[str] = (),
                       blind_radars: Iterable[str] = (),
                       radar_mounts: Mapping[str, RigidTransform] | None = None,
                       lost_lidar_sectors: Mapping[str, tuple[RigidTransform, float, float]] | None = None,
                       degraded_sensors: Mapping[str, str] | None = None,
                       occluded_regions: Mapping[str, tuple[float, float, float, float]] | None = None,
                       ) -> DetectionEvidence:
    """Each modality's evidence for each of ``detections`` (in the frame's base frame).

    ``blind_cameras``: cameras whose health says they see nothing (black, frozen, failed): an object
    only they should see has no camera support, whatever the camera head makes of the other cameras.
    ``dark_cameras``: cameras whose image is too dark to see by (night): not expected to see anything.
    ``blind_radars`` (silent or failed by health) with every radar's ``radar_mounts`` (radar -> base; a
    silent radar's last known): an object only blind radars cover has no radar support.
    ``lost_lidar_sectors``: per lidar health calls sector_loss, (its mount, lost arc start, end in
    degrees): an object in the arc has no lidar support (older sweeps still show it for a while).
    ``degraded_sensors`` (sensor -> modality): sensors whose health or calibration is not ok; an object in one's view
    (a camera's image, anywhere around the lidar, a radar's field of view) has that modality's evidence from
    a sensor in trouble (``degraded``).
    ``occluded_regions`` (camera -> x0, y0, x1, y1, fractions of its image): a camera whose only trouble
    is a patch on its lens sees nothing mostly behind the patch (``camera_blind`` there when no other
    camera sees it) and is in trouble only for objects the patch covers a quarter of or more.
    """
    present = tuple(bool(p) for p in outputs.present)
    n = len(detections)
    if n == 0:
        return DetectionEvidence.empty(present)  # type: ignore[arg-type]
    boxes = np.column_stack([detections.centers, detections.sizes, detections.yaws])  # (N, 7)
    lidar_points = np.zeros(n, np.int32)
    current = None
    if frame.lidar is not None and len(frame.lidar):
        age = frame.lidar[:, 4]
        current = frame.lidar[age <= age.min() + 1e-3, :3]
        grown = boxes.copy()
        grown[:, 3:5] += 2 * config.lidar_margin_m
        _, lidar_points = points_in_boxes(np.ascontiguousarray(current), grown)
    radar_points = np.zeros(n, np.int32)
    radar_box = np.full(0, -1, np.int32)
    if frame.radar is not None and len(frame.radar):
        grown = boxes.copy()
        grown[:, 3:5] += 2 * config.radar_margin_m
        grown[:, 5] += 2.0  # radar elevation is coarse: any height near the box
        # A scan is up to a radar period older than the frame: a fast object has moved on since its
        # returns were taken. Lengthen the box by that travel (each way: heading is not direction).
        speed = np.hypot(*np.nan_to_num(detections.velocities).T)
        grown[:, 3] += 2 * speed * RADAR_LAG_S
        radar_box, radar_points = points_in_boxes(np.ascontiguousarray(frame.radar[:, :3]), grown)
    scores, best_class, best_score, offset, peak = _head_evidence(outputs, detections, grid, head)
    distance = np.hypot(detections.centers[:, 0], detections.centers[:, 1])
    shadowed = _shadowed(detections, config)
    degraded_sensors = degraded_sensors or {}
    in_view, blind, camera_degraded = _camera_view(
        frame, detections, config, frozenset(blind_cameras), frozenset(dark_cameras),
        frozenset(name for name, m in degraded_sensors.items() if m == 'camera'), occluded_regions)
    coverage = _radar_coverage(detections, radar_mounts or {}, config)
    radar_blind = _radar_blind(n, coverage, frozenset(blind_radars))
    # In trouble: every object in the sensor's field of view, however far (a lidar sees all around).
    degraded = np.zeros((n, 3), bool)
    degraded[:, 0] = camera_degraded
    degraded[:, 1] = any(m == 'lidar' for m in degraded_sensors.values())
    for name, (in_radar_view, _) in coverage.items():
        if degraded_sensors.get(name) == 'radar':
            degraded[:, 2] |= in_radar_view
    return DetectionEvidence(
        scores, best_class, best_score, offset, peak, lidar_points.astype(np.int32), radar_points.astype(np.int32),
        *_doppler(frame, detections, radar_box, config), in_view, blind, radar_blind,
        _lidar_blind(detections, lost_lidar_sectors or {}), degraded,
        (distance <= config.lidar_range_m) & (expected_lidar_returns(detections, config) >= config.lidar_expected_points)
        & ~shadowed & lidar_line_of_sight(frame, detections, config),
        radar_line_of_sight(current, detections, radar_mounts or {}, config) & ~shadowed, present)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Flags


def disagreement_flags(evidence: DetectionEvidence, detections: Detections3D, classes: tuple[str, ...],
                       config: ConsistencySection, velocities: np.ndarray | None = None,
                       unproven: np.ndarray | None = None, support: np.ndarray | None = None,
                       ) -> tuple[tuple[tuple[str, float], ...], ...]:
    """Per detection, its raw (single-frame) flags with scores, in a fixed order (module docstring).

    ``velocities`` (N, 2), NaN where unknown: what the radar's doppler is checked against (the
    tracker's, from the object's motion over frames); default the detections' own.
    ``unproven`` (N, 3) bool: a healthy modality that has not yet seen the object (over its track):
    its absence is no disagreement (a radar below a median barrier never sees the far carriageway),
    unless health says the sensor that should see it is blind. ``only_<m>`` still counts on geometry:
    an object one modality alone has ever seen is what that flag is for.
    ``support``: ``evidence.supports(config)`` where the caller has it already.
    """
    support = evidence.supports(config) if support is None else support
    expected = evidence.expected()
    missing = expected & ~support
    if unproven is not None:
        health_blind = np.stack([evidence.camera_blind, evidence.lidar_blind, evidence.radar_blind], axis=1)
        missing &= ~unproven | health_blind
    velocities = detections.velocities if velocities is None else velocities
    residuals = evidence.doppler_residual(velocities)
    tolerances = config.velocity_tolerance_mps + 0.25 * np.hypot(*np.nan_to_num(velocities).T)
    agreement = evidence.doppler_agreement(np.nan_to_num(velocities), tolerances)
    out = []
    for i in range(len(evidence)):
        flags: list[tuple[str, float]] = []
        for k, m in enumerate(MODALITIES):
            if missing[i, k]:
                head = 0.0 if np.isnan(evidence.head[i, k]) else evidence.head[i, k]
                flags.append((f'missing_in_{m}', round(1.0 + (config.support_score - head) / config.support_score, 3)))
        for k, m in enumerate(MODALITIES):
            if evidence.degraded[i, k] and evidence.present[k]:
                flags.append((f'degraded:{m}', 1.0))
        backing = [k for k in range(3) if support[i, k]]
        if len(backing) == 1 and expected[i].sum() >= 2:
            k = backing[0]
            flags.append((f'only_{MODALITIES[k]}', round(1.0 + float(np.nan_to_num(evidence.head[i, k])), 3)))
        residual = residuals[i]
        # Conflict when too few of the object's returns move as the object does: returns of clutter
        # beside a fast car (a guard rail) pull the median, but do not hide the car's own returns.
        if np.isfinite(residual) and support[i, 2] and agreement[i] < config.doppler_agreement:
            flags.append(('velocity_conflict:radar', round(max(abs(residual) / tolerances[i], 1.0), 3)))
        fused_class = classes.index(detections.labels[i])
        for k, m in enumerate(MODALITIES):
            best = evidence.head_class[i, k]
            if best < 0 or best == fused_class or not support[i, k] or (m == 'radar' and not config.radar_class_conflicts):
                continue
            lead = evidence.head_class_score[i, k] - np.nan_to_num(evidence.head[i, k])
            if evidence.head_class_score[i, k] >= config.min_class_score and lead >= config.class_margin:
                flags.append((f'class_conflict:{m}', round(lead / config.class_margin, 3)))
        for k, m in enumerate(MODALITIES):
            shift = evidence.offset[i, k]
            if not np.isfinite(shift).all() or np.nan_to_num(evidence.peak[i, k]) < config.min_position_score:
                continue
            if m == 'camera':  # only across the line of sight: a camera's depth is coarse
                los = detections.centers[i, :2] / max(float(np.hypot(*detections.centers[i, :2])), 1e-6)
                shift = shift - los * float(shift @ los)
            distance = float(np.hypot(*shift))
            base = config.radar_position_tolerance_m if m == 'radar' else config.position_tolerance_m
            tolerance = max(base, 0.5 * float(detections.sizes[i, 0]))  # long vehicles
            if distance > tolerance:
                flags.append((f'position_conflict:{m}', round(distance / tolerance, 3)))
        out.append(tuple(flags))
    return tuple(out)
