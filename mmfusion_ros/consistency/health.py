"""Per-sensor health over a sliding window: what /diagnostics reports and the gated fuser weighs.

One monitor per sensor (``CameraHealth``, ``LidarHealth``, ``RadarHealth``, or ``health_monitors``
for a whole configuration) is fed every update, with ``None`` where no new message came, and answers
a ``HealthEstimate``: a state (ok, degraded, failed), a score in [0, 1] for the gated fuser, the
conditions behind it and the numbers behind those. The conditions, as published (thresholds in
``HealthSection``):

- ``silent`` (all, failed): no message for ``silent_periods`` nominal periods.
- ``rate_low`` (all, degraded): messages lost: at least ``rate_min_lost`` missing in the gaps of the
  last ``rate_gap_window`` intervals (a gap: longer than ``rate_gap_periods`` periods; a lost message
  shows at the next one, without waiting for a window), or fewer messages over ``rate_window_s`` than
  ``rate_low_ratio`` of the nominal rate (neither during a silence, nor the rate for a window after
  one).
- ``blackout`` (camera, failed): the grey image is dark and flat (called at the first such image).
- ``frozen`` (camera, failed): the same image again, full-resolution mean difference about zero, while
  time advances and, where the lidar says, the view moved (``frozen_view_change_*``) (called at the
  first repeat: no confirming frames).
- ``overexposed`` (camera, degraded / failed): the share of pixels saturated in all three channels.
- ``occluded`` (camera, degraded / failed): regions of textured blocks that match each of the last
  ``occlusion_window`` images while the rest of the scene moves, or that changed and then matched each
  of the last ``occlusion_onset_images`` (mud arriving on the lens: distant scenery never changed)
  (their bounds: ``occluded_x0`` .. ``occluded_y1``, fractions of the image).
- ``sector_loss`` (lidar, degraded / failed): azimuth arcs empty that the learned reference fills.
- ``beam_loss`` (lidar, degraded / failed): beams empty that the reference fills (``beam_min_points``, and
  ``beam_min_share`` of the median beam's: stray returns between two beams are none), below a beam that
  still returns.
- ``scatter`` (lidar, degraded / failed): rain, snow, spray or dust: the share of near returns that
  stand alone in free air (surfaces return in scan lines; drops do not), above both a floor and a
  multiple of the share learnt from this lidar's ordinary sweeps.
- ``ghosts`` (radar, degraded / failed): returns that move (compensated speed over
  ``ghost_min_speed_mps``) where the lidar shows nothing, counted by place (returns within
  ``ghost_place_m`` of one another count once: a real car the lidar misses gives several) over
  ``ghost_window`` scans: at least ``ghost_min_count``, a count that the rate learned from ordinary
  scans reaches by chance with a probability under ``ghost_p`` (the conditional test of two Poisson
  counts: no confirming scans are needed on top), and ``ghost_min_fraction`` of the returns
  (standing clutter without lidar support, a kerb or a sign below the lidar's rings, is ordinary; a
  moving return with nothing there is not).
- ``warming_up`` (all, changes no state): the update could not be judged fully for want of history.

A content condition is reported after ``confirm_frames`` judged updates in a row and cleared after
``clear_frames`` clean ones; updates that cannot judge it (no new message, a blank image, a scene
standing still) leave it as it is. Silence and rate integrate time already and need no confirmation;
neither does a frozen or a black image (facts of the image, not noisy readings).
While reported, a condition keeps the severity of the last update that showed it. The score is the
product of the reported conditions' factors: 0 for blackout, frozen and silent, the share left
otherwise (unsaturated, unoccluded, azimuth and beams kept, ...).

Assumptions and known limits:

- A noise-free image stream of a scene that stands still is indistinguishable from a frozen camera.
  The built-in simulator renders cameras without sensor noise: a parked ego facing an empty street
  sends bit-identical images and reads as ``frozen``. Real cameras change every pixel a little.
- Occlusion needs motion. With ``ego_moving`` unknown, half the textured blocks must change, so a
  parked car's still surroundings are no occlusion, and neither is a patch that hides half the image
  at once; pass ``ego_moving`` from odometry where it is known. An occluder without texture (blurred
  dirt) reads like sky and is not flagged; blackout covers a fully covered lens. Latency is
  ``occlusion_window`` images. Sensor noise must stay below ``occlusion_max_change`` at the working
  resolution (area downsampling to ``camera_work_width`` averages it down).
- Lidar and radar references are learned from the first healthy updates: a fault present from the
  start is taken as normal. Lidar beams without a ``ring`` field come from elevation bins: beams that
  lie closer than two bins, or are smeared by a tilted mount, merge and count as one.
- Ghosts are only as good as the caller's support mask: where the supporting lidar loses coverage,
  real returns lose support too.
"""

from __future__ import annotations

import abc
import math
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, ClassVar, Mapping

import cv2
import numpy as np

from ..config import FusionConfig, HealthSection
from ..types import NS_PER_S, DiagnosticStatus

__all__ = ['CONDITIONS', 'STATES', 'CameraHealth', 'HealthEstimate', 'LidarHealth', 'RadarHealth',
           'health_monitors']

