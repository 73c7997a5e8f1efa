"""Fault injection: what goes wrong with a sensor, when, and what it does to the sensor's output.

Faults change what a sensor records, never the ground truth. A fault file is a YAML mapping with one
key, ``faults``, a list of ``FaultSpec`` entries::

    faults:
      - {type: camera_occlusion, sensor: cam_front, start_s: 3.0, end_s: 12.0, region: [0.1, 0.4, 0.5, 0.9]}
      - {type: lidar_sector_dropout, sensor: lidar_top, start_s: 6.0, end_s: 16.0, sector_deg: [150, -150]}
      - {type: time_offset, sensor: radar_front, start_s: 0.0, end_s: 20.0, offset_ms: 80}

Times are seconds from the scene start; a fault is active for ``start_s <= t < end_s``. Each entry
takes only the parameters of its type (a parameter of another type set to anything but its default is
an error):

=======================  ===========  =================================================================
type                     applies to   parameters (default)
=======================  ===========  =================================================================
camera_blackout          cameras      none: every pixel is black
camera_frozen            cameras      none: the first frame of the fault period repeats until the end
camera_occlusion         cameras      ``region`` (0.3, 0.3, 0.7, 0.7): normalised x0, y0, x1, y1 of an
                                      opaque mud patch (x right, y down, both in [0, 1])
camera_glare             cameras      ``intensity`` (0.5) in (0, 1]: over-exposure plus a bright bloom
lidar_sector_dropout     the lidar    ``sector_deg`` (-30, 30): no points with azimuth from the first to
                                      the second angle, counter-clockwise, half-open [from, to)
                                      (azimuth = atan2(y, x) in the lidar frame, 0 straight ahead, 90 to
                                      the left); may wrap: (150, -150) is the 60 degrees behind
lidar_beam_loss          the lidar    ``beams`` (empty = every other beam of the upper half): the ring
                                      indices that return nothing (ring 0 is the lowest beam)
lidar_rain               the lidar    ``intensity`` (0.5): more range noise (sigma 0.2 m x intensity),
                                      dropouts (25 % x intensity) and spurious near returns (scatter,
                                      5 % of the points x intensity)
radar_silence            radars       none: the radar publishes nothing
radar_ghost_targets      radars       ``intensity`` (0.5): multipath mirrors of real returns (each with
                                      probability 0.5 x intensity, at 1.2-1.8 x the range and mirrored
                                      azimuth) plus random ghosts (10 x intensity a scan on average)
extrinsic_drift          any sensor   ``rotation_deg`` (0, 0, 1): roll, pitch, yaw about the sensor
                                      body's x forward, y left, z up (a camera's too, not its optical
                                      axes); rotation angle at most 10 degrees, presets use 0.5-3.
                                      ``translation_m`` (0, 0, 0): at most 1 m. The published
                                      calibration stays nominal.
time_offset              any sensor   ``offset_ms`` (50) in [-500, 500], not 0: message stamp = true
                                      time + offset; presets use 20-200 ms
dropped_messages         any sensor   ``drop_probability`` (0.3) in (0, 1]: each message is lost with
                                      this probability
=======================  ===========  =================================================================

Named presets (``camera_blackout``, ..., one per type, plus ``none`` and ``mixed``) are YAML files in
``fault_presets/`` beside this module, timed for a 20 s scene; ``load_faults(..., duration_s=...)``
scales their times to the scene (a user's file is taken as written).

The simulator applies a schedule per message: ``FaultInjector.drop`` decides whether a message is
published at all, ``camera``/``lidar``/``radar`` change the measurement, ``pose_error`` gives the
sensor's true pose (the one it renders from) and ``stamp_offset_ns`` its stamp. Every random draw
comes from a generator seeded by (scene seed, sensor name, purpose, message time), so the output does
not depend on the order in which sensors are rendered. At each lidar stamp the simulator records the
active faults on ``/mmfusion/faults`` (``fault_statuses``); ``parse_fault_statuses`` reads them back.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from ..config import config_from_dict, read_yaml
from ..errors import ConfigError, DecodeError
from ..types import DiagnosticStatus, PointCloud, RadarPoints, RigidTransform
from .rig import BODY_TO_OPTICAL, Rig

__all__ = [
    'FAULT_MODALITIES',
    'FAULT_PARAMETERS',
    'FAULT_PRESET_DIR',
    'FAULT_TYPES',
    'PRESET_DURATION_S',
    'FaultInjector',
    'FaultSchedule',
    'FaultSpec',
    'RecordedFault',
    'affected_objects',
    'default_beams',
    'fault_preset_names',
    'fault_statuses',
    'load_faults',
    'parse_fault_statuses',
    'pose_error',
    'sensor_modality',
    'stamp_offset_ns',
]

FAULT_PRESET_DIR = Path(__file__).resolve().parent / 'fault_presets'
PRESET_DURATION_S = 20.0  # the scene length the presets' times are written for

FaultType = Literal['camera_blackout', 'camera_frozen', 'camera_occlusion', 'camera_glare',
                    'lidar_sector_dropout', 'lidar_beam_loss', 'lidar_rain',
                    'radar_silence', 'radar_ghost_targets',
                    'extrinsic_drift', 'time_offset', 'dropped_messages']
FAULT_TYPES: tuple[str, ...] = typing.get_args(FaultType)

_ANY = ('camera', 'lidar', 'radar')
# The modalities each fault type applies to.
FAULT_MODALITIES: Mapping[str, tuple[str, ...]] = {
    **{t: ('camera',) for t in FAULT_TYPES if t.startswith('camera_')},
    **{t: ('lidar',) for t in FAULT_TYPES if t.startswith('lidar_')},
    **{t: ('radar',) for t in FAULT_TYPES if t.startswith('radar_')},
    'extrinsic_drift': _ANY, 'time_offset': _ANY, 'dropped_messages': _ANY,
}
# The FaultSpec fields each fault type reads.
FAULT_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    'camera_blackout': (), 'camera_frozen': (), 'camera_occlusion': ('region',),
    'camera_glare': ('intensity',), 'lidar_sector_dropout': ('sector_deg',),
    'lidar_beam_loss': ('beams',), 'lidar_rain': ('intensity',), 'radar_silence': (),
    'radar_ghost_targets': ('intensity',), 'extrinsic_drift': ('rotation_deg', 'translation_m'),
    'time_offset': ('offset_ms',), 'dropped_messages': ('drop_probability',),
}
_PARAMETER_NAMES = ('region', 'sector_deg', 'beams', 'intensity', 'rotation_deg', 'translation_m',
                    'offset_ms', 'drop_probability')

MAX_DRIFT_DEG = 10.0
MAX_DRIFT_M = 1.0
MAX_OFFSET_MS = 500.0


def _rpy_rotation(roll_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)``, the rig's mount convention."""
    r, p, y = np.radians([roll_deg, pitch_deg, yaw_deg])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rotation_angle_deg(rotation: np.ndarray) -> float:
    cos_angle = (float(np.trace(rotation)) - 1.0) / 2.0
    return math.degrees(math.acos(min(1.0, max(-1.0, cos_angle))))


