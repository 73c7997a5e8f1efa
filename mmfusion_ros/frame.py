"""One synchronized frame: what the network sees, in the base frame at one stamp.

A ``Frame`` is the meeting point of the transports and the network: the synchronizers (the
key-frame assembler over a bag, and the online one) build it from decoded samples and transforms;
``model.frame_inputs`` turns it into network inputs; training caches it. Every modality is
optional: an empty ``cameras`` and ``None`` point clouds are absent modalities, not errors.

Point clouds are already motion compensated into the base frame at ``stamp_ns`` and accumulated
over sweeps, one row per point, with the columns named in ``LIDAR_FIELDS`` / ``RADAR_FIELDS``:
``dt`` is the age of the point's sweep in seconds (0 for the newest), lidar ``intensity`` is in
[0, 1], radar ``vx_comp, vy_comp`` are the ego-motion-compensated velocity in base axes (m/s) and
``rcs`` is in dBsm (NaN where the radar does not report it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .types import CameraIntrinsics, Detections3D, DiagnosticStatus, RigidTransform

__all__ = ['LIDAR_FIELDS', 'RADAR_FIELDS', 'CameraView', 'Frame']

LIDAR_FIELDS: tuple[str, ...] = ('x', 'y', 'z', 'intensity', 'dt')
RADAR_FIELDS: tuple[str, ...] = ('x', 'y', 'z', 'vx_comp', 'vy_comp', 'rcs', 'dt')


@dataclass(frozen=True, eq=False)
class CameraView:
    """One camera's image in a frame, with the calibration that places it at the frame's stamp."""

    name: str  # sensor name in the configuration
    stamp_ns: int  # the image's own stamp
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    intrinsics: CameraIntrinsics
    camera_to_base: RigidTransform  # camera at stamp_ns -> base frame at the frame's stamp

    def __post_init__(self) -> None:
        pixels = np.asarray(self.pixels)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f'CameraView({self.name!r}): pixels must be (H, W, 3) uint8 RGB, got '
                             f'{pixels.shape} {pixels.dtype}')
        if (self.intrinsics.width, self.intrinsics.height) != (pixels.shape[1], pixels.shape[0]):
            raise ValueError(f'CameraView({self.name!r}): image is {pixels.shape[1]}x{pixels.shape[0]} but its '
                             f'intrinsics are for {self.intrinsics.width}x{self.intrinsics.height}')


def _checked_cloud(points: np.ndarray | None, fields: tuple[str, ...], what: str) -> np.ndarray | None:
    if points is None:
        return None
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != len(fields):
        raise ValueError(f'Frame.{what}: expected (N, {len(fields)}) columns {", ".join(fields)}, got {points.shape}')
    return points


@dataclass(frozen=True, eq=False)
class Frame:
    """The modalities present at one stamp, in ``frame_id`` (the base frame)."""

    stamp_ns: int
    frame_id: str
    cameras: tuple[CameraView, ...] = ()
    lidar: np.ndarray | None = None  # (N, len(LIDAR_FIELDS)) float32
    radar: np.ndarray | None = None  # (N, len(RADAR_FIELDS)) float32
    ground_truth: Detections3D | None = None  # boxes at stamp_ns in frame_id, when the source has them
    faults: tuple[DiagnosticStatus, ...] = ()  # injected faults active at stamp_ns (simulator bags)
    missing: Mapping[str, str] = field(default_factory=dict)  # sensor -> why it is not in this frame
    # Where things were, for the consistency stage (sensor health, tracking); None / empty: unknown.
    pose: RigidTransform | None = None  # the base frame at stamp_ns -> the fixed (world) frame
    sensor_to_base: Mapping[str, RigidTransform] = field(default_factory=dict)  # lidar and radar mounts at stamp_ns
    lidar_sensor: np.ndarray | None = None  # (N,) int16: which of lidar_sensors each lidar row came from
    radar_sensor: np.ndarray | None = None  # (N,) int16: which of radar_sensors each radar row came from
    lidar_sensors: tuple[str, ...] = ()  # the names behind lidar_sensor's indices
    radar_sensors: tuple[str, ...] = ()
    # (N, 3) float32 where each radar row's sensor was when it scanned it, in frame_id at stamp_ns (the
    # vehicle has moved on since an older scan: its lines of sight start there, not at today's mount).
    radar_origin: np.ndarray | None = None
    # Lidar and radar: the stamp of each sensor's newest scan in the frame, a scan without returns too (a
    # radar that sees nothing on an open road still reports; health must not count that as lost).
    scan_stamps: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'cameras', tuple(self.cameras))
        object.__setattr__(self, 'lidar', _checked_cloud(self.lidar, LIDAR_FIELDS, 'lidar'))
        object.__setattr__(self, 'radar', _checked_cloud(self.radar, RADAR_FIELDS, 'radar'))
        object.__setattr__(self, 'faults', tuple(self.faults))
        object.__setattr__(self, 'missing', dict(self.missing))
        object.__setattr__(self, 'sensor_to_base', dict(self.sensor_to_base))
        for name in ('lidar', 'radar'):
            source = getattr(self, f'{name}_sensor')
            cloud = getattr(self, name)
            if source is not None:
                source = np.asarray(source, np.int16)
                if cloud is None or source.shape != (len(cloud),):
                    raise ValueError(f'Frame.{name}_sensor: expected one index per {name} row '
                                     f'({0 if cloud is None else len(cloud)}), got {source.shape}')
                names = getattr(self, f'{name}_sensors')
                if len(source) and (source.min() < 0 or source.max() >= len(names)):
                    raise ValueError(f'Frame.{name}_sensor: indices must be < len({name}_sensors) = {len(names)}')
                object.__setattr__(self, f'{name}_sensor', source)
        if self.radar_origin is not None:
            origin = np.asarray(self.radar_origin, np.float32)
            if self.radar is None or origin.shape != (len(self.radar), 3):
                raise ValueError(f'Frame.radar_origin: expected ({0 if self.radar is None else len(self.radar)}, 3), '
                                 f'got {origin.shape}')
            object.__setattr__(self, 'radar_origin', origin)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this frame has, in (camera, lidar, radar) order."""
        have = {'camera': bool(self.cameras), 'lidar': self.lidar is not None, 'radar': self.radar is not None}
        return tuple(m for m, present in have.items() if present)