STATES: tuple[str, ...] = ('ok', 'degraded', 'failed')
# Every condition a monitor reports, in the order they are listed.
CONDITIONS: tuple[str, ...] = ('silent', 'rate_low', 'blackout', 'frozen', 'overexposed', 'occluded',
                               'sector_loss', 'beam_loss', 'scatter', 'ghosts', 'warming_up')


@dataclass(frozen=True)
class HealthEstimate:
    """One sensor's health at one update."""

    sensor: str
    modality: str  # camera | lidar | radar
    state: str  # ok | degraded | failed
    score: float  # 1.0 healthy .. 0.0 useless: the gated fuser's health input
    conditions: tuple[str, ...]  # reported conditions, in CONDITIONS order
    estimates: Mapping[str, float] = field(default_factory=dict)  # the numbers behind them (NaN: not judged)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f'HealthEstimate({self.sensor!r}): state {self.state!r} is not one of {", ".join(STATES)}')
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown:
            raise ValueError(f'HealthEstimate({self.sensor!r}): unknown conditions {unknown}')
        object.__setattr__(self, 'estimates', MappingProxyType(dict(self.estimates)))

    def status(self) -> DiagnosticStatus:
        """The estimate as a ``diagnostic_msgs/DiagnosticStatus``: OK, WARN or ERROR by state."""
        level = {'ok': DiagnosticStatus.OK, 'degraded': DiagnosticStatus.WARN,
                 'failed': DiagnosticStatus.ERROR}[self.state]
        faults = [c for c in self.conditions if c != 'warming_up']
        message = f'{self.state}: {", ".join(faults)}' if faults else \
            ('warming up' if self.conditions else 'ok')
        values = [('modality', self.modality), ('state', self.state), ('score', f'{self.score:.2f}'),
                  ('conditions', ','.join(self.conditions))]
        values += [(name, f'{value:.4g}') for name, value in self.estimates.items()]
        return DiagnosticStatus(level, f'mmfusion: health {self.sensor}', message, self.sensor, tuple(values))


class _Condition:
    """A condition's persistence: raised after ``confirm`` updates in a row, cleared after ``clear`` clean ones.

    While raised it keeps the state and score factor of the last update that showed it.
    """

    def __init__(self, confirm: int, clear: int) -> None:
        self.confirm, self.clear = confirm, clear
        self.reset()

    def reset(self) -> None:
        self.active = False
        self.present = self.absent = 0
        self.state, self.factor = 'degraded', 1.0

    def step(self, state: str | None, factor: float = 1.0) -> None:
        """One judged update: ``state`` degraded or failed when the condition shows, None when it does not."""
        if state is None:
            self.present = 0
            self.absent += 1
            if self.active and self.absent >= self.clear:
                self.active = False
            return
        self.absent = 0
        self.present += 1
        if self.present >= self.confirm:
            self.active = True
        if self.active:
            self.state, self.factor = state, float(np.clip(factor, 0.0, 1.0))


def _severity(value: float, degraded_from: float, failed_from: float) -> str | None:
    """'failed' from ``failed_from``, else 'degraded' from ``degraded_from``, else None (fine)."""
    if value >= failed_from:
        return 'failed'
    return 'degraded' if value >= degraded_from else None


