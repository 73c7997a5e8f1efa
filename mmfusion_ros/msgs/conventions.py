"""The wire conventions ``decode`` and ``encode`` share, kept in one place so the two cannot drift.

- Image encodings: bytes per pixel, channels and dtype of every ``sensor_msgs/Image`` encoding we
  read or write.
- PointField datatypes: ROS's 1..8 codes and the numpy scalar each one is.
- Detections: vision_msgs has no velocity slot, so velocity rides in an extra hypothesis whose
  ``class_id`` is ``VELOCITY_CLASS_ID`` (see ``mmfusion_ros/msgs/README.md``).
- Markers: the namespace suffixes that tie a box's cube, label and velocity arrow together.
- Yaw and quaternions: boxes turn about +z only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    'BOX_NS_SUFFIX',
    'IMAGE_WIRE_ENCODINGS',
    'LABEL_NS_SUFFIX',
    'POINTFIELD_DTYPES',
    'POINTFIELD_NAMES',
    'VELOCITY_CLASS_ID',
    'VELOCITY_NS_SUFFIX',
    'WireImageLayout',
    'normalize_msgtype',
    'pointfield_datatype',
    'quaternion_from_yaw',
    'yaw_from_quaternion',
]


class WireImageLayout(NamedTuple):
    """How one ``sensor_msgs/Image`` encoding lays out a pixel, and what we hold it as."""

    dtype: np.dtype  # scalar type of one channel (native order; the wire may be big-endian)
    channels: int  # channels on the wire
    sample_encoding: str  # the CameraImage encoding it becomes
    rgb: slice | None  # wire channels that give R, G, B, in that order; None for single channel

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


IMAGE_WIRE_ENCODINGS: dict[str, WireImageLayout] = {
    'rgb8': WireImageLayout(np.dtype(np.uint8), 3, 'rgb8', slice(0, 3)),
    'bgr8': WireImageLayout(np.dtype(np.uint8), 3, 'rgb8', slice(2, None, -1)),
    'rgba8': WireImageLayout(np.dtype(np.uint8), 4, 'rgb8', slice(0, 3)),
    'bgra8': WireImageLayout(np.dtype(np.uint8), 4, 'rgb8', slice(2, None, -1)),
    'mono8': WireImageLayout(np.dtype(np.uint8), 1, 'mono8', None),
    '8UC1': WireImageLayout(np.dtype(np.uint8), 1, 'mono8', None),
    'mono16': WireImageLayout(np.dtype(np.uint16), 1, 'mono16', None),
    '16UC1': WireImageLayout(np.dtype(np.uint16), 1, '16UC1', None),
    '32FC1': WireImageLayout(np.dtype(np.float32), 1, '32FC1', None),
}

# sensor_msgs/PointField datatype codes, in ROS's order (INT8 = 1 ... FLOAT64 = 8).
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    code: np.dtype(scalar) for code, scalar in enumerate(
        (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64), start=1)
}
POINTFIELD_NAMES: dict[int, str] = {code: dtype.name for code, dtype in POINTFIELD_DTYPES.items()}


def pointfield_datatype(dtype: np.dtype) -> int | None:
    """The PointField code for a numpy scalar type, ignoring byte order; None when ROS has none."""
    native = np.dtype(dtype).newbyteorder('=')
    for code, candidate in POINTFIELD_DTYPES.items():
        if candidate == native:
            return code
    return None


VELOCITY_CLASS_ID = 'velocity'

BOX_NS_SUFFIX = '/box'
LABEL_NS_SUFFIX = '/label'
VELOCITY_NS_SUFFIX = '/velocity'


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a rotation by ``yaw`` about +z."""
    half = 0.5 * float(yaw)
    return 0.0, 0.0, math.sin(half), math.cos(half)


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading about +z of any quaternion (roll and pitch ignored), in ``[-pi, pi]``.

    The ZYX-Euler formula, so a box published with a small tilt still gets its heading.
    """
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def normalize_msgtype(msgtype: str) -> str:
    """``'sensor_msgs/Image'`` and ``'sensor_msgs/msg/Image'`` both as the latter."""
    parts = msgtype.strip('/').split('/')
    if len(parts) == 2:
        return f'{parts[0]}/msg/{parts[1]}'
    return '/'.join(parts)
