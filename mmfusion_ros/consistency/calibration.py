"""Calibration health, estimated online: camera extrinsic drift and sensor clock offsets.

Two estimators, one object per sensor, fed every frame. Each answers with a record holding an
estimate, how sure it is, a state (``ok``, ``degraded``, ``failed``) and ``status()``, the
``DiagnosticStatus`` the node publishes. Neither changes the calibration: they report.

Extrinsic drift of a camera (``CameraDriftEstimator``): edge alignment after Levinson and Thrun,
"Automatic Online Calibration of Cameras and Lasers" (RSS 2013). Depth discontinuities of the lidar,
projected with the nominal calibration, should land on edges of the image; when the camera has
turned, they land beside them, and the rotation that puts them back is the drift.

1. Image (``edge_image``): grey, Gaussian blur (sigma 1 px), Sobel magnitude over its 95th
   percentile, clipped to 1 (``E``); then L&T's "inverse distance transform", which widens every
   edge into a basin the search feels from a few pixels away: ``D = alpha E + (1 - alpha) max_xy E_xy
   decay^d``, ``d`` the L1 pixel distance (four linear sweeps; L&T use the Chebyshev distance).
2. Lidar (``lidar_edge_samples``): the current sweep in a virtual camera at the lidar's origin with
   the camera's orientation, z-buffered (``geometry.projection``). Seen from the lidar a ring stays a
   chain of neighbours; seen from the camera, parallax moves the far side of every edge (the part of
   a ring beyond a car rises by pixels, background beside a pole slides behind it) exactly where the
   edges are. Along each image axis a return ends a surface when its neighbour on one side continues
   it (depth within ``drift_min_discontinuity``), the one on the other side is that much farther (or
   missing: sky), and it stands off the affine inverse-depth line through both (which planes, such as
   the ground, follow). The outline lies somewhere in the gap to the next ray: the sample is the
   gap's middle, half the inner spacing beyond the return, at its depth, as a ray of the real camera;
   weight ``1 - depth / farther depth``. A return's own position would sit inside the object by half
   a gap: half a ring, 3 px, a 0.6 degree pitch. Top outlines count only when both sensors look at
   them from the same side (a roof between camera and lidar height ends, for the lidar, at its far
   edge, for the camera at its near one).
3. Search: the drift is a rotation about the camera centre, so a sample's pixel under a hypothesis
   depends only on its ray. Every rotation of a fixed grid about the camera *body* axes (roll about x
   forward, pitch about y left, yaw about z up, as the simulator's ``extrinsic_drift`` fault and its
   ``nominal @ error`` convention; +-``drift_search_deg`` in yaw and pitch in ``drift_step_deg``,
   +-``drift_roll_search_deg`` in roll in ``drift_roll_step_deg``: by default roll is not searched,
   it moves the image least) is scored as the weighted mean of ``D`` at the rotated samples
   (``alignment_scores``; bilinear, pixel centres at integer coordinates as the camera matrix is
   calibrated and the simulator renders). A sample reads ``D`` max-filtered over its gap
   (``gap_images``): it says the outline is somewhere in the gap, not where, so one horizontal edge
   gives a plateau as wide as a ring gap, and edges the rings cut at other heights (other objects,
   later frames) narrow it down.
4. Window: the per-frame score surfaces of the last ``drift_window_frames`` scored frames are
   averaged; the argmax, refined by a parabola through its neighbours on each axis, is the estimate
   (the coarse-to-fine step: sub-grid resolution without a finer grid). ``confidence``: the paired t
   statistic of the per-frame scores of that rotation against those of the nominal (how many
   standard errors better it is); ``nominal_ratio``: the windowed score of the nominal over the best
   (L&T's test: 1 when the nominal is the peak).
5. State, from the axes in ``drift_judged_axes`` (default yaw; the others are estimated and
   reported): ``ok`` while the nominal is inside the confidence region (``confidence`` below
   ``drift_confidence_sigma``) or the judged part of the estimate is below ``drift_degraded_deg``;
   ``degraded`` from ``drift_degraded_deg``, ``failed`` from ``drift_failed_deg``. A peak on the
   grid's edge, on any searched axis, is unresolved (``ok``, said in the message): on clean drives
   such edge peaks come from scenes whose edges pull one way, and a drift beyond the search range
   can not be told from them. Before ``drift_min_frames`` scored frames, ``ok`` with 'insufficient
   data'. A camera slower than the lidar (12 Hz in 20 Hz frames) repeats its image: a repeat is
   skipped, so the window holds distinct images and the t statistic does not count one image twice.

Why these defaults (measured on the fault benchmark's simulated clips, 10 of each: 1 degree of yaw
on cam_front from 1.0 s in 6 s clips and from 0.8 s in 2 s clips, and the same scenes clean; the
rules were compared on cached per-image score surfaces of every camera, then the chosen one run
through the board): the former rule (roll searched, every axis judged, a window of 10 images at 4
sigma, one camera every second frame) found the drift in 3 of 10 long clips, 59 frames after it
began, and in none of the short ones, and called drift on clean clips (roll and pitch estimates of
1.5-2 degrees, most at the grid's edge). Now: found in 10 of 10 long clips (25 frames) and 7 of 10
short ones (18 frames, within the 24-frame fault); drift called on 4 of 10 long clean clips (0.3 % of
the camera-frames, side and back cameras) and 1 of 10 short ones (0.1 %). Every camera every frame
finds every drift in 11-13 frames, but calls drift on 8 of 10 clean clips: consecutive images of one
camera are not independent, so a window of images taken closer together overstates its confidence.

Cost per camera and frame (400x225, 33k points, one core of a loaded 2-core machine): edge image
1.5 ms, lidar edges 2 ms, the grid (17 x 17 = 289 rotations x at most ``drift_max_edge_points`` = 400
samples, about 8 ns each) under 1 ms (5 times that with roll searched in 1 degree steps); about 4 ms
in all, 8 ms a frame for two cameras. The grid kernel runs its rotations in parallel where cores are
free. Frames with fewer than ``drift_min_edge_points`` samples, or a blank image, are skipped and
leave the window as it was.

Known limits. Roll is the weak axis: it moves the image least (a degree of roll moves pixels 0-3.5
px, a degree of yaw 5 px), and on simulated urban clips with the calibration intact a long outline
the image does not show (a roof against a same-coloured building behind it, beyond the lidar's
range) pulled the roll estimate up to 0.9 degrees over a few images; it is not searched by default.
Pitch is limited by the rings: a 32-beam lidar places a horizontal outline only within a 1.3 degree
gap, and over a window of 6 images clean estimates reach 1.5-2 degrees; it is estimated, not
judged, by default. Yaw on side and back cameras is the weakest of the judged: on 5 of 20 clean
clips one of them read 1.1-1.8 degrees at 8-12 sigma for 2-15 frames (things that move across its
view between the lidar's firing and the image). Not seen at all: a translation drift (10 cm reads
as about 0.3 degrees at 20 m, in a direction that depends on the scene); a drift beyond the search
range (unresolved, above); scenes without depth edges (open road), where the surface is flat and
``confidence`` stays low. Objects that move between the camera's and the lidar's stamps are not
compensated; dropping their points (ground-truth boxes) did not make the simulated estimates better.

Clock offset of a sensor (``TimeOffsetEstimator``): see its docstring for the model and its sign.
A radar's clock offset from the standing world (``StaticOffsetEstimator``): its returns of things
that do not move against the lidar's surfaces, while the vehicle drives; see its docstring.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal

import cv2
import numpy as np
from numba import njit, prange

from ..config import CalibrationSection
from ..errors import CalibrationError
from ..frame import CameraView
from ..geometry.projection import depth_images, project_points
from ..types import CameraIntrinsics, DiagnosticStatus, RigidTransform

__all__ = [
    'OPTICAL_TO_BODY',
    'CalibrationState',
    'CameraDriftEstimator',
    'DriftEstimate',
    'EdgeSamples',
    'OffsetEstimate',
    'StaticOffsetEstimator',
    'surface_index',
    'TimeOffsetEstimator',
    'alignment_scores',
    'alignment_scores_reference',
    'edge_image',
    'edge_samples',
    'gap_images',
    'lidar_edge_samples',
    'nearest_return',
    'rotation_grid',
    'spread_edges',
    'spread_edges_reference',
]

CalibrationState = Literal['ok', 'degraded', 'failed']
_AXES = ('roll', 'pitch', 'yaw')
_LEVELS = {'ok': DiagnosticStatus.OK, 'degraded': DiagnosticStatus.WARN, 'failed': DiagnosticStatus.ERROR}

# Camera optical frame (x right, y down, z forward) -> camera body frame (x forward, y left, z up):
# p_body = OPTICAL_TO_BODY @ p_optical. The same relation as the simulator rig's BODY_TO_OPTICAL.
OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

_EDGE_BLUR_SIGMA = 1.0  # px, before the Sobel: JPEG blocks and sensor noise are not edges
_EDGE_SCALE_PERCENTILE = 95.0  # E = Sobel magnitude / this percentile, clipped to 1: most edges saturate
_NEIGHBOUR_SEARCH_DEG = (3.0, 5.0)  # how far to look for the next lidar return along u, along v; nothing: sky
_TOP_BEAM_MARGIN_DEG = 0.3  # returns this close below the sweep's highest elevation have no beam above
_SAME_SIDE_MARGIN_M = 0.05  # top outlines: both sensors at least this far above (or below) the gap
_HIDDEN_TOLERANCE = 0.02  # a point more than this (relative) behind its pixel's z-buffer depth is hidden


# ---------------------------------------------------------------------------------------------------
# Records


def _format_deg(values: np.ndarray) -> str:
    return ', '.join('nan' if not math.isfinite(v) else f'{v:+.2f}' for v in values)


@dataclass(frozen=True, eq=False)
class DriftEstimate:
    """One camera's extrinsic drift over the window, as the latest ``update`` left it."""

    sensor: str
    estimate: np.ndarray  # (3,) float64 roll, pitch, yaw, degrees, about the camera body axes; NaN before a frame
    confidence: float  # standard errors by which the estimate's score beats the nominal's (0 when it does not)
    nominal_ratio: float  # windowed score at the nominal calibration / at the estimate; NaN before any frame
    state: CalibrationState
    samples: int  # scored frames in the window
    edge_points: int  # lidar edge samples scored in the latest frame (0 when it was skipped)
    message: str

    @property
    def angle_deg(self) -> float:
        """The rotation angle of the estimate (NaN before any frame)."""
        if not np.all(np.isfinite(self.estimate)):
            return math.nan
        return _rotation_angle_deg(_body_rotation(*np.radians(self.estimate)))

    def status(self) -> DiagnosticStatus:
        return DiagnosticStatus(
            _LEVELS[self.state], f'mmfusion: calibration {self.sensor}', self.message, self.sensor,
            (('state', self.state), ('roll_pitch_yaw_deg', _format_deg(self.estimate)),
             ('angle_deg', f'{self.angle_deg:.2f}'), ('confidence_sigma', f'{self.confidence:.1f}'),
             ('nominal_ratio', f'{self.nominal_ratio:.3f}'), ('frames', str(self.samples)),
             ('edge_points', str(self.edge_points))))