def _sector_width(sector_deg: tuple[float, float]) -> float:
    return (sector_deg[1] - sector_deg[0]) % 360.0


def default_beams(beam_count: int) -> tuple[int, ...]:
    """Every other beam of the upper half: ``lidar_beam_loss``'s default for a lidar of this many."""
    return tuple(range(beam_count // 2, beam_count, 2))


@dataclass(frozen=True)
class FaultSpec:
    """One fault: its type, the sensor, when, and the parameters of its type (see the module doc)."""

    type: FaultType
    sensor: str  # a rig sensor name
    start_s: float  # seconds from the scene start, >= 0
    end_s: float  # > start_s; active while start_s <= t < end_s
    region: tuple[float, float, float, float] = (0.3, 0.3, 0.7, 0.7)  # camera_occlusion
    sector_deg: tuple[float, float] = (-30.0, 30.0)  # lidar_sector_dropout
    beams: tuple[int, ...] = ()  # lidar_beam_loss; empty: default_beams(rig.lidar.beams)
    intensity: float = 0.5  # camera_glare, lidar_rain, radar_ghost_targets
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 1.0)  # extrinsic_drift
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # extrinsic_drift
    offset_ms: float = 50.0  # time_offset
    drop_probability: float = 0.3  # dropped_messages

    def __post_init__(self) -> None:
        if self.type not in FAULT_TYPES:
            raise ConfigError(f'type: expected one of {", ".join(FAULT_TYPES)}, got {self.type!r}')
        # Normalise sequences to tuples of numbers so specs hash and compare by value.
        for name, kind in (('region', float), ('sector_deg', float), ('beams', int),
                           ('rotation_deg', float), ('translation_m', float)):
            object.__setattr__(self, name, tuple(kind(v) for v in getattr(self, name)))
        for name in ('start_s', 'end_s', 'intensity', 'offset_ms', 'drop_probability'):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ConfigError(f'{name}: must be finite, got {value}')
            object.__setattr__(self, name, value)
        if not self.sensor:
            raise ConfigError('sensor: must name a rig sensor')
        if self.start_s < 0:
            raise ConfigError(f'start_s: must be >= 0, got {self.start_s:g}')
        if not self.end_s > self.start_s:
            raise ConfigError(f'end_s: must be after start_s ({self.start_s:g} s), got {self.end_s:g}')
        own = FAULT_PARAMETERS[self.type]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in _PARAMETER_NAMES:
            if name not in own and getattr(self, name) != defaults[name]:
                raise ConfigError(f'{name}: does not apply to {self.type} (its parameters: '
                                  f'{", ".join(own) or "none"})')
        self._check_ranges()

    def _check_ranges(self) -> None:
        if len(self.region) != 4:
            raise ConfigError(f'region: expected x0, y0, x1, y1, got {list(self.region)}')
        x0, y0, x1, y1 = self.region
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ConfigError(f'region: needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got '
                              f'{list(self.region)}')
        if len(self.sector_deg) != 2 or any(not -360.0 <= a <= 360.0 for a in self.sector_deg):
            raise ConfigError(f'sector_deg: expected two angles in [-360, 360], got {list(self.sector_deg)}')
        if _sector_width(self.sector_deg) == 0.0:
            raise ConfigError(f'sector_deg: the sector {list(self.sector_deg)} is empty')
        if any(b < 0 for b in self.beams) or len(set(self.beams)) != len(self.beams):
            raise ConfigError(f'beams: expected distinct ring indices >= 0, got {list(self.beams)}')
        if not 0.0 < self.intensity <= 1.0:
            raise ConfigError(f'intensity: must be within (0, 1], got {self.intensity:g}')
        if len(self.rotation_deg) != 3 or not all(map(math.isfinite, self.rotation_deg)):
            raise ConfigError(f'rotation_deg: expected finite roll, pitch, yaw, got '
                              f'{list(self.rotation_deg)}')
        angle = _rotation_angle_deg(_rpy_rotation(*self.rotation_deg))
        if angle > MAX_DRIFT_DEG:
            raise ConfigError(f'rotation_deg: rotates by {angle:.3g} deg, more than {MAX_DRIFT_DEG:g} '
                              f'(presets use 0.5-3)')
        if len(self.translation_m) != 3 or not all(map(math.isfinite, self.translation_m)):
            raise ConfigError(f'translation_m: expected finite x, y, z, got {list(self.translation_m)}')
        shift = float(np.linalg.norm(self.translation_m))
        if shift > MAX_DRIFT_M:
            raise ConfigError(f'translation_m: shifts by {shift:.3g} m, more than {MAX_DRIFT_M:g}')
        if self.type == 'extrinsic_drift' and angle == 0.0 and shift == 0.0:
            raise ConfigError('rotation_deg: extrinsic_drift needs a rotation or a translation')
        if not -MAX_OFFSET_MS <= self.offset_ms <= MAX_OFFSET_MS or self.offset_ms == 0.0:
            raise ConfigError(f'offset_ms: must be within [-{MAX_OFFSET_MS:g}, {MAX_OFFSET_MS:g}] and not '
                              f'0, got {self.offset_ms:g} (presets use 20-200)')
        if not 0.0 < self.drop_probability <= 1.0:
            raise ConfigError(f'drop_probability: must be within (0, 1], got {self.drop_probability:g}')

    def is_active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    @property
    def params(self) -> dict[str, object]:
        """The parameters this fault's type reads, by name."""
        return {name: getattr(self, name) for name in FAULT_PARAMETERS[self.type]}


def sensor_modality(rig: Rig, sensor: str) -> str:
    """``camera``, ``lidar`` or ``radar``; ``KeyError`` names the rig's sensors."""
    for modality, mounts in (('camera', rig.camera_mounts), ('lidar', rig.lidar_mounts),
                             ('radar', rig.radar_mounts)):
        if sensor in mounts:
            return modality
    raise KeyError(f'unknown sensor {sensor!r}; the rig has {", ".join(rig.sensors)}')


@dataclass(frozen=True)
class FaultSchedule:
    """Every fault of one scene."""

    faults: tuple[FaultSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, 'faults', tuple(self.faults))

    def __len__(self) -> int:
        return len(self.faults)

    def active(self, sensor: str, t: float) -> tuple[FaultSpec, ...]:
        """The faults of ``sensor`` active at ``t`` (seconds from the scene start), in schedule order."""
        return tuple(f for f in self.faults if f.sensor == sensor and f.is_active(t))

    def active_any(self, t: float) -> tuple[FaultSpec, ...]:
        """Every fault active at ``t``, whatever the sensor: what ``/mmfusion/faults`` records."""
        return tuple(f for f in self.faults if f.is_active(t))

    def for_rig(self, rig: Rig) -> FaultSchedule:
        """Check sensors, modalities and beams against ``rig``; fill in the default beams.

        Errors start with the key path (``faults[1].sensor: ...``).
        """
        checked = []
        for i, fault in enumerate(self.faults):
            try:
                modality = sensor_modality(rig, fault.sensor)
            except KeyError:
                raise ConfigError(f'faults[{i}].sensor: unknown sensor {fault.sensor!r}; the rig has '
                                  f'{", ".join(rig.sensors)}') from None
            allowed = FAULT_MODALITIES[fault.type]
            if modality not in allowed:
                fits = [s for s in rig.sensors if sensor_modality(rig, s) in allowed]
                raise ConfigError(f'faults[{i}].type: {fault.type} applies to {"/".join(allowed)} '
                                  f'sensors ({", ".join(fits)}), not to {modality} {fault.sensor}')
            if fault.type == 'lidar_beam_loss':
                count = rig.lidar.beams
                if not fault.beams:
                    fault = dataclasses.replace(fault, beams=default_beams(count))
                elif max(fault.beams) >= count:
                    raise ConfigError(f'faults[{i}].beams: ring {max(fault.beams)} does not exist; the '
                                      f'lidar has {count} beams (0-{count - 1})')
            checked.append(fault)
        return FaultSchedule(tuple(checked))

    def scaled(self, factor: float) -> FaultSchedule:
        """Every start and end multiplied by ``factor`` (> 0)."""
        return FaultSchedule(tuple(
            dataclasses.replace(f, start_s=f.start_s * factor, end_s=f.end_s * factor) for f in self.faults))


def fault_preset_names() -> list[str]:
    return sorted(p.stem for p in FAULT_PRESET_DIR.glob('*.yaml'))


def load_faults(name_or_path: str | Path, rig: Rig, duration_s: float | None = None) -> FaultSchedule:
    """A named preset (``mixed``) or a YAML fault file, checked against ``rig``.

    With ``duration_s``, a preset's times (written for a 20 s scene) are scaled to the scene, and a
    file's faults must start before the scene ends. Errors are one line starting with the file and
    the key path.
    """
    path = Path(name_or_path)
    preset = False
    if not path.suffix and not path.exists():
        path = FAULT_PRESET_DIR / f'{name_or_path}.yaml'
        if not path.is_file():
            raise ConfigError(f'unknown fault preset {str(name_or_path)!r}; presets: '
                              f'{", ".join(fault_preset_names())}, or give a YAML file')
        preset = True
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f'{path}: scene duration must be positive, got {duration_s}')
    data = read_yaml(path, 'fault file')
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping with the key faults (a list), got '
                          f'{type(data).__name__}')
    try:
        schedule = config_from_dict(FaultSchedule, data)
        if preset and duration_s is not None:
            schedule = schedule.scaled(duration_s / PRESET_DURATION_S)
        elif duration_s is not None:
            for i, fault in enumerate(schedule.faults):
                if fault.start_s >= duration_s:
                    raise ConfigError(f'faults[{i}].start_s: {fault.start_s:g} s is not within the '
                                      f'{duration_s:g} s scene')
        return schedule.for_rig(rig)
    except ConfigError as err:
        raise ConfigError(f'{path}: {err}') from None