class _SensorHealth(abc.ABC):
    """What every monitor shares: message timing, condition persistence and the estimate."""

    modality: ClassVar[str]
    content: ClassVar[tuple[str, ...]]  # the modality's own conditions

    def __init__(self, sensor: str, config: HealthSection, rate_hz: float | None = None) -> None:
        if not isinstance(config, HealthSection):
            raise TypeError(f'{type(self).__name__}({sensor!r}): config must be a HealthSection, '
                            f'got {type(config).__name__}')
        if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f'{type(self).__name__}({sensor!r}): rate_hz must be positive, got {rate_hz}')
        self.sensor = sensor
        self.config = config
        self.rate_hz = rate_hz
        # Silence, a low rate, a repeated image and a black one are facts, not noisy readings: no
        # confirming frames (a camera's noise makes two images of a moving scene differ and keeps a dark
        # one textured; the same image twice, or a flat black one, is a fault). At 12 Hz, a second
        # image to confirm costs up to 1.7 frames of 20 Hz. Ghosts are a count over a window of scans
        # tested against the count of the ordinary scans before it: the window is the confirmation.
        at_once = ('silent', 'rate_low', 'frozen', 'blackout', 'ghosts')
        self._conditions = {name: _Condition(1 if name in at_once else config.confirm_frames, config.clear_frames)
                            for name in ('silent', 'rate_low', *self.content)}
        self.reset()

    def reset(self) -> None:
        """Forget everything: references, history, conditions (time went backwards, a looped bag)."""
        for condition in self._conditions.values():
            condition.reset()
        self._first_ns: int | None = None
        self._rate_from_ns = 0  # the rate counts messages from here (the start, the end of a silence)
        self._last_ns: int | None = None
        self._last_data_ns: int | None = None
        self._data_ns: deque[int] = deque()
        self._lost: deque[int] = deque(maxlen=self.config.rate_gap_window)  # messages missing per interval
        self._period_ns: float | None = NS_PER_S / self.rate_hz if self.rate_hz else None
        self._reset_content()

    @abc.abstractmethod
    def _reset_content(self) -> None:
        """Forget what the modality's own checks remember (references, previous images)."""

    def _timing(self, stamp_ns: int, fresh: bool, data_ns: int | None = None) -> dict[str, float]:
        """Steps silence and rate for an update at ``stamp_ns``; ``fresh``: it brings a new message,
        stamped ``data_ns`` (default ``stamp_ns``)."""
        stamp_ns = int(stamp_ns)
        data_ns = stamp_ns if data_ns is None else int(data_ns)
        if self._last_ns is not None and stamp_ns < self._last_ns:
            self.reset()
        if self._first_ns is None:
            self._first_ns = self._rate_from_ns = stamp_ns
        self._last_ns = stamp_ns
        config = self.config
        silent = self._conditions['silent']
        if fresh:
            if silent.active:
                self._rate_from_ns = stamp_ns  # the silence is reported; the rate counts from its end
                self._lost.clear()
            elif self._last_data_ns is not None and self._period_ns:
                interval = (data_ns - self._last_data_ns) / self._period_ns  # in periods
                self._lost.append(max(0, round(interval) - 1) if interval > config.rate_gap_periods else 0)
            self._last_data_ns = data_ns
            self._data_ns.append(data_ns)
        window_ns = config.rate_window_s * NS_PER_S
        while self._data_ns and self._data_ns[0] <= stamp_ns - window_ns:
            self._data_ns.popleft()
        if self.rate_hz is None and len(self._data_ns) >= 3:
            self._period_ns = float(np.median(np.diff(np.array(self._data_ns, dtype=np.int64))))
        age_ns = stamp_ns - (self._last_data_ns if self._last_data_ns is not None else self._first_ns)
        if self._period_ns:
            silent.step('failed' if age_ns > config.silent_periods * self._period_ns else None, 0.0)
        rate_hz = math.nan
        lost = sum(self._lost)
        kept = len(self._lost) / (len(self._lost) + lost) if self._lost else 1.0  # of the recent messages
        judged = bool(self._lost)
        low = lost >= config.rate_min_lost and not silent.active
        if stamp_ns - self._rate_from_ns >= window_ns:
            judged = True
            rate_hz = len(self._data_ns) / config.rate_window_s
            nominal = NS_PER_S / self._period_ns if self._period_ns else None
            if nominal is not None:
                kept = min(kept, rate_hz / nominal)
                low |= rate_hz < config.rate_low_ratio * nominal and not silent.active
        if judged:
            self._conditions['rate_low'].step('degraded' if low else None, kept)
        return {'rate_hz': rate_hz, 'age_ms': age_ns / 1e6, 'lost_messages': float(lost)}

    def _estimate(self, estimates: dict[str, float], warming_up: bool) -> HealthEstimate:
        active = {name: c for name, c in self._conditions.items() if c.active}
        conditions = tuple(name for name in CONDITIONS if name in active or (name == 'warming_up' and warming_up))
        states = {c.state for c in active.values()}
        state = 'failed' if 'failed' in states else 'degraded' if states else 'ok'
        score = float(np.prod([c.factor for c in active.values()])) if active else 1.0
        return HealthEstimate(self.sensor, self.modality, state, score, conditions, estimates)


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------

def _block_means(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Area means ``(rows, cols)`` of a float32 ``(H, W)`` map over a ``grid = (cols, rows)`` of blocks."""
    return cv2.resize(values, grid, interpolation=cv2.INTER_AREA)


def _block_texture(grey: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Two-dimensional texture per block ``(rows, cols)``, grey levels: the square root of the smaller
    eigenvalue of the block's gradient structure tensor.

    One-dimensional texture (a lane line, a facade's window bands) scores low: moving along itself it
    does not change, so it must not count as content that ought to change when the scene moves.
    """
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    gx[:, :-1] = np.diff(grey, axis=1)
    gy[:-1, :] = np.diff(grey, axis=0)
    xx, yy, xy = (_block_means(v, grid) for v in (gx * gx, gy * gy, gx * gy))
    smaller = (xx + yy) / 2 - np.sqrt(((xx - yy) / 2) ** 2 + xy ** 2)
    return np.sqrt(np.maximum(smaller, 0.0))


def _flow_texture_share(grey: np.ndarray, grid: tuple[int, int], focus: np.ndarray) -> np.ndarray:
    """Per block ``(rows, cols)``: sqrt of the share of the gradient energy along the lines through
    ``focus`` (homogeneous work-image pixels), the direction the scene moves in while the vehicle
    drives straight. Texture with edges in every direction scores about 0.7; edges that all point at
    the focus (lane lines and kerbs along the road) score near 0: driving slides them along themselves.
    """
    h, w = grey.shape
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)  # both at the pixel centre: forward differences would
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)  # sit half a pixel apart and turn a thin line's edges
    v, u = (axis.astype(np.float32) + 0.5 for axis in np.ogrid[0:h, 0:w])  # (h, 1), (1, w): broadcast
    rx, ry = u * focus[2] - focus[0], v * focus[2] - focus[1]  # towards (or away from) the focus
    along = (gx * rx + gy * ry) / np.maximum(np.hypot(rx, ry), 1e-6)
    total = _block_means(gx * gx + gy * gy, grid)
    return np.sqrt(_block_means(along * along, grid) / np.maximum(total, 1e-6))