@dataclass(frozen=True, eq=False)
class OffsetEstimate:
    """One sensor's clock offset over the window, as the latest ``update`` left it."""

    sensor: str
    estimate: float  # ms, message stamp minus true time; NaN while there is too little evidence
    stderr: float  # ms, standard error of the estimate; NaN with it
    state: CalibrationState
    samples: int  # moving pairs the estimate rests on (after outlier rejection)
    frames: int  # frames in the window
    message: str
    bias: np.ndarray | None = None  # (2,) or (3,) metres, the constant displacement fitted with offset_fit_bias

    def status(self) -> DiagnosticStatus:
        values = [('state', self.state), ('offset_ms', f'{self.estimate:.1f}'), ('stderr_ms', f'{self.stderr:.1f}'),
                  ('pairs', str(self.samples)), ('frames', str(self.frames))]
        if self.bias is not None:
            values.append(('bias_m', ', '.join(f'{b:+.2f}' for b in self.bias)))
        return DiagnosticStatus(_LEVELS[self.state], f'mmfusion: time offset {self.sensor}', self.message,
                                self.sensor, tuple(values))


# ---------------------------------------------------------------------------------------------------
# Rotations


def _body_rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians), the rig's and the fault file's convention."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    return math.degrees(math.acos(min(1.0, max(-1.0, (float(np.trace(rotation)) - 1.0) / 2.0))))


def _axis_values(search_deg: float, step_deg: float) -> np.ndarray:
    half = int(math.floor(search_deg / step_deg + 1e-9))
    return np.arange(-half, half + 1) * step_deg