# --- pose and stamp ---------------------------------------------------------------------------------


def pose_error(active: Sequence[FaultSpec], rig: Rig) -> RigidTransform | None:
    """The composed ``extrinsic_drift`` of ``active``, in the sensor's published frame; None if none.

    ``rig.sensor_to_base(sensor) @ pose_error(...)`` is where the sensor truly is (what it renders
    from) while its published calibration stays ``rig.sensor_to_base(sensor)``. Drifts are given in
    the sensor body frame (x forward, y left, z up); for a camera the error is returned in its
    optical frame, which is what the rig publishes. Several drifts compose in schedule order.
    """
    drifts = [f for f in active if f.type == 'extrinsic_drift']
    if not drifts:
        return None
    error = RigidTransform.identity()
    for drift in drifts:
        error = error @ RigidTransform(_rpy_rotation(*drift.rotation_deg), np.array(drift.translation_m))
    if drifts[0].sensor in rig.camera_mounts:
        optical = RigidTransform(BODY_TO_OPTICAL, np.zeros(3))  # optical -> body
        error = optical.inverse() @ error @ optical
    return error


def stamp_offset_ns(active: Sequence[FaultSpec]) -> int:
    """What to add to the true time for the message stamp: the sum of the active ``time_offset``."""
    return round(sum(f.offset_ms for f in active if f.type == 'time_offset') * 1e6)