def _regions(mask: np.ndarray, min_blocks: int) -> np.ndarray:
    """``mask`` without its connected regions (8-neighbours) smaller than ``min_blocks``."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_blocks)
    return np.isin(labels, keep[keep != 0])  # label 0 is the background


class CameraHealth(_SensorHealth):
    """One camera: blackout, frozen image, overexposure, partial occlusion, silence and rate."""

    modality = 'camera'
    content = ('blackout', 'frozen', 'overexposed', 'occluded')

    def _reset_content(self) -> None:
        self._previous: np.ndarray | None = None  # (H, W, 3) uint8, the last image
        self._history: deque[np.ndarray] = deque(maxlen=self.config.occlusion_window)  # work-size grey images
        self._unchanged = 0  # images in a row equal to the one before
        self._occluded = math.nan
        self._occluded_box = (math.nan,) * 4  # the stuck region's bounds, fractions of the image (x0, y0, x1, y1)

    def update(self, stamp_ns: int, pixels: np.ndarray | None, *, ego_moving: bool | None = None,
               travel_focus: np.ndarray | None = None,
               view_changed: Callable[[], bool | None] | None = None) -> HealthEstimate:
        """Judge one update: ``pixels`` the new image (``(H, W, 3)`` uint8 RGB) stamped ``stamp_ns``, or
        ``None`` when no new image came by ``stamp_ns``. ``ego_moving``: whether the vehicle moves
        (odometry), None when unknown (then the image must show motion before occlusion is judged).
        ``travel_focus``: where the direction of travel projects in the image, homogeneous ``(3,)``
        pixel coordinates (``K @ direction`` in the camera frame; the focus of expansion, at infinity
        for a camera looking sideways), None when unknown. Ego motion moves the world along lines
        through it, so a block whose edges all run along those lines (lane lines, kerbs) looks the
        same while the vehicle drives, and says nothing about the lens. ``view_changed``: asked only when
        the image repeats its predecessor (it costs a projection): whether what the camera looks at
        moved since its last image (the lidar's returns in its view), None when unknown; an unchanged
        image of an unchanged view is no frozen camera.
        """
        if pixels is not None:
            pixels = np.asarray(pixels)
            if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8 or min(pixels.shape[:2]) < 2:
                raise ValueError(f'CameraHealth({self.sensor!r}): pixels must be (H, W, 3) uint8 RGB, got '
                                 f'{pixels.shape} {pixels.dtype}')
        # The same message again (same stamp) brings nothing new.
        fresh = pixels is not None and stamp_ns != self._last_data_ns
        estimates = self._timing(stamp_ns, fresh)
        warming_up = len(self._history) < self.config.occlusion_window  # this image can not be judged whole
        if fresh:
            estimates.update(self._judge(pixels, ego_moving, travel_focus, view_changed))
        else:
            estimates.update(mean_brightness=math.nan, brightness_std=math.nan, saturated_fraction=math.nan,
                             image_change=math.nan, unchanged_frames=float(self._unchanged),
                             occluded_fraction=self._occluded, **self._region())
        return self._estimate(estimates, warming_up)

    def _judge(self, pixels: np.ndarray, ego_moving: bool | None, travel_focus: np.ndarray | None,
               view_changed: Callable[[], bool | None] | None) -> dict[str, float]:
        config = self.config
        H, W = pixels.shape[:2]
        if self._previous is not None and self._previous.shape != pixels.shape:
            self._reset_content()  # a new resolution: nothing to compare with
        scale = min(1.0, config.camera_work_width / W)
        work = pixels if scale == 1.0 else cv2.resize(pixels, (max(2, round(W * scale)), max(2, round(H * scale))),
                                                      interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY).astype(np.float32)  # (h, w) work size
        mean, std = float(grey.mean()), float(grey.std())
        saturated = float((work.min(axis=2) >= config.saturation_level).mean())

        blackout = mean <= config.blackout_max_mean and std <= config.blackout_max_std
        self._conditions['blackout'].step('failed' if blackout else None, 0.0)
        overexposed = _severity(saturated, config.overexposed_fraction, config.overexposed_failed_fraction)
        self._conditions['overexposed'].step(overexposed, 1.0 - saturated)
        # No content, nothing to see frozen or occluded: a black or white image repeats exactly.
        blank = blackout or overexposed == 'failed'

        change = math.nan
        if self._previous is not None:
            change = cv2.norm(pixels, self._previous, cv2.NORM_L1) / pixels.size  # mean |difference|
            self._unchanged = self._unchanged + 1 if change <= config.frozen_max_change else 0
        # A still camera on a still vehicle may see a still world (the simulator renders without sensor
        # noise): with the vehicle known to stand, or the view known not to have moved (a bus beside the
        # vehicle at its speed fills it), an unchanged image says nothing either way.
        if not blank and self._previous is not None and ego_moving is not False:
            if not (self._unchanged and view_changed is not None and view_changed() is False):
                self._conditions['frozen'].step('failed' if self._unchanged else None, 0.0)
        self._previous = pixels.copy()

        if blank:  # a black or white image shows nothing of the scene: what came before is no reference
            self._history.clear()
        else:
            if not self._unchanged and len(self._history) == config.occlusion_window:
                focus = None if travel_focus is None else np.asarray(travel_focus, np.float64) * (scale, scale, 1.0)
                self._judge_occlusion(grey, ego_moving, focus)
            self._history.append(grey)
        return {'mean_brightness': mean, 'brightness_std': std, 'saturated_fraction': saturated,
                'image_change': change, 'unchanged_frames': float(self._unchanged),
                'occluded_fraction': self._occluded, **self._region()}

    def _region(self) -> dict[str, float]:
        return dict(zip(('occluded_x0', 'occluded_y0', 'occluded_x1', 'occluded_y1'), self._occluded_box))

    def _judge_occlusion(self, grey: np.ndarray, ego_moving: bool | None, focus: np.ndarray | None) -> None:
        """Textured blocks that match each of the last ``occlusion_window`` images while the scene moves,
        or that changed and then matched each of the last ``occlusion_onset_images`` (a patch arriving)."""
        config = self.config
        grid = config.occlusion_grid  # (cols, rows)
        changes = np.array([_block_means(np.abs(grey - old), grid) for old in self._history])  # (window, rows, cols)
        change = changes.max(axis=0)
        textured = _block_texture(grey, grid) >= config.occlusion_min_texture
        flow_known = focus is not None and bool(np.all(np.isfinite(focus)))
        if flow_known:
            textured &= _flow_texture_share(grey, grid, focus) >= config.occlusion_min_flow_share
        moving = textured & (change >= config.occlusion_moving_change)
        if ego_moving is False or (ego_moving is None and moving.sum() < config.occlusion_min_moving * textured.sum()):
            return  # a scene that stands still: no telling the lens from the world
        stuck = change <= config.occlusion_max_change
        onset = config.occlusion_onset_images
        if onset:  # a block that was something else a few images ago and has stayed as it is since
            stuck |= (changes[-onset:].max(axis=0) <= config.occlusion_max_change) & \
                (changes[:-onset].max(axis=0) >= config.occlusion_moving_change)
        min_blocks = max(1, math.ceil(config.occlusion_min_region * change.size))
        still = textured & stuck
        if flow_known:
            # Blocks inside a stuck patch whose texture runs along the flow (a patch's own edges) are
            # no evidence either way: close the gaps, but never over a block that changed of late.
            recent = changes[-max(onset, 1):].max(axis=0)
            closed = cv2.morphologyEx(still.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
            still = closed.astype(bool) & (recent <= config.occlusion_max_change)
        region = _regions(still, min_blocks)  # (rows, cols)
        occluded = float(region.mean())
        self._occluded = occluded
        rows, cols = np.nonzero(region)
        self._occluded_box = (cols.min() / grid[0], rows.min() / grid[1], (cols.max() + 1) / grid[0],
                              (rows.max() + 1) / grid[1]) if len(rows) else (math.nan,) * 4
        state = _severity(occluded, config.occluded_fraction, config.occluded_failed_fraction)
        self._conditions['occluded'].step(state, 1.0 - occluded)


# ---------------------------------------------------------------------------------------------
# Lidar
# ---------------------------------------------------------------------------------------------

def _runs(marks: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of the runs of nonzero ``marks``."""
    edges = np.diff(np.concatenate([[0], (marks != 0).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends)]


def _circular_runs(marks: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of the runs of nonzero ``marks`` on a circle; a run may wrap past the end."""
    n = len(marks)
    clear = np.flatnonzero(marks == 0)
    if len(clear) == 0:
        return [(0, n)]
    shift = int(clear[0])
    return [((start + shift) % n, length) for start, length in _runs(np.roll(marks, -shift))]


def _wrap_deg(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


class LidarHealth(_SensorHealth):
    """One lidar: sector loss and beam loss against a learned occupancy, scatter, silence and rate.

    A sweep's points (lidar frame: x ahead, y left, z up) are counted by azimuth ``atan2(y, x)`` in
    ``sector_bin_deg`` bins, and by beam: by ``ring`` where the caller has it, else by elevation in
    ``beam_bin_deg`` bins, a beam being a run of bins the reference fills (beams closer than two bins,
    or smeared by a tilted mount, merge, and then count as one). The reference is the per-bin median
    of the last ``reference_sweeps`` sweeps that showed no loss. Returns nearer than
    ``lidar_min_range_m`` (the vehicle's own body, the housing) are left out. Scatter needs no
    reference: returns off surfaces have neighbours along their scan line, returns off drops do not.
    """

    modality = 'lidar'
    content = ('sector_loss', 'beam_loss', 'scatter')
    MAX_RINGS: ClassVar[int] = 1024

    def _reset_content(self) -> None:
        config = self.config
        self._azimuth_bins = round(360.0 / config.sector_bin_deg)
        self._by_ring: bool | None = None  # beams from the ring field; fixed by the first sweep
        # (azimuth counts (A,), beam counts (B,), beam elevation sums (B,)) of healthy sweeps
        self._reference: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=config.reference_sweeps)
        self._scatter_reference: deque[float] = deque(maxlen=config.reference_sweeps)  # of sweeps without scatter

    def update(self, stamp_ns: int, xyz_sensor: np.ndarray | None, ring: np.ndarray | None = None) -> HealthEstimate:
        """Judge one update: ``xyz_sensor`` the new sweep ``(N, 3)`` in the lidar frame, or ``None`` when
        no new sweep came by ``stamp_ns``; ``ring`` ``(N,)`` the beam index of each point where the
        driver gives one. Non-finite points and points nearer than ``lidar_min_range_m`` are no returns.
        """
        if xyz_sensor is not None:
            xyz_sensor = np.asarray(xyz_sensor, dtype=np.float32)
            if xyz_sensor.ndim != 2 or xyz_sensor.shape[1] != 3:
                raise ValueError(f'LidarHealth({self.sensor!r}): xyz_sensor must be (N, 3), got {xyz_sensor.shape}')
            if ring is not None:
                ring = np.asarray(ring)
                if ring.shape != (len(xyz_sensor),) or ring.dtype.kind not in 'iu' or \
                        (len(ring) and not 0 <= int(ring.min()) <= int(ring.max()) < self.MAX_RINGS):
                    raise ValueError(f'LidarHealth({self.sensor!r}): ring must be (N,) integers in [0, '
                                     f'{self.MAX_RINGS}) for the N = {len(xyz_sensor)} points, got {ring.shape} '
                                     f'{ring.dtype}')
        fresh = xyz_sensor is not None and stamp_ns != self._last_data_ns
        estimates = self._timing(stamp_ns, fresh)
        warming_up = len(self._reference) < self.config.reference_min  # nothing to judge this sweep against
        nan = math.nan
        judged = {'points': nan, 'missing_sector_deg': nan, 'sector_start_deg': nan, 'sector_end_deg': nan,
                  'missing_beams': nan, 'reference_beams': nan, 'scatter_fraction': nan}
        if fresh:
            by_ring = ring is not None
            if self._by_ring is not None and by_ring != self._by_ring:
                self._reset_content()  # beams change meaning: learn them again
            self._by_ring = by_ring
            judged.update(self._judge(xyz_sensor, ring))
        estimates.update(judged)
        return self._estimate(estimates, warming_up)

    def _histograms(self, xyz: np.ndarray, ring: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point counts per azimuth bin ``(A,)``, per beam ``(B,)`` and the beam's elevation sums ``(B,)``."""
        config = self.config
        x, y, z = (xyz[:, i].astype(np.float64) for i in range(3))
        azimuth = np.degrees(np.arctan2(y, x))  # [-180, 180]
        elevation = np.degrees(np.arctan2(z, np.hypot(x, y)))  # [-90, 90]
        a = np.floor((azimuth + 180.0) / config.sector_bin_deg).astype(np.int64) % self._azimuth_bins
        if ring is None:
            bins = math.ceil(180.0 / config.beam_bin_deg)
            beam = np.clip(np.floor((elevation + 90.0) / config.beam_bin_deg).astype(np.int64), 0, bins - 1)
        else:
            bins, beam = self.MAX_RINGS, ring.astype(np.int64)
        return (np.bincount(a, minlength=self._azimuth_bins), np.bincount(beam, minlength=bins),
                np.bincount(beam, elevation, minlength=bins))

    def _beams(self, counts: np.ndarray, elevation_deg: np.ndarray) -> list[np.ndarray]:
        """The reference's beams, lowest first, each as its indices into the beam histogram.

        ``counts`` and ``elevation_deg`` (the mean elevation of its points) are per histogram bin.
        """
        if self._by_ring:
            rings = np.flatnonzero(counts >= 1)
            return [rings[i:i + 1] for i in np.argsort(elevation_deg[rings], kind='stable')]
        return [np.arange(start, start + length) for start, length in _runs(counts >= 1)]

    def _judge(self, xyz: np.ndarray, ring: np.ndarray | None) -> dict[str, float]:
        config = self.config
        keep = np.all(np.isfinite(xyz), axis=1) & (np.einsum('ni,ni->n', xyz, xyz) >= config.lidar_min_range_m ** 2)
        xyz, ring = xyz[keep], (ring[keep] if ring is not None else None)  # (N, 3) real returns
        azimuth_counts, beam_counts, elevation_sums = histograms = self._histograms(xyz, ring)
        out: dict[str, float] = {'points': float(len(xyz))}
        scatter = _scatter_fraction(xyz, config.scatter_range_m, config.scatter_voxel_m, config.scatter_min_points)
        if math.isfinite(scatter):
            out['scatter_fraction'] = scatter
            # Against this lidar's own clean level once learnt (a coarse scan pattern leaves more returns
            # alone); the first reference_min sweeps are learnt whatever they show.
            learnt = len(self._scatter_reference) >= config.reference_min
            floor = max(config.scatter_fraction, config.scatter_ratio * float(np.median(self._scatter_reference))) \
                if learnt else config.scatter_fraction
            state = _severity(scatter, min(floor, config.scatter_failed_fraction), config.scatter_failed_fraction)
            self._conditions['scatter'].step(state, 1.0 - scatter)
            if state is None or not learnt:
                self._scatter_reference.append(scatter)
        if len(self._reference) < config.reference_min:
            if len(xyz):
                self._reference.append(histograms)
            return out
        reference_azimuth = np.median([r[0] for r in self._reference], axis=0)  # (A,)
        reference_beams = np.median([r[1] for r in self._reference], axis=0)  # (B,)

        # Sectors: expected bins that lost (nearly) all their points, in arcs of sector_min_deg or more.
        expected = reference_azimuth >= config.sector_min_points
        lost = expected & (azimuth_counts < config.sector_empty_ratio * reference_azimuth)
        marks = np.where(lost, 1, np.where(expected, 0, -1))  # -1: not expected, joins a lost arc uncounted
        missing_deg, widest = 0.0, (0.0, math.nan, math.nan)
        lost_bins = np.zeros(self._azimuth_bins, bool)
        for start, length in _circular_runs(marks):
            members = (start + np.arange(length)) % self._azimuth_bins
            width = float(lost[members].sum()) * config.sector_bin_deg
            if width < config.sector_min_deg:
                continue
            missing_deg += width
            lost_bins[members[lost[members]]] = True
            if width > widest[0]:
                begin = -180.0 + start * config.sector_bin_deg
                widest = (width, _wrap_deg(begin), _wrap_deg(begin + length * config.sector_bin_deg))
        out.update(missing_sector_deg=missing_deg, sector_start_deg=widest[1], sector_end_deg=widest[2])
        sector_state = _severity(missing_deg, np.nextafter(0.0, 1.0), config.sector_failed_deg)  # any loss: degraded
        self._conditions['sector_loss'].step(sector_state, 1.0 - missing_deg / 360.0)

        # Beams: one is lost when it keeps under beam_empty_ratio of its reference (scaled to the
        # azimuth left) while a beam above it still returns. Too little azimuth left: not judged.
        kept = 1.0 - lost_bins[expected].sum() / max(int(expected.sum()), 1)
        beam_state = None
        if kept >= 0.25:
            elevation_deg = (np.sum([r[2] for r in self._reference], axis=0)
                             / np.maximum(np.sum([r[1] for r in self._reference], axis=0), 1))
            beams = self._beams(reference_beams, elevation_deg)
            references = np.array([reference_beams[b].sum() for b in beams])  # (K,) lowest beam first
            counts = np.array([beam_counts[b].sum() for b in beams], dtype=np.float64)  # (K,)
            expected_beam = references >= config.beam_min_points
            if expected_beam.any():  # a few stray returns between two beams are no beam
                expected_beam &= references >= config.beam_min_share * np.median(references[expected_beam])
            empty = expected_beam & (counts < config.beam_empty_ratio * kept * references)
            returning = expected_beam & ~empty & (counts >= config.beam_min_points * kept)
            above = np.flip(np.logical_or.accumulate(np.flip(returning)))  # this beam or one above returns
            above = np.r_[above[1:], False]
            missing, expected_beams = int((empty & above).sum()), int(expected_beam.sum())
            if missing:
                beam_state = 'failed' if missing >= config.beam_failed_fraction * expected_beams else 'degraded'
            out.update(missing_beams=float(missing), reference_beams=float(expected_beams))
            self._conditions['beam_loss'].step(beam_state, 1.0 - missing / max(expected_beams, 1))
        if sector_state is None and beam_state is None and len(xyz):
            self._reference.append(histograms)
        return out


def _scatter_fraction(xyz: np.ndarray, reach_m: float, voxel_m: float, min_points: int) -> float:
    """The share of the returns ``(N, 3)`` nearer than ``reach_m`` alone in their ``voxel_m`` cube; NaN
    with fewer than ``min_points`` such returns."""
    near = xyz[np.einsum('ni,ni->n', xyz, xyz) < reach_m ** 2]
    if len(near) < min_points:
        return math.nan
    side = int(math.ceil(reach_m / voxel_m)) + 1  # cells from the sensor to the reach, each way
    cell = np.floor(near.astype(np.float64) / voxel_m).astype(np.int64) + side
    key = (cell[:, 0] * (2 * side + 1) + cell[:, 1]) * (2 * side + 1) + cell[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return float(np.mean(counts[inverse] == 1))


# ---------------------------------------------------------------------------------------------
# Radar
# ---------------------------------------------------------------------------------------------

def _places(xy: np.ndarray, radius: float) -> int:
    """How many separate places the points ``(N, 2)`` are at: groups linked by gaps under ``radius``."""
    n = len(xy)
    if n < 2:
        return n
    near = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2) < radius  # (N, N)
    labels = np.arange(n)
    while True:  # each point takes the smallest label among its neighbours until none changes
        spread = np.where(near, labels[None, :], n).min(axis=1)
        if np.array_equal(spread, labels):
            return len(np.unique(labels))
        labels = spread


GHOST_LEARN_P = 0.01  # a scan with a suspect count this unlikely under the learnt rate is not learnt


class RadarHealth(_SensorHealth):
    """One radar: silence, rate and ghost returns (moving where the lidar shows nothing) above baseline."""

    modality = 'radar'
    content = ('ghosts',)

    def _reset_content(self) -> None:
        config = self.config
        self._recent: deque[list] = deque(maxlen=config.ghost_window)  # [suspects, returns, learnt or tainted]
        self._baseline: deque[int] = deque(maxlen=config.ghost_reference_scans)  # suspects in ordinary scans

    def update(self, stamp_ns: int, xyz_sensor: np.ndarray | None,
               supported: np.ndarray | None = None, scan_ns: int | None = None,
               moving: np.ndarray | None = None) -> HealthEstimate:
        """Judge one update: ``xyz_sensor`` the returns ``(N, 3)`` of a new scan in the radar frame, or
        ``None`` when no scan came since the last update; ``supported`` ``(N,)`` bool, whether each
        return has lidar or detection support nearby (None: unknown, ghosts are not judged);
        ``scan_ns`` the new scan's own stamp (default ``stamp_ns``): silence counts from it;
        ``moving`` ``(N,)`` bool, whether each return's compensated speed exceeds
        ``ghost_min_speed_mps`` (None: unknown, every unsupported return is a suspect).
        """
        if xyz_sensor is not None:
            xyz_sensor = np.asarray(xyz_sensor)
            if xyz_sensor.ndim != 2 or xyz_sensor.shape[1] != 3:
                raise ValueError(f'RadarHealth({self.sensor!r}): xyz_sensor must be (N, 3), got {xyz_sensor.shape}')
        for name, flags in (('supported', supported), ('moving', moving)):
            if flags is not None and (xyz_sensor is None or np.shape(flags) != (len(xyz_sensor),)
                                      or np.asarray(flags).dtype != np.bool_):
                raise ValueError(f'RadarHealth({self.sensor!r}): {name} must be (N,) bool for the N = '
                                 f'{None if xyz_sensor is None else len(xyz_sensor)} returns, got '
                                 f'{np.shape(flags)} {np.asarray(flags).dtype}')
        data_ns = stamp_ns if scan_ns is None else min(int(scan_ns), int(stamp_ns))
        fresh = xyz_sensor is not None and data_ns != self._last_data_ns
        estimates = self._timing(stamp_ns, fresh, data_ns)
        warming_up = supported is not None and len(self._baseline) < self.config.reference_min
        returns, fraction = math.nan, math.nan
        if fresh:
            returns = float(len(xyz_sensor))
            if supported is not None:
                suspect = ~np.asarray(supported) if moving is None else ~np.asarray(supported) & np.asarray(moving)
                fraction = self._judge(_places(xyz_sensor[suspect, :2], self.config.ghost_place_m), len(suspect))
        baseline = (float(np.mean(self._baseline)) if len(self._baseline) >= self.config.reference_min
                    else math.nan)
        estimates.update(returns=returns, ghost_fraction=fraction, ghost_baseline=baseline)
        return self._estimate(estimates, warming_up)

    def _judge(self, suspects: int, returns: int) -> float:
        """Steps 'ghosts' with one scan's counts; returns the suspect share pooled over the window.

        The baseline learns a scan only once it leaves the window, and only if no window that held it
        was ghostly and its own count is not unlikely under the learnt rate: ghosts that creep in (one,
        then two, three a scan) are judged against the count from before them, not taught to it.
        """
        config = self.config
        if len(self._recent) == self._recent.maxlen:
            leaving, _, done = self._recent[0]
            self._learn(leaving, done)
        warm = len(self._baseline) >= config.reference_min
        if not warm:
            self._baseline.append(suspects)
        self._recent.append([suspects, returns, not warm])  # (suspects, returns, learnt or tainted)
        pooled = sum(entry[0] for entry in self._recent)
        pooled_returns = sum(entry[1] for entry in self._recent)
        fraction = pooled / pooled_returns if pooled_returns else math.nan
        if warm and pooled_returns >= config.ghost_min_returns:
            ghostly = pooled >= config.ghost_min_count and fraction >= config.ghost_min_fraction \
                and self._excess(pooled, len(self._recent)) < config.ghost_p
            state = ('failed' if fraction >= config.ghost_failed_fraction else 'degraded') if ghostly else None
            self._conditions['ghosts'].step(state, 1.0 - fraction)
            if ghostly:
                for entry in self._recent:
                    entry[2] = True
        return fraction

    def _excess(self, count: int, scans: int) -> float:
        """``excess_p`` against the baseline with one more scan of one suspect (so that a clean past does
        not make a single suspect significant)."""
        return excess_p(count, scans, sum(self._baseline) + 1, len(self._baseline) + 1)

    def _learn(self, suspects: int, done: bool) -> None:
        if not done and self._excess(suspects, 1) >= GHOST_LEARN_P:
            self._baseline.append(suspects)


def excess_p(count: int, scans: int, base_count: int, base_scans: int) -> float:
    """How likely ``count`` or more events in ``scans`` scans are, given ``base_count`` in ``base_scans``
    scans at the same unknown rate: the conditional test of two Poisson counts (given the total, the
    window's share is binomial with p = scans / (scans + base_scans)), which weighs the baseline's own
    uncertainty, unlike a test against its mean."""
    total = count + base_count
    if count <= 0:
        return 1.0
    if base_scans <= 0:
        return 1.0 if base_count else 0.0
    p = scans / (scans + base_scans)
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + k * log_p + (total - k) * log_q
             for k in range(count, total + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def health_monitors(config: FusionConfig) -> dict[str, CameraHealth | LidarHealth | RadarHealth]:
    """One monitor per configured sensor, at its nominal rate."""
    kinds = {'camera': CameraHealth, 'lidar': LidarHealth, 'radar': RadarHealth}
    return {name: kinds[sensor.modality](name, config.health, rate_hz=sensor.rate_hz)
            for name, sensor in config.sensors.items()}