def rotation_grid(search_deg: float, step_deg: float, roll_step_deg: float,
                  roll_search_deg: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The drift hypotheses: ``angles (R, P, Y, 3)`` roll, pitch, yaw in degrees, and per hypothesis
    ``nominal_to_true (R, P, Y, 3, 3)``, the rotation taking a ray in the nominal optical frame to the
    same ray in the true optical frame. Pitch and yaw span +-``search_deg``; roll +-``roll_search_deg``
    (default: ``search_deg``; 0: roll stays 0, R = 1).

    A drift ``E`` (body frame, ``true_body_to_base = nominal_body_to_base @ E``) is, in the optical
    frame, ``E_opt = OPTICAL_TO_BODY^T E OPTICAL_TO_BODY``, and a point at ``p`` in the nominal optical
    frame sits at ``E_opt^T p`` in the true one. The nominal (zero) rotation is the centre cell.
    """
    roll_search_deg = search_deg if roll_search_deg is None else roll_search_deg
    rolls = _axis_values(roll_search_deg, roll_step_deg) if roll_search_deg > 0 else np.zeros(1)
    pitches = _axis_values(search_deg, step_deg)
    yaws = _axis_values(search_deg, step_deg)
    angles = np.stack(np.meshgrid(rolls, pitches, yaws, indexing='ij'), axis=-1)  # (R, P, Y, 3)
    nominal_to_true = np.empty(angles.shape[:3] + (3, 3))
    for index in np.ndindex(*angles.shape[:3]):
        error_optical = OPTICAL_TO_BODY.T @ _body_rotation(*np.radians(angles[index])) @ OPTICAL_TO_BODY
        nominal_to_true[index] = error_optical.T
    return angles, nominal_to_true


# ---------------------------------------------------------------------------------------------------
# Image side: edge image with L&T's spread


def spread_edges_reference(edges: np.ndarray, decay: float) -> np.ndarray:
    """Plain numpy version of :func:`spread_edges`: ``max_xy edges[y, x] * decay^(|dx| + |dy|)``."""
    out = np.asarray(edges, np.float32).copy()  # (H, W)
    decay = np.float32(decay)
    for axis in (1, 0):
        view = np.moveaxis(out, axis, 0)  # sweeps run along `axis`
        for i in range(1, view.shape[0]):
            np.maximum(view[i], view[i - 1] * decay, out=view[i])
        for i in range(view.shape[0] - 2, -1, -1):
            np.maximum(view[i], view[i + 1] * decay, out=view[i])
    return out


@njit(cache=True, fastmath=False)
def _spread_edges_kernel(out: np.ndarray, decay: np.float32) -> None:
    """In place; the same four sweeps in the same order as the reference (rows, then columns)."""
    height, width = out.shape  # (H, W) float32
    for r in range(height):
        for c in range(1, width):
            out[r, c] = max(out[r, c], out[r, c - 1] * decay)
        for c in range(width - 2, -1, -1):
            out[r, c] = max(out[r, c], out[r, c + 1] * decay)
    for r in range(1, height):
        for c in range(width):
            out[r, c] = max(out[r, c], out[r - 1, c] * decay)
    for r in range(height - 2, -1, -1):
        for c in range(width):
            out[r, c] = max(out[r, c], out[r + 1, c] * decay)


def spread_edges(edges: np.ndarray, decay: float) -> np.ndarray:
    """Every pixel takes the strongest edge around it, discounted by ``decay`` per pixel of L1 distance.

    Two linear sweeps per axis make it exact: forward, ``h[i] = max(e[i], decay h[i - 1])`` holds the
    best edge at or before ``i``; backward on ``h`` adds those after it.
    """
    out = np.array(edges, np.float32, order='C', copy=True)
    if out.ndim != 2:
        raise CalibrationError(f'spread_edges: expected an (H, W) image, got shape {out.shape}')
    _spread_edges_kernel(out, np.float32(decay))
    return out


def edge_image(pixels: np.ndarray, alpha: float, decay: float) -> np.ndarray:
    """(H, W) float32 in [0, 1]: L&T's edge image of an RGB image (see the module docstring).

    All zeros when the image has no edges at all (a blacked-out or uniform camera).
    """
    grey = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), _EDGE_BLUR_SIGMA)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)  # (H, W)
    # The percentile on every 4th pixel: the scale only needs to be robust, not exact.
    scale = float(np.percentile(magnitude.reshape(-1)[::4], _EDGE_SCALE_PERCENTILE))
    if not scale > 1e-3:
        return np.zeros(magnitude.shape, np.float32)
    edges = np.minimum(magnitude * np.float32(1.0 / scale), np.float32(1.0))
    return np.float32(alpha) * edges + np.float32(1.0 - alpha) * spread_edges(edges, decay)


def gap_images(edges: np.ndarray, gap_u: float, gap_v: float) -> np.ndarray:
    """(2, H, W) float32: ``edges`` max-filtered over a gap along u, and over a gap along v.

    A lidar sample says that an outline lies somewhere in the gap between two returns, not where: a
    sample of a gap along v (across rings, about 1.3 degrees on a 32-beam lidar) scores the best edge
    within that gap. The score surface then has a flat top as wide as the gap for one edge, and edges
    cut by the rings at other heights narrow it down, where the gap's midpoint alone would carry a
    uniform error of half a gap into the estimate. Window: the gap rounded to an odd number of pixels.
    """
    out = np.empty((2,) + edges.shape, np.float32)
    for axis, gap in enumerate((gap_u, gap_v)):
        size = max(1, 2 * int(round((gap - 1.0) / 2.0)) + 1)
        kernel = np.ones((1, size) if axis == 0 else (size, 1), np.uint8)
        out[axis] = cv2.dilate(edges, kernel) if size > 1 else edges
    return out


# ---------------------------------------------------------------------------------------------------
# Lidar side: foreground depth discontinuities, found from the lidar's own viewpoint


def nearest_return(zbuffer: np.ndarray, row: int, col: int, step_row: int, step_col: int,
                   search: int) -> tuple[int, int, int]:
    """The nearest non-empty z-buffer pixel from (row, col) in direction (step_row, step_col).

    At distance ``d`` the search also looks ``max(1, d // 2)`` pixels to either side (nearest first),
    since a ring is a curve in the image. Returns (row, col, d); ``d`` is 0 when nothing lies within
    ``search``, and -1 when the search left the image before finding anything (nothing known).
    """
    height, width = zbuffer.shape
    for distance in range(1, search + 1):
        r0 = row + step_row * distance
        c0 = col + step_col * distance
        if not (0 <= r0 < height and 0 <= c0 < width):
            return 0, 0, -1
        band = max(1, distance // 2)
        for offset in range(2 * band + 1):
            across = (offset + 1) // 2 * (1 if offset % 2 else -1)  # 0, 1, -1, 2, -2, ...
            r = r0 + across * step_col  # across a horizontal search is a row step, and vice versa
            c = c0 + across * step_row
            if 0 <= r < height and 0 <= c < width and zbuffer[r, c] > 0.0:
                return r, c, distance
    return 0, 0, 0


def _edge_samples_function(nearest_return: Callable) -> Callable:
    """``edge_samples`` over a given ``nearest_return``: plain Python, or compiled by Numba with the
    compiled one (one definition for both, like ``geometry.projection.project_one``)."""

    def edge_samples(zbuffer: np.ndarray, uv: np.ndarray, depth: np.ndarray, below_top_beam: np.ndarray,
                     min_step: float, search_u: int, search_v: int) -> tuple:
        """Foreground edge samples of z-buffered returns (see ``lidar_edge_samples``): ``uv (S, 2)``, the
        index of the return each continues ``(S,)``, the image axis its gap runs along ``(S,)`` (0: u,
        1: v) and its weight ``(S,)``. ``below_top_beam (P,)``: a lidar beam exists above the return."""
        num_hits = uv.shape[0]  # uv: (P, 2) float32; depth: (P,) float32; zbuffer: (H, W) float32, 0 = empty
        samples = np.empty((4 * num_hits, 2), np.float64)  # at most one per side and axis
        returns = np.empty(4 * num_hits, np.int64)
        axes = np.empty(4 * num_hits, np.int64)
        weights = np.empty(4 * num_hits, np.float64)
        count = 0
        for k in range(num_hits):
            row = int(uv[k, 1])
            col = int(uv[k, 0])
            z = float(depth[k])
            if zbuffer[row, col] < z * (1.0 - _HIDDEN_TOLERANCE):
                continue  # another return is nearer in this pixel
            for axis in range(2):  # 0: along u (a ring), 1: along v (across rings)
                search = search_u if axis == 0 else search_v
                ra, ca, da = nearest_return(zbuffer, row, col, -axis, axis - 1, search)  # left, or up
                rb, cb, db = nearest_return(zbuffer, row, col, axis, 1 - axis, search)  # right, or down
                # Nothing within the search: open sky (or beyond the lidar's range) along a ring, and
                # upward too where a beam above this one exists; anything else is unknown.
                sky_a = da == 0 and (axis == 0 or below_top_beam[k])
                sky_b = db == 0 and axis == 0
                inverse_a = 1.0 / float(zbuffer[ra, ca]) if da > 0 else 0.0
                inverse_b = 1.0 / float(zbuffer[rb, cb]) if db > 0 else 0.0
                if da > 0 and db > 0:
                    if 1.0 - z * (inverse_a * db + inverse_b * da) / (da + db) < 0.5 * min_step:
                        continue  # on the affine inverse-depth line of its neighbours: a plane (ground, wall)
                elif not ((sky_a and db > 0) or (sky_b and da > 0)):
                    continue
                for outer in range(2):  # the side the surface ends towards
                    if outer == 0:
                        found_out, inverse_out = da > 0 or sky_a, inverse_a
                        found_in, inverse_in, r_in, c_in = db > 0, inverse_b, rb, cb
                    else:
                        found_out, inverse_out = db > 0 or sky_b, inverse_b
                        found_in, inverse_in, r_in, c_in = da > 0, inverse_a, ra, ca
                    if not (found_out and found_in):
                        continue
                    step = 1.0 - z * inverse_out
                    if step >= min_step and abs(1.0 - z * inverse_in) < min_step:
                        # Half the spacing to the inner neighbour (its pixel's centre), continued outward.
                        samples[count, 0] = uv[k, 0] + 0.5 * (uv[k, 0] - (c_in + 0.5))
                        samples[count, 1] = uv[k, 1] + 0.5 * (uv[k, 1] - (r_in + 0.5))
                        returns[count] = k
                        axes[count] = axis
                        weights[count] = step
                        count += 1
        return samples[:count], returns[:count], axes[:count], weights[:count]

    return edge_samples


edge_samples = _edge_samples_function(nearest_return)  # plain Python: the reference of the kernel below
_edge_samples_kernel = njit(cache=True, fastmath=False)(
    _edge_samples_function(njit(cache=True, fastmath=False)(nearest_return)))


@dataclass(frozen=True, eq=False)
class EdgeSamples:
    """Where the lidar says object outlines are, as rays of one camera (nominal calibration)."""

    rays: np.ndarray  # (S, 3) float64 (x, y, 1) in the camera's optical frame
    weights: np.ndarray  # (S,) float64 in (0, 1]: the relative depth step
    axes: np.ndarray  # (S,) int64 the image axis the gap runs along: 0 u (within a ring), 1 v (across rings)
    gaps: np.ndarray  # (S,) float64 pixels: the gap between the returns the outline lies in

    def __len__(self) -> int:
        return len(self.weights)

    def take(self, index: np.ndarray) -> EdgeSamples:
        return EdgeSamples(self.rays[index], self.weights[index], self.axes[index], self.gaps[index])

    @classmethod
    def empty(cls) -> EdgeSamples:
        return cls(np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0))


def lidar_edge_samples(points_base: np.ndarray, camera_to_base: RigidTransform, lidar_origin: np.ndarray,
                       intrinsics: CameraIntrinsics, min_step: float) -> EdgeSamples:
    """Foreground depth-edge samples of a lidar sweep seen by one camera.

    The discontinuities are found in the z-buffer of a *virtual* pinhole camera at ``lidar_origin``
    (base frame) with the real camera's orientation and camera matrix: from there the returns of a
    ring stay neighbours in the image, and no return hides behind another. From the real camera, a
    few decimetres away, the far side of every edge slides by parallax (the part of a ring beyond a car
    moves up by several pixels, the background just beside a pole moves behind it), which breaks
    neighbourhoods exactly at the edges. Along each image axis, a return is an edge when its nearest
    neighbour on one side continues its surface (depth within ``min_step`` of its own) and the one on
    the other side is at least ``min_step`` farther (relative). The object's outline lies somewhere in
    the gap to the next ray, on average half a ring (or azimuth) spacing beyond the return: the sample
    is put there, at the return's depth, and turned into a ray of the real camera. Weight: the step,
    ``1 - depth / farther depth``. ``points_base``: (N, 3) float32.
    """
    camera_matrix = intrinsics.k
    rotation = camera_to_base.rotation
    virtual_to_base = RigidTransform(rotation, np.asarray(lidar_origin, np.float64))
    size = np.array([[intrinsics.width, intrinsics.height]])
    hits = project_points(points_base, virtual_to_base.inverse().matrix[None], camera_matrix[None],
                          np.zeros((1, 5)), size)
    if len(hits.depth) == 0:
        return EdgeSamples.empty()
    zbuffer = depth_images(hits, size, 1)[0]  # (H, W) nearest depth, 0 where no return lands
    # Elevation from the lidar: nothing above a return of the top beam says nothing about the sky.
    relative = points_base - virtual_to_base.translation.astype(np.float32)  # (N, 3)
    with np.errstate(divide='ignore', invalid='ignore'):
        slope = relative[:, 2] / np.sqrt(relative[:, 0] ** 2 + relative[:, 1] ** 2)  # (N,) tan(elevation)
    top = math.atan(float(np.nanmax(slope))) if np.any(np.isfinite(slope)) else math.pi / 2
    below_top_beam = slope[hits.point_index] < math.tan(top - math.radians(_TOP_BEAM_MARGIN_DEG))  # (P,)
    focal = max(camera_matrix[0, 0], camera_matrix[1, 1])
    search_u, search_v = (max(2, math.ceil(focal * math.tan(math.radians(a)))) for a in _NEIGHBOUR_SEARCH_DEG)
    uv, returns, axes, weights = _edge_samples_kernel(zbuffer, hits.uv, hits.depth, below_top_beam,
                                                      float(min_step), search_u, search_v)
    depth = hits.depth[returns].astype(np.float64)  # (S,) the sample lies at its return's depth
    sample = virtual_to_base.apply(_back_project(uv, depth, camera_matrix))  # (S, 3) base frame
    # A top (or bottom) outline is the same line for both sensors only when both look at it from the
    # same side: a car roof between the camera's and the lidar's height ends, for the lidar, at its far
    # edge and, for the camera, at its near edge. Keep such samples only when both sensors are above
    # (or both below) the whole gap between the return and the sample.
    own = virtual_to_base.apply(_back_project(hits.uv[returns].astype(np.float64), depth, camera_matrix))
    low = np.minimum(own[:, 2], sample[:, 2])
    high = np.maximum(own[:, 2], sample[:, 2])
    heights = (camera_to_base.translation[2], virtual_to_base.translation[2])
    same_side = (low > max(heights) + _SAME_SIDE_MARGIN_M) | (high < min(heights) - _SAME_SIDE_MARGIN_M)
    keep = (axes == 0) | same_side
    gaps = 2.0 * np.hypot(*(uv - hits.uv[returns]).T)  # (S,) the sample sits half a gap out
    in_camera = camera_to_base.inverse().apply(sample)  # (S, 3) optical frame
    keep &= in_camera[:, 2] > 0.5
    return EdgeSamples(in_camera[keep] / in_camera[keep, 2:3], weights[keep], axes[keep], gaps[keep])


def _back_project(uv: np.ndarray, depth: np.ndarray, camera_matrix: np.ndarray) -> np.ndarray:
    """(S, 3) points of an ideal pinhole at pixel coordinates ``uv (S, 2)`` and optical depths ``(S,)``."""
    fx, skew, cx, fy, cy = (camera_matrix[0, 0], camera_matrix[0, 1], camera_matrix[0, 2],
                            camera_matrix[1, 1], camera_matrix[1, 2])
    y = (uv[:, 1] - cy) / fy
    return np.stack([(uv[:, 0] - cx - skew * y) / fx, y, np.ones(len(uv))], axis=1) * depth[:, None]


def _lens(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Camera matrix and the five plumb_bob coefficients the scoring kernel takes."""
    if not intrinsics.is_distorted:
        return intrinsics.k, np.zeros(5)
    if intrinsics.distortion_model != 'plumb_bob':
        raise CalibrationError(f'camera {intrinsics.frame_id!r}: drift estimation handles plumb_bob '
                               f'distortion or none, not {intrinsics.distortion_model!r}')
    return intrinsics.k, intrinsics.d[:5].astype(np.float64)


def _pixels(rays: np.ndarray, camera_matrix: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """(S, 2) pixel coordinates of rays ``(S, 3)`` with positive z (plumb_bob, as the kernels)."""
    xn = rays[:, 0] / rays[:, 2]
    yn = rays[:, 1] / rays[:, 2]
    if np.any(distortion != 0.0):
        k1, k2, p1, p2, k3 = distortion
        r2 = xn * xn + yn * yn
        radial = 1.0 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xn, yn = (xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn),
                  yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn)
    return np.stack([camera_matrix[0, 0] * xn + camera_matrix[0, 1] * yn + camera_matrix[0, 2],
                     camera_matrix[1, 1] * yn + camera_matrix[1, 2]], axis=1)


# ---------------------------------------------------------------------------------------------------
# Scoring: every rotation of the grid against the edge image


def alignment_scores_reference(rays: np.ndarray, weights: np.ndarray, axes: np.ndarray, rotations: np.ndarray,
                               camera_matrix: np.ndarray, distortion: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Plain numpy version of :func:`alignment_scores`."""
    rotated = np.einsum('cij,sj->csi', rotations, rays)  # (C, S, 3)
    with np.errstate(divide='ignore', invalid='ignore'):
        xn = rotated[..., 0] / rotated[..., 2]
        yn = rotated[..., 1] / rotated[..., 2]
    k1, k2, p1, p2, k3 = distortion
    if np.any(distortion != 0.0):
        r2 = xn * xn + yn * yn
        radial = 1.0 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xn, yn = (xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn),
                  yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn)
    u = camera_matrix[0, 0] * xn + camera_matrix[0, 1] * yn + camera_matrix[0, 2]
    v = camera_matrix[1, 1] * yn + camera_matrix[1, 2]
    height, width = edges.shape[1:]
    front = rotated[..., 2] > 0
    col = np.floor(u)
    row = np.floor(v)
    inside = front & (col >= 0) & (col <= width - 2) & (row >= 0) & (row <= height - 2)
    c0 = np.where(inside, col, 0).astype(np.intp)
    r0 = np.where(inside, row, 0).astype(np.intp)
    fu = np.where(inside, u - col, 0.0)
    fv = np.where(inside, v - row, 0.0)
    e = edges.astype(np.float64)
    a = np.broadcast_to(np.asarray(axes, np.intp)[None, :], c0.shape)  # (C, S) which image each sample reads
    value = ((e[a, r0, c0] * (1 - fu) + e[a, r0, c0 + 1] * fu) * (1 - fv)
             + (e[a, r0 + 1, c0] * (1 - fu) + e[a, r0 + 1, c0 + 1] * fu) * fv)
    return np.where(inside, value, 0.0) @ weights


@njit(cache=True, fastmath=False, inline='always')
def _bilinear(flat: np.ndarray, base: np.intp, width: np.intp, u: float, v: float) -> float:
    """``flat[base:]`` read as an image of ``width`` columns, at (u, v) >= 0 inside the last row/column."""
    c0 = np.intp(u)  # floor: u >= 0
    r0 = np.intp(v)
    fu = u - c0
    fv = v - r0
    i = base + r0 * width + c0
    top = flat[i] + (flat[i + 1] - flat[i]) * fu
    bottom = flat[i + width] + (flat[i + width + 1] - flat[i + width]) * fu
    return top + (bottom - top) * fv


@njit(parallel=True, cache=True, fastmath=False, error_model='numpy')
def _alignment_scores_kernel(rays: np.ndarray, weights: np.ndarray, axes: np.ndarray, rotations: np.ndarray,
                             camera_matrix: np.ndarray, distortion: np.ndarray, edges: np.ndarray) -> np.ndarray:
    num_rays = rays.shape[0]  # rays: (S, 3) float64, weights: (S,) float64, axes: (S,) int64 in {0, 1}
    num_rotations = rotations.shape[0]  # rotations: (C, 3, 3) float64; edges: (2, H, W) float32
    height, width = edges.shape[1], edges.shape[2]
    flat = edges.reshape(-1)
    base = axes * (height * width)  # (S,) where each sample's image starts in `flat`
    fx, skew, cx, fy, cy = (camera_matrix[0, 0], camera_matrix[0, 1], camera_matrix[0, 2],
                            camera_matrix[1, 1], camera_matrix[1, 2])
    k1, k2, p1, p2, k3 = distortion[0], distortion[1], distortion[2], distortion[3], distortion[4]
    distorted = k1 != 0.0 or k2 != 0.0 or p1 != 0.0 or p2 != 0.0 or k3 != 0.0
    u_end = width - 1.0  # bilinear reads (col, col + 1): u must stay below the last column
    v_end = height - 1.0
    scores = np.zeros(num_rotations, np.float64)
    for c in prange(num_rotations):
        m = rotations[c]
        total = 0.0
        if distorted:
            for s in range(num_rays):
                x, y, w = rays[s, 0], rays[s, 1], rays[s, 2]
                qz = m[2, 0] * x + m[2, 1] * y + m[2, 2] * w
                if not qz > 0.0:
                    continue
                xn = (m[0, 0] * x + m[0, 1] * y + m[0, 2] * w) / qz
                yn = (m[1, 0] * x + m[1, 1] * y + m[1, 2] * w) / qz
                r2 = xn * xn + yn * yn
                radial = 1.0 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
                xd = xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn)
                yd = yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn
                u = fx * xd + skew * yd + cx
                v = fy * yd + cy
                if u >= 0.0 and u < u_end and v >= 0.0 and v < v_end:  # false for NaN too
                    total += _bilinear(flat, base[s], width, u, v) * weights[s]
        else:
            # The camera matrix folded into the rotation: u = (a . ray) / (m_2 . ray), v likewise.
            a0 = fx * m[0, 0] + skew * m[1, 0] + cx * m[2, 0]
            a1 = fx * m[0, 1] + skew * m[1, 1] + cx * m[2, 1]
            a2 = fx * m[0, 2] + skew * m[1, 2] + cx * m[2, 2]
            b0 = fy * m[1, 0] + cy * m[2, 0]
            b1 = fy * m[1, 1] + cy * m[2, 1]
            b2 = fy * m[1, 2] + cy * m[2, 2]
            for s in range(num_rays):
                x, y, w = rays[s, 0], rays[s, 1], rays[s, 2]
                qz = m[2, 0] * x + m[2, 1] * y + m[2, 2] * w
                if not qz > 0.0:
                    continue
                inverse = 1.0 / qz
                u = (a0 * x + a1 * y + a2 * w) * inverse
                v = (b0 * x + b1 * y + b2 * w) * inverse
                if u >= 0.0 and u < u_end and v >= 0.0 and v < v_end:
                    total += _bilinear(flat, base[s], width, u, v) * weights[s]
        scores[c] = total
    return scores


def alignment_scores(rays: np.ndarray, weights: np.ndarray, axes: np.ndarray, rotations: np.ndarray,
                     camera_matrix: np.ndarray, distortion: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(C,) float64: for each rotation ``rotations[c]`` (nominal optical ray -> true optical ray),
    ``sum_s weights[s] * edges[axes[s]](pixel of rotations[c] @ rays[s])``, bilinear with pixel centres
    at integer coordinates; a ray that leaves the image (or its last row or column) adds nothing.

    ``rays``: (S, 3) float64 in the nominal optical frame; ``axes``: (S,) which of the two images a
    sample reads (``gap_images``). ``rotations``: (C, 3, 3). ``camera_matrix``: (3, 3); ``distortion``:
    (5,) plumb_bob, applied after the rotation. ``edges``: (2, H, W) float32.
    """
    rays = np.ascontiguousarray(rays, np.float64)
    weights = np.ascontiguousarray(weights, np.float64)
    axes = np.ascontiguousarray(axes, np.int64)
    rotations = np.ascontiguousarray(rotations, np.float64)
    edges = np.ascontiguousarray(edges, np.float32)
    if rays.ndim != 2 or rays.shape[1] != 3 or weights.shape != (len(rays),) or axes.shape != (len(rays),):
        raise CalibrationError(f'alignment_scores: rays {rays.shape}, weights {weights.shape} and axes '
                               f'{axes.shape} do not match')
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or edges.ndim != 3 or edges.shape[0] != 2:
        raise CalibrationError(f'alignment_scores: expected rotations (C, 3, 3) and edges (2, H, W), got '
                               f'{rotations.shape} and {edges.shape}')
    if len(axes) and (axes.min() < 0 or axes.max() > 1):
        raise CalibrationError(f'alignment_scores: axes must be 0 or 1, got {sorted(set(axes.tolist()))}')
    return _alignment_scores_kernel(rays, weights, axes, rotations, np.asarray(camera_matrix, np.float64),
                                    np.asarray(distortion, np.float64), edges)


# ---------------------------------------------------------------------------------------------------
# Extrinsic drift of one camera


def _parabola_offset(minus: float, centre: float, plus: float) -> float:
    """Where a parabola through three equally spaced values peaks, in steps from the centre."""
    curvature = minus - 2.0 * centre + plus
    if not curvature < 0.0:
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


class CameraDriftEstimator:
    """Online extrinsic drift of one camera against the lidar, by edge alignment (module docstring).

    ``update(view, lidar_base_current)`` once per frame with the camera's view and the current sweep
    of one lidar: ``Frame.lidar`` rows with ``dt == 0``, or any (N, >= 3) array whose first columns are
    x, y, z in the base frame at the frame's stamp (where ``view.camera_to_base`` maps to). Older
    sweeps interleave their rings and blur the edges. ``lidar_origin``: that lidar's position in the
    base frame (its mount); without it the camera's own position stands in, and parallax then costs
    edges near objects.
    """

    def __init__(self, sensor: str, config: CalibrationSection = CalibrationSection(),
                 lidar_origin: np.ndarray | None = None) -> None:
        self.sensor = sensor
        self.config = config
        if lidar_origin is not None:
            lidar_origin = np.asarray(lidar_origin, np.float64)
            if lidar_origin.shape != (3,) or not np.all(np.isfinite(lidar_origin)):
                raise CalibrationError(f'CameraDriftEstimator({sensor!r}): lidar_origin must be a finite (3,) '
                                       f'position in the base frame, got {lidar_origin.tolist()}')
        self.lidar_origin = lidar_origin
        self._angles, nominal_to_true = rotation_grid(config.drift_search_deg, config.drift_step_deg,
                                                      config.drift_roll_step_deg, config.drift_roll_search_deg)
        self._judged = [_AXES.index(axis) for axis in config.drift_judged_axes]
        self._grid_shape = self._angles.shape[:3]  # (R, P, Y)
        self._rotations = np.ascontiguousarray(nominal_to_true.reshape(-1, 3, 3))  # (C, 3, 3)
        self._nominal = int(np.ravel_multi_index(tuple(n // 2 for n in self._grid_shape), self._grid_shape))
        self._surfaces: deque[np.ndarray] = deque(maxlen=config.drift_window_frames)  # each (C,)
        self._last_stamp_ns: int | None = None  # the image of the newest scored frame
        self._latest = self._estimate(edge_points=0, note='insufficient data: no frame scored yet')

    @property
    def latest(self) -> DriftEstimate:
        return self._latest

    @property
    def grid_angles(self) -> np.ndarray:
        """(R, P, Y, 3) roll, pitch, yaw in degrees of every hypothesis."""
        return self._angles

    def reset(self) -> None:
        """Forget the window (after a recalibration)."""
        self._surfaces.clear()
        self._last_stamp_ns = None
        self._latest = self._estimate(edge_points=0, note='insufficient data: reset')

    def frame_scores(self, view: CameraView, lidar_base_current: np.ndarray) -> tuple[np.ndarray | None, int, str]:
        """One frame's normalised score per hypothesis ``(C,)`` (None when the frame can not be scored,
        with the reason), and the number of lidar edge samples."""
        config = self.config
        points = np.asarray(lidar_base_current)
        if points.ndim != 2 or points.shape[1] < 3:
            raise CalibrationError(f'{self.sensor}: lidar points must be (N, >= 3) x, y, z in the base frame, '
                                   f'got shape {points.shape}')
        intrinsics = view.intrinsics
        camera_matrix, distortion = _lens(intrinsics)
        xyz = np.ascontiguousarray(points[:, :3], np.float32)
        origin = view.camera_to_base.translation if self.lidar_origin is None else self.lidar_origin
        samples = lidar_edge_samples(xyz, view.camera_to_base, origin, intrinsics, config.drift_min_discontinuity)
        # Keep samples far enough from the border that every hypothesis keeps them in the image.
        uv = _pixels(samples.rays, camera_matrix, distortion)
        margin = self._margin_px(camera_matrix)
        keep = ((uv[:, 0] >= margin) & (uv[:, 0] <= intrinsics.width - 1 - margin)
                & (uv[:, 1] >= margin) & (uv[:, 1] <= intrinsics.height - 1 - margin))
        samples = samples.take(np.flatnonzero(keep))
        if len(samples) > config.drift_max_edge_points:  # a stride keeps them spread over the image
            chosen = np.linspace(0, len(samples) - 1, config.drift_max_edge_points).round().astype(np.intp)
            samples = samples.take(chosen)
        if len(samples) < config.drift_min_edge_points:
            return None, len(samples), (f'{len(samples)} lidar edge samples in view, fewer than '
                                        f'{config.drift_min_edge_points}')
        edges = edge_image(view.pixels, config.drift_edge_alpha, config.drift_edge_decay)
        if not edges.any():
            return None, len(samples), 'the image has no edges'
        gap_u, gap_v = (float(np.median(samples.gaps[samples.axes == axis])) if np.any(samples.axes == axis) else 1.0
                        for axis in (0, 1))
        scores = alignment_scores(samples.rays, samples.weights, samples.axes, self._rotations, camera_matrix,
                                  distortion, gap_images(edges, gap_u, gap_v))
        return scores / samples.weights.sum(), len(samples), ''

    def update(self, view: CameraView, lidar_base_current: np.ndarray) -> DriftEstimate:
        if view.name != self.sensor:
            raise CalibrationError(f'CameraDriftEstimator({self.sensor!r}) was given camera {view.name!r}')
        if view.stamp_ns == self._last_stamp_ns:
            # A camera slower than the lidar repeats its image in the next frame: nothing new to
            # see, and a copy in the window would make the confidence count one image twice.
            self._latest = dataclasses.replace(self._latest, edge_points=0)
            return self._latest
        scores, edge_points, reason = self.frame_scores(view, lidar_base_current)
        if scores is None:
            self._latest = self._estimate(0, note=f'frame skipped: {reason}')
            return self._latest
        return self.add_scores(scores, view.stamp_ns, edge_points)

    def add_scores(self, scores: np.ndarray, stamp_ns: int, edge_points: int = 0) -> DriftEstimate:
        """Add one image's score per hypothesis (``frame_scores``, ``(C,)`` in ``grid_angles`` order)
        to the window and re-estimate."""
        scores = np.asarray(scores, np.float64)
        if scores.shape != (len(self._rotations),):
            raise CalibrationError(f'{self.sensor}: expected {len(self._rotations)} scores, one per hypothesis, '
                                   f'got shape {scores.shape}')
        self._surfaces.append(scores)
        self._last_stamp_ns = stamp_ns
        self._latest = self._estimate(edge_points, note='')
        return self._latest

    def _margin_px(self, camera_matrix: np.ndarray) -> float:
        # Yaw or pitch by a moves a pixel by f tan(a) at the centre, more towards the borders, roll by
        # r sin(a); 1.5 f tan(a) plus two pixels keeps every sample of a 70 degree camera in the image.
        focal = max(camera_matrix[0, 0], camera_matrix[1, 1])
        search = max(self.config.drift_search_deg, self.config.drift_roll_search_deg)
        return 1.5 * focal * math.tan(math.radians(search)) + 2.0

    def _estimate(self, edge_points: int, note: str) -> DriftEstimate:
        config = self.config
        frames = len(self._surfaces)
        if frames == 0:
            return DriftEstimate(self.sensor, np.full(3, np.nan), 0.0, math.nan, 'ok', 0, edge_points, note)
        per_frame = np.stack(self._surfaces)  # (F, C)
        mean = per_frame.mean(axis=0)  # (C,)
        best = int(np.argmax(mean))
        surface = mean.reshape(self._grid_shape)
        index = np.unravel_index(best, self._grid_shape)
        estimate = self._angles[index].copy()
        steps = (config.drift_roll_step_deg, config.drift_step_deg, config.drift_step_deg)
        at_limit = []  # axes whose peak lies on the edge of the grid
        for axis in range(3):
            i = index[axis]
            if 0 < i < self._grid_shape[axis] - 1:
                line = [surface[tuple(i + d if a == axis else index[a] for a in range(3))] for d in (-1, 0, 1)]
                estimate[axis] += _parabola_offset(*line) * steps[axis]
            elif self._grid_shape[axis] > 1:
                at_limit.append(axis)
        flat = []  # judged axes whose peak falls off too little to either side: no measurement of them
        for axis in self._judged:
            i = index[axis]
            if axis not in at_limit and self._grid_shape[axis] > 2 and surface[index] > 0:
                minus, plus = (surface[tuple(i + d if a == axis else index[a] for a in range(3))] for d in (-1, 1))
                if (2 * surface[index] - minus - plus) / surface[index] < config.drift_min_sharpness:
                    flat.append(axis)
        nominal_ratio = float(mean[self._nominal] / mean[best]) if mean[best] > 0 else math.nan
        differences = per_frame[:, best] - per_frame[:, self._nominal]  # (F,) paired
        confidence = 0.0
        if frames >= 2 and differences.mean() > 0:
            spread = differences.std(ddof=1) / math.sqrt(frames)
            confidence = float(differences.mean() / spread) if spread > 0 else math.inf
        angle = _rotation_angle_deg(_body_rotation(*np.radians(estimate)))
        judged = float(np.linalg.norm(estimate[self._judged]))  # the part of the estimate that sets the state
        text = f'roll, pitch, yaw {_format_deg(estimate)} deg ({angle:.2f} deg'
        text += f', {"/".join(_AXES[a] for a in at_limit)} at the search limit)' if at_limit else ')'
        text += f', {confidence:.1f} sigma over the nominal, {frames} frames'
        if frames < config.drift_min_frames:
            state: CalibrationState = 'ok'
            text = f'insufficient data: {frames} of {config.drift_min_frames} frames; {text}'
        elif at_limit:
            # A peak on the grid's edge is no measurement, on any axis (the judged ones are read at
            # the wrong place of the others): a drift beyond the search or, as on clean drives, a
            # scene whose edges pull one way. Reported, not judged.
            state = 'ok'
            text = f'unresolved ({"/".join(_AXES[a] for a in at_limit)} peak at the search limit): {text}'
        elif flat:
            # A ridge, not a peak: the edges pull along a line (a guard rail, a kerb running away from
            # the camera) and the estimate slides along it. Reported, not judged.
            state = 'ok'
            text = f'unresolved (flat {"/".join(_AXES[a] for a in flat)} peak): {text}'
        elif confidence < config.drift_confidence_sigma or judged < config.drift_degraded_deg:
            state = 'ok'
        elif judged < config.drift_failed_deg:
            state = 'degraded'
            text = f'drifted: {text}'
        else:
            state = 'failed'
            text = f'drifted by {config.drift_failed_deg:g} deg or more: {text}'
        if note:
            text = f'{text}; {note}'
        return DriftEstimate(self.sensor, estimate, confidence, nominal_ratio, state, frames, edge_points, text)


# ---------------------------------------------------------------------------------------------------
# Clock offset of one sensor


class TimeOffsetEstimator:
    """Online clock offset of one sensor, from where it places tracked objects.

    The model, and its sign. A sensor with offset ``o`` stamps a measurement taken at true time ``t``
    with ``s = t + o`` (``FAULTS.md``: message stamp = true time + offset). Everything downstream
    believes the stamp: the measurement is treated as the scene at time ``s``, and the ego pose at ``s``
    carries it into the base frame. Let ``v`` be the rate of change of the object's position *in the
    base frame* (over-ground velocity minus the ego's velocity at that point, ``v_obj - v_ego - w_ego x
    p``, in base axes). The object really was where it was at ``t = s - o``, so in the base frame

        observed = reference(s) - v o + noise,

    where ``reference(s)`` is where a well-timed reference (the fused or lidar track) puts the object
    at the observation's stamp ``s`` (predict the track there with its velocity when ``s`` is not the
    frame's stamp). A sensor running late (``o > 0``) puts a car driving ahead at 20 m/s ``20 o`` metres
    behind its track. A static object seen from a moving ego has ``v = -v_ego``: a late stamp puts it
    ahead by ``v_ego o``. So the caller passes, per pair, the object's velocity relative to the ego,
    never its over-ground velocity, unless the ego stands still.

    Estimate: weighted least squares over the pairs of the last ``offset_window_frames`` frames whose
    ``|v|`` exceeds ``offset_min_speed_mps`` (slow pairs carry no information about time), with the
    residual scale from the fit itself, ``o = -sum(w v . r) / sum(w |v|^2)``, ``r = observed -
    reference``; up to two refits without the pairs farther than five median errors from the fit
    (association errors). With ``offset_fit_bias`` a constant displacement is fitted with it: pairing the front
    face a radar sees with a track's centre is such a displacement, and along ``v`` it would otherwise
    read as an offset; it needs velocities of varied direction or size in the window to separate.
    State: ``ok`` (also while there is too little evidence: fewer than ``offset_min_pairs`` moving
    pairs, or a standard error above ``offset_max_stderr_ms``), ``degraded`` above ``offset_degraded_ms``,
    ``failed`` above ``offset_failed_ms``.
    """

    def __init__(self, sensor: str, config: CalibrationSection = CalibrationSection()) -> None:
        self.sensor = sensor
        self.config = config
        self._frames: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=config.offset_window_frames)
        self._latest = self._estimate()

    @property
    def latest(self) -> OffsetEstimate:
        return self._latest

    def reset(self) -> None:
        self._frames.clear()
        self._latest = self._estimate()

    def update(self, observed: np.ndarray, reference: np.ndarray, velocity: np.ndarray,
               sigma: np.ndarray | float = 1.0) -> OffsetEstimate:
        """Add one frame's matched pairs and re-estimate.

        ``observed``: (N, D) positions this sensor reports, base frame, D = 2 (x, y) or 3. ``reference``:
        (N, D) the same objects from the reference track at the observation's stamp. ``velocity``:
        (N, D) m/s, each object's velocity relative to the ego (see the class docstring). ``sigma``: the
        observation noise in metres, scalar or (N,); only its relative size matters. No pairs
        (N = 0) is a frame with nothing to add.
        """
        observed = np.asarray(observed, np.float64)
        reference = np.asarray(reference, np.float64)
        velocity = np.asarray(velocity, np.float64)
        if observed.ndim != 2 or observed.shape[1] not in (2, 3) or reference.shape != observed.shape \
                or velocity.shape != observed.shape:
            raise CalibrationError(f'{self.sensor}: observed {observed.shape}, reference {reference.shape} and '
                                   f'velocity {velocity.shape} must be the same (N, 2) or (N, 3)')
        sigma = np.broadcast_to(np.asarray(sigma, np.float64), (len(observed),))
        if not np.all(sigma > 0):
            raise CalibrationError(f'{self.sensor}: sigma must be positive, got {np.asarray(sigma).min()}')
        if self._frames and self._frames[0][0].shape[1] != observed.shape[1] and len(observed):
            raise CalibrationError(f'{self.sensor}: pairs changed from {self._frames[0][0].shape[1]}-D to '
                                   f'{observed.shape[1]}-D within the window')
        finite = np.all(np.isfinite(observed) & np.isfinite(reference) & np.isfinite(velocity), axis=1)
        moving = finite & (np.linalg.norm(velocity, axis=1) > self.config.offset_min_speed_mps)
        residual = observed[moving] - reference[moving]
        self._frames.append((residual, velocity[moving], 1.0 / sigma[moving] ** 2))
        self._latest = self._estimate()
        return self._latest

    def _estimate(self) -> OffsetEstimate:
        config = self.config
        frames = len(self._frames)
        parts = [part for part in self._frames if len(part[0])]
        count = sum(len(part[0]) for part in parts)
        if count < config.offset_min_pairs:
            return OffsetEstimate(self.sensor, math.nan, math.nan, 'ok', count, frames,
                                  f'insufficient data: {count} moving pairs, need {config.offset_min_pairs}')
        residual = np.concatenate([p[0] for p in parts])  # (N, D) observed - reference, metres
        velocity = np.concatenate([p[1] for p in parts])  # (N, D) m/s
        weight = np.concatenate([p[2] for p in parts])  # (N,)
        dims = residual.shape[1]
        # Unknowns: offset (s), then the bias (D metres) when fitted. Rows: every pair's D components.
        design = -velocity.reshape(-1, 1)  # (N*D, 1): r = -v o (+ b)
        if config.offset_fit_bias:
            design = np.concatenate([design, np.tile(np.eye(dims), (len(residual), 1))], axis=1)
        target = residual.reshape(-1)  # (N*D,)
        row_weight = np.repeat(weight, dims)  # (N*D,)
        keep = np.ones(len(residual), bool)
        for attempt in range(3):  # fit; drop pairs beyond the gate and fit again, twice at most
            rows = np.repeat(keep, dims)
            solution, covariance, scale = _weighted_least_squares(design[rows], target[rows], row_weight[rows])
            if solution is None:
                return OffsetEstimate(self.sensor, math.nan, math.nan, 'ok', int(keep.sum()), frames,
                                      'insufficient data: velocities do not separate offset from bias')
            error = np.linalg.norm((target - design @ solution).reshape(-1, dims), axis=1)  # (N,) metres
            # Five median errors: about four sigmas of 2-D Gaussian noise; a wrong match lies far beyond.
            inliers = error <= max(5.0 * float(np.median(error[keep])), 0.05)
            if attempt == 2 or np.array_equal(inliers, keep) or inliers.sum() < config.offset_min_pairs:
                break
            keep = inliers
        used = int(keep.sum())
        offset_ms = float(solution[0]) * 1e3
        stderr_ms = math.sqrt(float(covariance[0, 0])) * scale * 1e3
        bias = solution[1:].copy() if config.offset_fit_bias else None
        text = f'{offset_ms:+.1f} ms +- {stderr_ms:.1f} from {used} moving pairs over {frames} frames'
        if stderr_ms > config.offset_max_stderr_ms:
            state: CalibrationState = 'ok'
            text = f'insufficient data: standard error above {config.offset_max_stderr_ms:g} ms; {text}'
        elif abs(offset_ms) > config.offset_failed_ms:
            state = 'failed'
            text = f'clock offset beyond {config.offset_failed_ms:g} ms: {text}'
        elif abs(offset_ms) > config.offset_degraded_ms:
            state = 'degraded'
            text = f'clock offset: {text}'
        else:
            state = 'ok'
        return OffsetEstimate(self.sensor, offset_ms, stderr_ms, state, used, frames, text, bias)


class StaticOffsetEstimator:
    """Online clock offset of a radar from where it puts what the lidar sees: the standing world, and
    tracked moving objects.

    The model is ``TimeOffsetEstimator``'s for an object that stands still: seen from a vehicle moving
    at ``v`` (base axes), a radar whose stamps run ``o`` late puts it ``v o`` ahead of where it is. The
    lidar's current sweep shows where the standing world's surfaces are. So a return of something
    standing (compensated velocity under ``static_offset_max_speed_mps``), moved back by ``v o`` for the
    right ``o``, lies on a lidar surface. Per scan taken while the vehicle moves faster than
    ``offset_min_speed_mps``, every candidate ``o`` (``+-static_offset_search_ms`` in steps of
    ``static_offset_step_ms``) scores ``sum exp(-d^2 / 2 sigma^2)`` over the scan's standing returns, ``d``
    the distance from the moved return to the nearest lidar point above the ground. The scores of
    the last ``static_offset_window_frames`` scans are summed (they are per offset, not per metre, so
    scans at different speeds add up); the estimate is the best offset, refined by a parabola.

    Moving objects (``add_moving``, fed by the health board from the tracks when
    ``static_offset_moving_objects``). A return on an object moving at ``u`` over the ground, from a
    scan ``a`` seconds older than the lidar's sweep, is where the object was ``a + o`` before the sweep,
    placed ``v o`` ahead by the vehicle's motion: moved by ``u a + (u - v) o`` it lies on the lidar's
    points of that object, for the right ``o``. ``u - v``, the object's motion relative to the vehicle,
    is what carries the clock, so a car crossing in front of a vehicle that waits at a junction shows
    it where the standing world shows nothing, and traffic across the road's direction separates the
    offset where a street's surfaces along the motion do not. Its returns join the same scan's score
    (one scan, one call towards ``static_offset_confirm_scans``); returns on objects moving slower than
    ``offset_min_speed_mps`` relative to the vehicle add nothing. An error ``e`` in the track's
    velocity moves the return by ``e a`` (about 0.05 m for 1 m/s at a scan's typical age).

    Evidence. Surfaces along the motion (a guard rail, a wall beside the road) score alike at every
    offset: they carry no timing, and an open road resolves nothing. The estimate counts only when
    the window holds ``static_offset_min_returns`` returns from at least
    ``static_offset_min_scans`` scans and the best score beats every offset more than
    ``static_offset_separation_ms`` from it (a second peak: the scene is ambiguous) and, to call the
    clock off, every offset that would call it right (within ``static_offset_degraded_ms``), by the
    factor ``static_offset_min_gain``, and is not at the search limit (a score still rising there is no
    peak: on a clean 6 s highway clip a back radar read -150 ms); else the state is ok with 'insufficient
    data'; an offset beyond ``static_offset_search_ms`` is not called. A call stands once
    ``static_offset_confirm_scans`` scans in a row make it (false calls, on simulated highways, came in
    bursts of fewer).
    Its state, as ``TimeOffsetEstimator``'s: degraded beyond ``static_offset_degraded_ms``, failed
    beyond ``offset_failed_ms``. ``stderr`` is the half width of the offsets whose score is within 1 %
    of the best (how sharp the peak is), not a standard error.

    Measured on simulated 2 s drives (radar_front, 6 urban and highway scenes, 6 to 25 m/s): with the
    clocks right the best offset is 0 +- 5 ms (10 ms on a highway, where the gain stays near 1); with
    the radar 50 ms late it reads 20 to 40 ms in town, while an added displacement of ``v`` x 50 ms
    to the clean scans reads 45 to 55 ms: the estimator is unbiased, the simulated fault shows less.
    With the moving objects, over the fault benchmark's clips run through the pipeline (each scan's
    scores cached, the rules swept over them): radar_front 50 ms late is called in 10 of 10 6 s
    clips (19 to 34 frames after the fault starts in 9, 75 on a highway) and 7 of 10 2 s clips, and
    nothing is called on the 20 clean clips nor on the other radars. The standing world alone, with
    the same thresholds: 9 and 6 of 10, and 10 false scans on the clean clips; with the earlier ones
    (10 %, 4 scans): 7 and 6 of 10, 5 false scans.
    """

    def __init__(self, sensor: str, config: CalibrationSection = CalibrationSection()) -> None:
        self.sensor = sensor
        self.config = config
        step = config.static_offset_step_ms
        count = int(round(config.static_offset_search_ms / step))
        self.offsets_ms = step * np.arange(-count, count + 1, dtype=np.float64)
        # Per scan: [its key (the scan's stamp; None: a scan of its own), score per offset, returns].
        self._scans: deque[list[Any]] = deque(maxlen=config.static_offset_window_frames)
        self._calls = 0  # consecutive scans whose estimate called the clock off, the latest included
        self._calls_before = 0  # the same before the latest scan
        self._latest = self._estimate(new_scan=False)

    @property
    def latest(self) -> OffsetEstimate:
        return self._latest

    def reset(self) -> None:
        self._scans.clear()
        self._calls = self._calls_before = 0
        self._latest = self._estimate(new_scan=False)

    def scores(self, returns_xy: np.ndarray, surfaces: Any, relative_velocity: np.ndarray,
               lead: np.ndarray | None = None) -> np.ndarray:
        """(len(offsets_ms),) one scan's score per candidate offset.

        ``returns_xy`` (R, 2) the scan's returns in the base frame; ``surfaces`` an open3d
        nearest-neighbour index over the lidar's points above the ground (``surface_index``);
        ``relative_velocity`` (2,) or (R, 2) m/s, base axes: how each return's object moves relative
        to the vehicle (the vehicle's velocity negated for the standing world); ``lead`` (R, 2) metres
        the object moved between the scan and the lidar's sweep (None: it stands).
        """
        import open3d as o3d

        returns_xy = np.asarray(returns_xy, np.float64).reshape(-1, 2)
        if lead is not None:
            returns_xy = returns_xy + np.asarray(lead, np.float64).reshape(-1, 2)
        relative = np.broadcast_to(np.asarray(relative_velocity, np.float64), returns_xy.shape)
        moved = (returns_xy[None] + (self.offsets_ms * 1e-3)[:, None, None] * relative[None]).reshape(-1, 2)
        query = np.zeros((len(moved), 3), np.float32)
        query[:, :2] = moved
        _, squared = surfaces.knn_search(o3d.core.Tensor(query), 1)
        d2 = squared.numpy().reshape(len(self.offsets_ms), len(returns_xy))
        sigma = self.config.static_offset_sigma_m
        return np.exp(-d2 / (2 * sigma * sigma)).sum(axis=1)

    def update(self, returns_xy: np.ndarray, surfaces: Any, ego_velocity: np.ndarray,
               scan: float | None = None) -> OffsetEstimate:
        """Add one new scan's standing returns and re-estimate. A scan taken while the vehicle stands
        or crawls, or without standing returns, adds nothing. ``scan``: the scan's key (its stamp),
        so that ``add_moving`` can add the same scan's returns on moving objects to it."""
        returns_xy = np.asarray(returns_xy, np.float64).reshape(-1, 2)
        returns_xy = returns_xy[np.isfinite(returns_xy).all(axis=1)]
        velocity = np.asarray(ego_velocity, np.float64)
        if len(returns_xy) and surfaces is not None and np.isfinite(velocity).all() \
                and np.linalg.norm(velocity) > self.config.offset_min_speed_mps:
            self._add(scan, self.scores(returns_xy, surfaces, -velocity), len(returns_xy))
        return self._latest

    def add_moving(self, returns_xy: np.ndarray, surfaces: Any, relative_velocity: np.ndarray,
                   lead: np.ndarray, scan: float | None = None) -> OffsetEstimate:
        """Add a scan's returns on moving objects, each with its object's velocity relative to the
        vehicle (R, 2) and how far the object moved from the scan to the lidar's sweep (R, 2), both
        from its track, and re-estimate. ``surfaces``: the lidar's points of those objects. Returns
        whose object moves relative to the vehicle slower than ``offset_min_speed_mps`` add nothing.
        With ``scan`` the key of a scan ``update`` has added, they join that scan."""
        returns_xy = np.asarray(returns_xy, np.float64).reshape(-1, 2)
        relative = np.asarray(relative_velocity, np.float64).reshape(-1, 2)
        lead = np.asarray(lead, np.float64).reshape(-1, 2)
        keep = np.isfinite(returns_xy).all(axis=1) & np.isfinite(relative).all(axis=1) & np.isfinite(lead).all(axis=1)
        keep &= np.linalg.norm(np.where(keep[:, None], relative, 0.0), axis=1) > self.config.offset_min_speed_mps
        if keep.any() and surfaces is not None:
            self._add(scan, self.scores(returns_xy[keep], surfaces, relative[keep], lead[keep]), int(keep.sum()))
        return self._latest

    def _add(self, scan: float | None, curve: np.ndarray, returns: int) -> None:
        if scan is not None and self._scans and self._scans[-1][0] == scan:
            self._scans[-1][1] = self._scans[-1][1] + curve
            self._scans[-1][2] += returns
            self._latest = self._estimate(new_scan=False)
        else:
            self._scans.append([scan, curve, returns])
            self._latest = self._estimate(new_scan=True)

    def _estimate(self, new_scan: bool) -> OffsetEstimate:
        config = self.config
        if new_scan:
            self._calls_before = self._calls
        frames = len(self._scans)
        count = sum(n for _, _, n in self._scans)
        if count < config.static_offset_min_returns or frames < config.static_offset_min_scans:
            self._calls = 0
            return OffsetEstimate(self.sensor, math.nan, math.nan, 'ok', count, frames,
                                  f'insufficient data: {count} returns in {frames} scans while moving, '
                                  f'need {config.static_offset_min_returns} in {config.static_offset_min_scans}')
        total = np.sum([curve for _, curve, _ in self._scans], axis=0)
        best = int(np.argmax(total))
        step = self.offsets_ms[1] - self.offsets_ms[0]
        refine = _parabola_offset(total[best - 1], total[best], total[best + 1]) if 0 < best < len(total) - 1 else 0.0
        offset_ms = float(self.offsets_ms[best] + refine * step)
        near = self.offsets_ms[total >= 0.99 * total[best]]
        width_ms = float(max(near.max() - near.min(), step) / 2)
        # The rival: the best offset away from this peak (another peak: the scene is ambiguous) and, to
        # call the clock off, the best offset that would call it right.
        apart = np.abs(self.offsets_ms - self.offsets_ms[best]) > config.static_offset_separation_ms
        if abs(offset_ms) > config.static_offset_degraded_ms:
            apart |= np.abs(self.offsets_ms) <= config.static_offset_degraded_ms
        rival = float(total[apart].max(initial=0.0))
        gain = float(total[best] / rival) if rival > 0 else math.inf
        text = f'{offset_ms:+.1f} ms (peak +- {width_ms:.0f}, {gain:.2f} x its rival\'s score) from {count} ' \
               f'returns over {frames} scans'
        state: CalibrationState = 'ok'
        if best in (0, len(total) - 1):  # still rising at the limit: no peak found, no estimate to stand on
            text = f'insufficient data: the best offset is at the search limit; {text}'
        elif gain < config.static_offset_min_gain:
            text = f'insufficient data: the best offset beats its rivals by less than ' \
                   f'{config.static_offset_min_gain:g} x; {text}'
        elif abs(offset_ms) > config.static_offset_degraded_ms:
            state = 'failed' if abs(offset_ms) > config.offset_failed_ms else 'degraded'
        self._calls = self._calls_before + 1 if state != 'ok' else 0  # a scan re-estimated counts once
        if state != 'ok' and self._calls < config.static_offset_confirm_scans:
            state = 'ok'
            text = f'unconfirmed ({self._calls} of {config.static_offset_confirm_scans} scans): {text}'
        elif state == 'failed':
            text = f'clock offset beyond {config.offset_failed_ms:g} ms: {text}'
        elif state == 'degraded':
            text = f'clock offset: {text}'
        return OffsetEstimate(self.sensor, offset_ms, width_ms, state, count, frames, text)


def surface_index(points: np.ndarray) -> Any:
    """An open3d nearest-neighbour index over (N, >= 2) points' x, y (z set to 0); None for no points."""
    import open3d as o3d

    points = np.asarray(points)
    if not len(points):
        return None
    flat = np.zeros((len(points), 3), np.float32)
    flat[:, :2] = points[:, :2]
    index = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(flat))
    index.knn_index()
    return index


def _weighted_least_squares(design: np.ndarray, target: np.ndarray,
                            weight: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, float]:
    """Solution, ``(A^T W A)^-1`` and the residual scale ``sqrt(r^T W r / (n - k))``; None when singular."""
    rows, unknowns = design.shape
    normal = design.T @ (design * weight[:, None])
    if rows <= unknowns or np.linalg.cond(normal) > 1e10:
        return None, np.zeros((unknowns, unknowns)), math.nan
    covariance = np.linalg.inv(normal)
    solution = covariance @ (design.T @ (weight * target))
    residual = target - design @ solution
    scale = math.sqrt(float(residual @ (weight * residual)) / (rows - unknowns))
    return solution, covariance, scale
