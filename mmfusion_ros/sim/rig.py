"""The simulated sensor rig: where each sensor sits on the car and how it measures.

Sensor names are the names in the fusion parameter file (``config/default.yaml``); topics, frame ids
and rates come from there, so the simulator records exactly what the pipeline subscribes to. This
module holds only what the parameter file does not: mounts and measurement models. The defaults
are close to nuScenes (six cameras, a 32-beam lidar at 20 Hz, five radars at 13 Hz).

Mount convention: ``xyz`` in base_link (x forward, y left, z up, origin on the ground under the
centre of the ego box) and ``rpy_deg`` the sensor body's roll, pitch, yaw. A camera's body is x
forward like the others; its optical frame (x right, y down, z forward) is derived, so the published
camera extrinsic is base_link -> optical frame, as ROS cameras report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..errors import ConfigError
from ..types import CameraIntrinsics, RigidTransform

__all__ = ['BODY_TO_OPTICAL', 'CameraModel', 'LidarModel', 'Mount', 'RadarModel', 'Rig']

# Rotation taking optical-frame coordinates (x right, y down, z forward) to body coordinates
# (x forward, y left, z up): p_body = BODY_TO_OPTICAL @ p_optical.
BODY_TO_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Mount:
    xyz: tuple[float, float, float]
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def body_to_base(self) -> RigidTransform:
        """Maps points of the sensor body frame into base_link."""
        return RigidTransform(_rpy_matrix(*np.radians(self.rpy_deg)), np.array(self.xyz))


@dataclass(frozen=True)
class CameraModel:
    """A pinhole camera without distortion (the simulator renders rectified images)."""

    width: int = 400
    height: int = 225
    hfov_deg: float = 70.0
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ConfigError(f'width: image size {self.width}x{self.height} is below 8x8')
        if not 10.0 <= self.hfov_deg <= 170.0:
            raise ConfigError(f'hfov_deg: {self.hfov_deg} is outside [10, 170]')
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f'jpeg_quality: {self.jpeg_quality} is outside [1, 100]')

    def intrinsics(self, frame_id: str) -> CameraIntrinsics:
        focal = (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)
        k = np.array([[focal, 0.0, self.width / 2], [0.0, focal, self.height / 2], [0.0, 0.0, 1.0]])
        return CameraIntrinsics(frame_id, self.width, self.height, k, 'plumb_bob', np.zeros(5))


@dataclass(frozen=True)
class LidarModel:
    """A spinning multi-beam lidar. One sweep is one full turn, starting at the message stamp."""

    beams: int = 32
    elevation_deg: tuple[float, float] = (-30.67, 10.67)  # lowest and highest beam
    azimuth_steps: int = 1084  # firings per turn
    max_range: float = 70.0
    min_range: float = 1.0
    range_noise: float = 0.02  # metres, 1 sigma
    dropout: float = 0.02  # probability that a return is lost

    def __post_init__(self) -> None:
        if self.beams < 1 or self.azimuth_steps < 8:
            raise ConfigError(f'beams: {self.beams} beams x {self.azimuth_steps} azimuth steps is too few')
        if not self.elevation_deg[0] < self.elevation_deg[1]:
            raise ConfigError(f'elevation_deg: needs low < high, got {list(self.elevation_deg)}')
        if not 0 < self.min_range < self.max_range:
            raise ConfigError(f'min_range: needs 0 < min_range < max_range, got {self.min_range}, {self.max_range}')
        if self.range_noise < 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f'dropout: needs range_noise >= 0 and dropout in [0, 1), got {self.range_noise}, {self.dropout}')


@dataclass(frozen=True)
class RadarModel:
    """An automotive radar: sparse returns with range, azimuth, doppler and RCS."""

    hfov_deg: float = 120.0
    vfov_deg: float = 10.0
    max_range: float = 80.0
    azimuth_rays: int = 241  # rays cast per scan across the field of view
    elevation_rays: int = 3
    range_noise: float = 0.25  # metres, 1 sigma
    azimuth_noise_deg: float = 0.5
    doppler_noise: float = 0.1  # m/s, 1 sigma
    returns_per_object: int = 3  # strongest reflections kept per object
    detection_probability: float = 0.9
    clutter_per_scan: float = 1.5  # mean number of false returns per scan

    def __post_init__(self) -> None:
        if not 0 < self.hfov_deg <= 360 or not 0 < self.vfov_deg < 90:
            raise ConfigError(f'hfov_deg: field of view {self.hfov_deg} x {self.vfov_deg} deg is out of range')
        if self.azimuth_rays < 2 or self.elevation_rays < 1 or self.returns_per_object < 1:
            raise ConfigError('azimuth_rays: needs azimuth_rays >= 2, elevation_rays >= 1, returns_per_object >= 1')
        if not 0 < self.detection_probability <= 1 or self.clutter_per_scan < 0:
            raise ConfigError('detection_probability: needs detection_probability in (0, 1] and clutter_per_scan >= 0')


_CAMERA_MOUNTS = {
    'cam_front': Mount((1.70, 0.00, 1.51), (0.0, 0.0, 0.0)),
    'cam_front_right': Mount((1.55, -0.49, 1.50), (0.0, 0.0, -55.0)),
    'cam_front_left': Mount((1.52, 0.49, 1.51), (0.0, 0.0, 55.0)),
    'cam_back': Mount((-0.90, 0.00, 1.57), (0.0, 0.0, 180.0)),
    'cam_back_left': Mount((1.04, 0.48, 1.56), (0.0, 0.0, 110.0)),
    'cam_back_right': Mount((1.04, -0.48, 1.56), (0.0, 0.0, -110.0)),
}
_RADAR_MOUNTS = {
    'radar_front': Mount((2.30, 0.00, 0.50), (0.0, 0.0, 0.0)),
    'radar_front_left': Mount((1.60, 0.80, 0.50), (0.0, 0.0, 90.0)),
    'radar_front_right': Mount((1.60, -0.80, 0.50), (0.0, 0.0, -90.0)),
    'radar_back_left': Mount((-1.70, 0.62, 0.50), (0.0, 0.0, 150.0)),
    'radar_back_right': Mount((-1.70, -0.62, 0.50), (0.0, 0.0, -150.0)),
}


@dataclass(frozen=True)
class Rig:
    """Mounts per sensor name plus one measurement model per modality."""

    camera: CameraModel = CameraModel()
    lidar: LidarModel = LidarModel()
    radar: RadarModel = RadarModel()
    camera_mounts: Mapping[str, Mount] = field(default_factory=lambda: MappingProxyType(_CAMERA_MOUNTS))
    lidar_mounts: Mapping[str, Mount] = field(
        default_factory=lambda: MappingProxyType({'lidar_top': Mount((0.0, 0.0, 1.84))}))
    radar_mounts: Mapping[str, Mount] = field(default_factory=lambda: MappingProxyType(_RADAR_MOUNTS))

    def sensor_to_base(self, sensor: str) -> RigidTransform:
        """Maps points of the sensor's published frame (a camera's optical frame) into base_link."""
        if sensor in self.camera_mounts:
            body = self.camera_mounts[sensor].body_to_base()
            return body @ RigidTransform(BODY_TO_OPTICAL, np.zeros(3))
        for mounts in (self.lidar_mounts, self.radar_mounts):
            if sensor in mounts:
                return mounts[sensor].body_to_base()
        raise KeyError(f'rig has no sensor {sensor!r}; it has {", ".join(self.sensors)}')

    @property
    def sensors(self) -> tuple[str, ...]:
        return (*self.lidar_mounts, *self.camera_mounts, *self.radar_mounts)