# --- applying faults to measurements ----------------------------------------------------------------

_PURPOSE_DROP, _PURPOSE_RAIN, _PURPOSE_GHOSTS, _PURPOSE_MUD, _PURPOSE_GLARE = range(1, 6)


class _SensorState:
    """What one sensor's faults remember between messages: frozen frames and fixed textures."""

    def __init__(self, seed: int, sensor: str) -> None:
        self.key = (seed, zlib.crc32(sensor.encode()))
        self.frozen: dict[FaultSpec, np.ndarray] = {}  # camera_frozen -> the frame it repeats
        self.mud: dict[tuple[FaultSpec, tuple[int, ...]], np.ndarray] = {}  # (fault, shape) -> patch

    def rng(self, purpose: int, stamp: int) -> np.random.Generator:
        """A generator that depends only on (seed, sensor, purpose, stamp), never on call order."""
        return np.random.default_rng(np.random.SeedSequence([*self.key, purpose, stamp % (1 << 63)]))


class FaultInjector:
    """Applies one scene's schedule to each sensor's messages, deterministically given the seed.

    ``rig`` supplies the lidar's beam count (default beams) and range limits and the radar's field
    of view and range (where ghosts may appear).
    """

    def __init__(self, schedule: FaultSchedule, seed: int, rig: Rig | None = None) -> None:
        if seed < 0:
            raise ValueError(f'FaultInjector: seed must be >= 0, got {seed}')
        self.schedule = schedule
        self.seed = int(seed)
        self.rig = rig if rig is not None else Rig()
        self._index = {fault: i for i, fault in reversed(list(enumerate(schedule.faults)))}
        self._states: dict[str, _SensorState] = {}

    def _state(self, sensor: str) -> _SensorState:
        if sensor not in self._states:
            self._states[sensor] = _SensorState(self.seed, sensor)
        return self._states[sensor]

    def drop(self, sensor: str, t: float) -> bool:
        """Whether the message of ``sensor`` at ``t`` is not published (radar silence, dropped)."""
        active = self.schedule.active(sensor, t)
        if any(f.type == 'radar_silence' for f in active):
            return True
        drops = [f for f in active if f.type == 'dropped_messages']
        if not drops:
            return False
        rng = self._state(sensor).rng(_PURPOSE_DROP, round(t * 1e9))
        return bool(np.any(rng.random(len(drops)) < [f.drop_probability for f in drops]))

    # cameras

    def camera(self, sensor: str, t: float, pixels: np.ndarray) -> np.ndarray:
        """The image the camera records: frozen, then occluded, glared, blacked out, as active.

        Always a new array of the same shape and dtype; pixels a fault does not reach are unchanged.
        """
        active = self.schedule.active(sensor, t)
        state = self._state(sensor)
        out = np.array(pixels, copy=True)
        for fault in active:
            if fault.type == 'camera_frozen':
                if fault not in state.frozen:
                    state.frozen[fault] = out.copy()
                first = state.frozen[fault]
                if first.shape == out.shape:
                    out = first.copy()
        for fault in active:
            if fault.type == 'camera_occlusion':
                self._occlude(state, fault, out)
        for fault in active:
            if fault.type == 'camera_glare':
                out = self._glare(state, fault, out)
        if any(f.type == 'camera_blackout' for f in active):
            out[...] = 0
        return out

    def _occlude(self, state: _SensorState, fault: FaultSpec, out: np.ndarray) -> None:
        rows, cols = _region_slices(fault.region, out.shape[1], out.shape[0])
        patch_shape = (rows.stop - rows.start, cols.stop - cols.start, *out.shape[2:])
        key = (fault, patch_shape)
        if key not in state.mud:
            state.mud[key] = _mud_patch(state.rng(_PURPOSE_MUD, self._index[fault]), patch_shape, out.dtype)
        out[rows, cols] = state.mud[key]

    def _glare(self, state: _SensorState, fault: FaultSpec, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        top = float(np.iinfo(image.dtype).max) if image.dtype.kind in 'ui' else 1.0
        k = fault.intensity
        rng = state.rng(_PURPOSE_GLARE, self._index[fault])  # the light source stays put
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.1, 0.4) * height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        diagonal = math.hypot(width, height)
        sigma = (0.12 + 0.25 * k) * diagonal
        bloom = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))  # (H, W)
        if image.ndim == 3:
            bloom = bloom[..., None] * np.array([1.0, 0.97, 0.88], np.float32)[:image.shape[2]]
        lit = image.astype(np.float32) * (1.0 + 0.8 * k) + top * (0.15 * k + 1.5 * k * bloom)
        return np.clip(lit, 0, top).astype(image.dtype)

    # lidar

    def lidar(self, sensor: str, t: float, cloud: PointCloud) -> PointCloud:
        """The sweep the lidar records: beams and sectors removed, then rain, as active.

        Points a fault does not reach keep their values bit for bit; every field keeps its dtype.
        Azimuth is ``atan2(y, x)`` of the points in the cloud's (the lidar's) frame.
        """
        active = self.schedule.active(sensor, t)
        keep = np.ones(len(cloud), bool)
        for fault in active:
            if fault.type == 'lidar_beam_loss':
                beams = fault.beams or default_beams(self.rig.lidar.beams)
                keep &= ~np.isin(cloud.field('ring'), beams)
            elif fault.type == 'lidar_sector_dropout':
                keep &= ~_in_sector(_azimuth_deg(cloud.xyz), fault.sector_deg)
        xyz, fields = cloud.xyz, dict(cloud.fields)
        if not keep.all():
            xyz, fields = xyz[keep], {name: values[keep] for name, values in fields.items()}
        for fault in active:
            if fault.type == 'lidar_rain':
                xyz, fields = self._rain(self._state(sensor), fault, t, xyz, fields)
        if xyz is cloud.xyz:
            return cloud
        return dataclasses.replace(cloud, xyz=xyz, fields=fields)

    def _rain(self, state: _SensorState, fault: FaultSpec, t: float, xyz: np.ndarray,
              fields: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        count, k = len(xyz), fault.intensity  # xyz (N, 3) float32
        rng = state.rng(_PURPOSE_RAIN, round(t * 1e9) * 64 + self._index[fault] % 64)
        kept = rng.random(count) >= 0.25 * k
        xyz, fields = xyz[kept], {name: values[kept] for name, values in fields.items()}
        ranges = np.linalg.norm(xyz.astype(np.float64), axis=1)  # (M,)
        noisy = np.maximum(ranges + rng.normal(0.0, 0.2 * k, len(ranges)), 0.05)
        scale = np.divide(noisy, ranges, out=np.ones_like(ranges), where=ranges > 1e-6)
        noisy_xyz = (xyz * scale[:, None]).astype(np.float32)
        # Scatter: spurious returns off drops close to the sensor, along directions the lidar fired.
        spurious = int(rng.poisson(0.05 * k * len(xyz))) if len(xyz) else 0
        source = rng.integers(0, max(len(xyz), 1), spurious)
        near_max = np.minimum(ranges[source], self.rig.lidar.min_range + 7.0)
        near = rng.uniform(self.rig.lidar.min_range, np.maximum(near_max, self.rig.lidar.min_range))
        near_scale = np.divide(near, ranges[source], out=np.zeros_like(near), where=ranges[source] > 1e-6)
        scatter_xyz = (xyz[source] * near_scale[:, None]).astype(np.float32)
        scatter_fields = {name: values[source] for name, values in fields.items()}
        if 'intensity' in scatter_fields:
            weak = scatter_fields['intensity'].astype(np.float64) * rng.uniform(0.02, 0.2, spurious)
            scatter_fields['intensity'] = weak.astype(fields['intensity'].dtype)
        out_fields = {name: np.concatenate([values, scatter_fields[name]]) for name, values in fields.items()}
        return np.concatenate([noisy_xyz, scatter_xyz]), out_fields

    # radar

    def radar(self, sensor: str, t: float, radar: RadarPoints) -> RadarPoints:
        """The scan the radar records: the real returns first, unchanged, then any ghosts."""
        ghosts = [f for f in self.schedule.active(sensor, t) if f.type == 'radar_ghost_targets']
        if not ghosts:
            return radar
        parts = [_radar_columns(radar)]
        for fault in ghosts:
            rng = self._state(sensor).rng(_PURPOSE_GHOSTS, round(t * 1e9) * 64 + self._index[fault] % 64)
            parts.append(self._ghosts(rng, fault.intensity, parts[0]))
        columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        fields = {name: columns.pop(f'field:{name}') for name in radar.fields}
        return dataclasses.replace(radar, fields=fields, **columns)

    def _ghosts(self, rng: np.random.Generator, k: float,
                real: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self.rig.radar
        count = len(real['xyz'])
        # Multipath mirrors: a real return seen again farther away, on the other side of boresight.
        source = np.flatnonzero(rng.random(count) < 0.5 * k)
        mirror = {name: values[source].copy() for name, values in real.items()}
        factor = rng.uniform(1.2, 1.8, len(source))
        xy = mirror['xyz'][:, :2].astype(np.float64)
        reach = np.linalg.norm(xy, axis=1)
        factor = np.minimum(factor, np.divide(model.max_range, reach, out=np.full_like(reach, 1.0),
                                              where=reach > 1e-6))
        mirror['xyz'][:, 0] = (xy[:, 0] * factor).astype(np.float32)
        mirror['xyz'][:, 1] = (-xy[:, 1] * factor).astype(np.float32)
        for name in ('velocity', 'velocity_comp'):
            mirror[name][:, 1] = -mirror[name][:, 1]
        mirror['rcs'] = (mirror['rcs'] - rng.uniform(3.0, 10.0, len(source))).astype(np.float32)
        # Random ghosts anywhere in the field of view, with plausible rcs and doppler.
        extra = int(rng.poisson(10.0 * k))
        half = math.radians(min(model.hfov_deg, 359.0) / 2)
        azimuth = rng.uniform(-half, half, extra)
        distance = rng.uniform(2.0, model.max_range, extra)
        doppler = rng.uniform(-15.0, 15.0, extra)
        direction = np.stack([np.cos(azimuth), np.sin(azimuth)], axis=1)  # (E, 2)
        velocity = (doppler[:, None] * direction).astype(np.float32)
        random = {
            'xyz': np.stack([distance * direction[:, 0], distance * direction[:, 1],
                             rng.uniform(-0.3, 1.0, extra)], axis=1).astype(np.float32),
            'doppler': doppler.astype(np.float32),
            'rcs': np.clip(rng.normal(0.0, 5.0, extra), -10.0, 20.0).astype(np.float32),
            'velocity': velocity, 'velocity_comp': velocity.copy(),
        }
        for name, values in real.items():
            if name.startswith('field:'):  # other channels: borrowed from a real return, else zero
                random[name] = (values[rng.integers(0, count, extra)] if count
                                else np.zeros((extra, *values.shape[1:]), values.dtype))
        return {name: np.concatenate([mirror[name], random[name]]) for name in real}


def _radar_columns(radar: RadarPoints) -> dict[str, np.ndarray]:
    columns = {'xyz': radar.xyz, 'doppler': radar.doppler, 'rcs': radar.rcs, 'velocity': radar.velocity,
               'velocity_comp': radar.velocity_comp}
    columns.update({f'field:{name}': values for name, values in radar.fields.items()})
    return columns


def _region_slices(region: tuple[float, float, float, float], width: int,
                   height: int) -> tuple[slice, slice]:
    """Rows and columns of a normalised (x0, y0, x1, y1) region; at least one pixel each way."""
    x0, y0, x1, y1 = region
    c0, r0 = min(int(round(x0 * width)), width - 1), min(int(round(y0 * height)), height - 1)
    c1, r1 = max(int(round(x1 * width)), c0 + 1), max(int(round(y1 * height)), r0 + 1)
    return slice(r0, r1), slice(c0, c1)


def _mud_patch(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An opaque brown patch with a blotchy texture, ``shape`` (h, w[, c])."""
    height, width = shape[:2]
    coarse = rng.uniform(0.55, 1.1, (max(2, height // 12), max(2, width // 12))).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    texture *= rng.uniform(0.9, 1.1, (height, width)).astype(np.float32)  # grain
    colour = np.array([0.36, 0.26, 0.15], np.float32)  # dried mud, RGB
    top = float(np.iinfo(dtype).max) if np.dtype(dtype).kind in 'ui' else 1.0
    if len(shape) == 3:
        channels = colour[:shape[2]] if shape[2] <= 3 else np.full(shape[2], colour.mean(), np.float32)
        patch = texture[..., None] * channels
    else:
        patch = texture * colour.mean()
    return np.clip(patch * top, 0, top).astype(dtype)


def _azimuth_deg(xyz: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(xyz[:, 1].astype(np.float64), xyz[:, 0].astype(np.float64)))


def _in_sector(azimuth_deg: np.ndarray, sector_deg: tuple[float, float]) -> np.ndarray:
    """Whether each azimuth lies counter-clockwise from ``sector_deg[0]`` to ``sector_deg[1]``."""
    return (azimuth_deg - sector_deg[0]) % 360.0 < _sector_width(sector_deg)


# --- which objects a fault touches ------------------------------------------------------------------


def affected_objects(fault: FaultSpec, centers: np.ndarray, ids: Sequence[str],
                     rig: Rig) -> tuple[str, ...]:
    """The ids of the objects ``fault`` hides or distorts, given their box centres ``(N, 3)`` in the
    fault sensor's published frame (a camera's optical frame) at that moment.

    Cameras: centre in front of the camera (z > 0.1 m) and projecting inside the image (inside the
    region for an occlusion). Lidar: within ``rig.lidar`` range, and with the centre's azimuth in the
    sector for a sector dropout. Radar: within ``rig.radar`` range and horizontal field of view.
    Drift, time offset and dropped messages affect whatever is in that sensor's field of view.
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 3)  # (N, 3)
    if len(ids) != len(centers):
        raise ValueError(f'affected_objects: {len(centers)} centres but {len(ids)} ids')
    modality = sensor_modality(rig, fault.sensor)
    if modality == 'camera':
        intr = rig.camera.intrinsics(fault.sensor)
        ahead = centers[:, 2] > 0.1
        depth = np.where(ahead, centers[:, 2], 1.0)
        u = intr.k[0, 0] * centers[:, 0] / depth + intr.k[0, 2]
        v = intr.k[1, 1] * centers[:, 1] / depth + intr.k[1, 2]
        x0, y0, x1, y1 = fault.region if fault.type == 'camera_occlusion' else (0.0, 0.0, 1.0, 1.0)
        hit = (ahead & (u >= x0 * intr.width) & (u < x1 * intr.width)
               & (v >= y0 * intr.height) & (v < y1 * intr.height))
    elif modality == 'lidar':
        distance = np.linalg.norm(centers, axis=1)
        hit = (distance >= rig.lidar.min_range) & (distance <= rig.lidar.max_range)
        if fault.type == 'lidar_sector_dropout':
            hit &= _in_sector(_azimuth_deg(centers), fault.sector_deg)
    else:
        distance = np.linalg.norm(centers, axis=1)
        hit = ((distance <= rig.radar.max_range)
               & (np.abs(_azimuth_deg(centers)) <= rig.radar.hfov_deg / 2))
    return tuple(str(ids[i]) for i in np.flatnonzero(hit))


# --- recording on /mmfusion/faults ------------------------------------------------------------------


class RecordedFault(NamedTuple):
    """One fault as ``/mmfusion/faults`` carries it."""

    type: str
    sensor: str
    start_ns: int
    end_ns: int
    object_ids: tuple[str, ...]
    params: dict[str, object]  # the type's parameters, typed as in FaultSpec


_SENTENCES = {
    'camera_blackout': 'image is black',
    'camera_frozen': 'image is frozen',
    'camera_occlusion': 'part of the image is covered',
    'camera_glare': 'image is overexposed by glare',
    'lidar_sector_dropout': 'no points in an azimuth sector',
    'lidar_beam_loss': 'some beams return nothing',
    'lidar_rain': 'heavy rain adds noise, dropouts and scatter',
    'radar_silence': 'radar publishes nothing',
    'radar_ghost_targets': 'ghost targets among the returns',
    'extrinsic_drift': 'sensor pose drifted from its calibration',
    'time_offset': 'stamps are offset from the true time',
    'dropped_messages': 'messages are being dropped',
}


def _format_value(value: object) -> str:
    if isinstance(value, tuple):
        return ','.join(_format_value(v) for v in value)
    return repr(float(value)) if isinstance(value, float) else str(value)


def fault_statuses(active: Sequence[tuple[FaultSpec, Sequence[str]]],
                   start_ns: int) -> list[DiagnosticStatus]:
    """One WARN status per ``(fault, affected object ids)``, for ``/mmfusion/faults``.

    ``start_ns`` is the stamp of the scene start; the fault window is recorded in stamps.
    """
    statuses = []
    for fault, object_ids in active:
        values = [('type', fault.type), ('sensor', fault.sensor),
                  ('start_ns', str(start_ns + round(fault.start_s * 1e9))),
                  ('end_ns', str(start_ns + round(fault.end_s * 1e9))),
                  ('object_ids', ','.join(object_ids))]
        values += [(name, _format_value(value)) for name, value in fault.params.items()]
        count = len(object_ids)
        message = (f'{fault.sensor}: {_SENTENCES[fault.type]} '
                   f'({count} object{"" if count == 1 else "s"} affected)')
        statuses.append(DiagnosticStatus(DiagnosticStatus.WARN, f'fault/{fault.type}/{fault.sensor}',
                                         message, fault.sensor, tuple(values)))
    return statuses


_PARAMETER_HINTS = typing.get_type_hints(FaultSpec)


def _parse_value(name: str, text: str) -> object:
    hint = _PARAMETER_HINTS[name]
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        return tuple(kind(part) for part in text.split(',')) if text else ()
    return float(text)


def parse_fault_statuses(statuses: Sequence[DiagnosticStatus]) -> list[RecordedFault]:
    """The faults among ``statuses`` (those named ``fault/...``), as ``fault_statuses`` wrote them."""
    recorded = []
    for status in statuses:
        if not status.name.startswith('fault/'):
            continue
        values = dict(status.values)
        try:
            fault_type = values['type']
            params = {name: _parse_value(name, values[name]) for name in FAULT_PARAMETERS[fault_type]}
            ids = values['object_ids']
            recorded.append(RecordedFault(fault_type, values['sensor'], int(values['start_ns']),
                                          int(values['end_ns']), tuple(ids.split(',')) if ids else (),
                                          params))
        except KeyError as err:
            raise DecodeError(f'{status.name}: fault status lacks {err} or names an unknown type') from None
        except ValueError as err:
            raise DecodeError(f'{status.name}: malformed fault value ({err})') from None
    return recorded
