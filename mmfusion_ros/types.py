"""Typed samples every stage passes around: the package's vocabulary.

Conventions used throughout:

- Time is an integer count of nanoseconds since the epoch (``stamp_ns``); never floats of seconds.
- A transform ``T`` named ``a_to_b`` maps points of frame ``a`` into frame ``b``: ``p_b = T @ p_a``.
  A ``TransformStamped`` from ``parent_frame`` to ``child_frame`` holds the pose of the child in the
  parent, so it maps child points into the parent: ``p_parent = transform @ p_child`` (ROS's tf).
- Points are ``(N, 3)`` float32 arrays in the sample's ``frame_id``; per-point channels are ``(N,)``
  (or ``(N, k)``) arrays in the same order.
- Colour images are ``(H, W, 3)`` uint8 RGB whatever their wire encoding was.
- Radar radial velocity (``doppler``) is positive when the target moves away (range grows).

Arrays are validated once, here, at construction (shapes and dtypes, converting without a copy where
they already match); stages downstream can rely on them. Samples are frozen: replace, do not mutate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Mapping

import numpy as np

__all__ = [
    'NS_PER_S',
    'BoxMarker',
    'CameraImage',
    'CameraIntrinsics',
    'Detections3D',
    'DiagnosticStatus',
    'PointCloud',
    'RadarPoints',
    'RigidTransform',
    'TransformStamped',
    'stamp_from_ros',
    'stamp_to_ros',
]

NS_PER_S = 1_000_000_000


def stamp_from_ros(sec: int, nanosec: int) -> int:
    """A ROS ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(sec) * NS_PER_S + int(nanosec)


def stamp_to_ros(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds as ``(sec, nanosec)`` with ``0 <= nanosec < 1e9``."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return sec, nanosec


def _checked_array(value: object, dtype: type, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """Return ``value`` as an array of ``dtype`` (no copy when it already is one), checking its shape.

    ``None`` in ``shape`` accepts any size on that axis.
    """
    array = np.asarray(value, dtype=dtype)
    if array.ndim != len(shape) or any(want is not None and got != want
                                       for got, want in zip(array.shape, shape)):
        expected = ', '.join('N' if s is None else str(s) for s in shape)
        raise ValueError(f'{what}: expected shape ({expected}), got {array.shape}')
    return array


@dataclass(frozen=True, eq=False)
class RigidTransform:
    """A rotation followed by a translation: ``p' = rotation @ p + translation``."""

    rotation: np.ndarray  # (3, 3) float64, orthonormal, det +1
    translation: np.ndarray  # (3,) float64

    def __post_init__(self) -> None:
        rotation = _checked_array(self.rotation, np.float64, (3, 3), 'RigidTransform.rotation')
        translation = _checked_array(self.translation, np.float64, (3,), 'RigidTransform.translation')
        if not (np.all(np.isfinite(rotation)) and np.all(np.isfinite(translation))):
            raise ValueError('RigidTransform: rotation and translation must be finite')
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6) or np.linalg.det(rotation) < 0:
            raise ValueError(f'RigidTransform.rotation is not a proper rotation:\n{rotation}')
        object.__setattr__(self, 'rotation', rotation)
        object.__setattr__(self, 'translation', translation)

    @classmethod
    def identity(cls) -> RigidTransform:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> RigidTransform:
        """From a 4x4 homogeneous matrix whose last row is ``[0, 0, 0, 1]``."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]):
            raise ValueError(f'RigidTransform.from_matrix: not a 4x4 rigid transform:\n{matrix}')
        return cls(matrix[:3, :3], matrix[:3, 3])

    @classmethod
    def from_quaternion(cls, quaternion_xyzw: np.ndarray, translation: np.ndarray) -> RigidTransform:
        """From a quaternion in ROS order ``(x, y, z, w)``; it is normalised first."""
        q = np.asarray(quaternion_xyzw, dtype=np.float64)
        norm = float(np.linalg.norm(q))
        if q.shape != (4,) or not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f'RigidTransform.from_quaternion: invalid quaternion {q.tolist()}')
        x, y, z, w = q / norm
        rotation = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])
        return cls(rotation, translation)

    def as_quaternion(self) -> np.ndarray:
        """The rotation as a unit quaternion ``(x, y, z, w)`` with ``w >= 0``."""
        m = self.rotation
        trace = m[0, 0] + m[1, 1] + m[2, 2]
        # Shepperd's method: pick the largest diagonal term for numerical stability.
        if trace > 0:
            s = 2.0 * np.sqrt(trace + 1.0)
            q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4])
        elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
            q = np.array([s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
        elif m[1, 1] > m[2, 2]:
            s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
            q = np.array([(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
        else:
            s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
            q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s])
        q /= np.linalg.norm(q)
        return -q if q[3] < 0 else q

    @property
    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix (a new array each call)."""
        out = np.eye(4)
        out[:3, :3] = self.rotation
        out[:3, 3] = self.translation
        return out

    def inverse(self) -> RigidTransform:
        rotation_t = self.rotation.T
        return RigidTransform(rotation_t, -rotation_t @ self.translation)

    def __matmul__(self, other: RigidTransform) -> RigidTransform:
        """Composition: ``(a @ b).apply(p) == a.apply(b.apply(p))``."""
        return RigidTransform(self.rotation @ other.rotation,
                              self.rotation @ other.translation + self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform ``(N, 3)`` points; keeps float32 input as float32."""
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f'RigidTransform.apply: expected (N, 3) points, got {points.shape}')
        out = points.astype(np.float64) @ self.rotation.T + self.translation
        return out.astype(points.dtype) if points.dtype == np.float32 else out


@dataclass(frozen=True, eq=False)
class TransformStamped:
    """One edge of the transform tree: the pose of ``child_frame`` in ``parent_frame`` at a stamp."""

    stamp_ns: int
    parent_frame: str
    child_frame: str
    transform: RigidTransform  # p_parent = transform.apply(p_child)
    static: bool = False

    def __post_init__(self) -> None:
        if not self.parent_frame or not self.child_frame:
            raise ValueError(f'TransformStamped: empty frame name ({self.parent_frame!r} -> '
                             f'{self.child_frame!r})')
        if self.parent_frame == self.child_frame:
            raise ValueError(f'TransformStamped: frame {self.parent_frame!r} is its own parent')


DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant', 'none')


@dataclass(frozen=True, eq=False)
class CameraIntrinsics:
    """What ``sensor_msgs/CameraInfo`` says about a camera's projection."""

    frame_id: str
    width: int
    height: int
    k: np.ndarray  # (3, 3) float64 camera matrix
    distortion_model: str  # one of DISTORTION_MODELS; 'none' when D is empty
    d: np.ndarray  # (n,) float64 distortion coefficients (5 for plumb_bob, 8 for rational_polynomial)
    r: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3) rectification rotation
    p: np.ndarray | None = None  # (3, 4) projection of the rectified image; defaults to [K | 0]

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f'CameraIntrinsics({self.frame_id!r}): image size {self.width}x{self.height}')
        k = _checked_array(self.k, np.float64, (3, 3), f'CameraIntrinsics({self.frame_id!r}).k')
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.all(np.isfinite(k)):
            raise ValueError(f'CameraIntrinsics({self.frame_id!r}): focal lengths must be positive '
                             f'and finite, K = {k.tolist()}')
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f'CameraIntrinsics({self.frame_id!r}): unknown distortion model '
                             f'{self.distortion_model!r}; known: {", ".join(DISTORTION_MODELS)}')
        d = _checked_array(self.d, np.float64, (None,), f'CameraIntrinsics({self.frame_id!r}).d')
        minimum = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4, 'none': 0}
        if self.distortion_model != 'none' and len(d) < minimum[self.distortion_model]:
            raise ValueError(f'CameraIntrinsics({self.frame_id!r}): {self.distortion_model} needs '
                             f'{minimum[self.distortion_model]} coefficients, got {len(d)}')
        p = np.hstack([k, np.zeros((3, 1))]) if self.p is None else self.p
        object.__setattr__(self, 'k', k)
        object.__setattr__(self, 'd', d)
        object.__setattr__(self, 'r', _checked_array(self.r, np.float64, (3, 3),
                                                    f'CameraIntrinsics({self.frame_id!r}).r'))
        object.__setattr__(self, 'p', _checked_array(p, np.float64, (3, 4),
                                                    f'CameraIntrinsics({self.frame_id!r}).p'))

    @property
    def is_distorted(self) -> bool:
        return self.distortion_model != 'none' and bool(np.any(self.d != 0))


IMAGE_ENCODINGS = ('rgb8', 'mono8', 'mono16', '16UC1', '32FC1')
_IMAGE_LAYOUT = {'rgb8': (np.uint8, 3), 'mono8': (np.uint8, 1), 'mono16': (np.uint16, 1),
                 '16UC1': (np.uint16, 1), '32FC1': (np.float32, 1)}


@dataclass(frozen=True, eq=False)
class CameraImage:
    """One camera frame, normalised: colour as RGB uint8, single channel kept as it came."""

    stamp_ns: int
    frame_id: str
    pixels: np.ndarray  # (H, W, 3) uint8 for 'rgb8'; (H, W) for the single-channel encodings
    encoding: str  # what `pixels` hold now, one of IMAGE_ENCODINGS
    intrinsics: CameraIntrinsics | None = None

    def __post_init__(self) -> None:
        if self.encoding not in _IMAGE_LAYOUT:
            raise ValueError(f'CameraImage({self.frame_id!r}): encoding {self.encoding!r} is not one '
                             f'of {", ".join(IMAGE_ENCODINGS)}')
        dtype, channels = _IMAGE_LAYOUT[self.encoding]
        shape = (None, None, 3) if channels == 3 else (None, None)
        object.__setattr__(self, 'pixels', _checked_array(self.pixels, dtype, shape,
                                                         f'CameraImage({self.frame_id!r}).pixels'))
        intr = self.intrinsics
        if intr is not None and (intr.width, intr.height) != (self.width, self.height):
            raise ValueError(f'CameraImage({self.frame_id!r}): image is {self.width}x{self.height} but '
                             f'its intrinsics are for {intr.width}x{intr.height}')

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def with_intrinsics(self, intrinsics: CameraIntrinsics) -> CameraImage:
        return dataclasses.replace(self, intrinsics=intrinsics)


def _channels(fields: Mapping[str, np.ndarray], count: int, what: str) -> Mapping[str, np.ndarray]:
    checked = {}
    for name, values in fields.items():
        values = np.asarray(values)
        if values.ndim not in (1, 2) or values.shape[0] != count:
            raise ValueError(f'{what}: field {name!r} has shape {values.shape}, expected ({count}, ...)')
        checked[name] = values
    return MappingProxyType(checked)


@dataclass(frozen=True, eq=False)
class PointCloud:
    """A lidar sweep (or any cloud): positions plus named per-point channels."""

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray  # (N, 3) float32
    fields: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) or (N, k), any dtype
    dropped_invalid: int = 0  # points removed at decode because x, y or z was not finite

    def __post_init__(self) -> None:
        what = f'PointCloud({self.frame_id!r})'
        xyz = _checked_array(self.xyz, np.float32, (None, 3), f'{what}.xyz')
        object.__setattr__(self, 'xyz', xyz)
        object.__setattr__(self, 'fields', _channels(self.fields, len(xyz), what))
        if self.dropped_invalid < 0:
            raise ValueError(f'{what}: dropped_invalid is negative ({self.dropped_invalid})')

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    def field(self, name: str) -> np.ndarray:
        """A per-point channel by name; ``KeyError`` names the fields that exist."""
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f'{self.frame_id!r} cloud has no field {name!r}; it has '
                           f'{", ".join(sorted(self.fields)) or "none"}') from None


@dataclass(frozen=True, eq=False)
class RadarPoints:
    """One radar scan as points. Quantities the sensor did not report are NaN, never zero."""

    stamp_ns: int
    frame_id: str
    xyz: np.ndarray  # (N, 3) float32 in the radar frame
    doppler: np.ndarray  # (N,) float32 radial velocity, m/s, positive moving away
    rcs: np.ndarray  # (N,) float32 radar cross section, dBsm
    velocity: np.ndarray  # (N, 2) float32 vx, vy as measured (not ego-motion compensated), m/s
    velocity_comp: np.ndarray  # (N, 2) float32 vx, vy compensated for ego motion, m/s
    fields: Mapping[str, np.ndarray] = field(default_factory=dict)  # any other channel, by name
    source_fields: tuple[str, ...] = ()  # the wire fields the physical quantities came from
    dropped_invalid: int = 0

    def __post_init__(self) -> None:
        what = f'RadarPoints({self.frame_id!r})'
        xyz = _checked_array(self.xyz, np.float32, (None, 3), f'{what}.xyz')
        n = len(xyz)
        object.__setattr__(self, 'xyz', xyz)
        object.__setattr__(self, 'doppler', _checked_array(self.doppler, np.float32, (n,), f'{what}.doppler'))
        object.__setattr__(self, 'rcs', _checked_array(self.rcs, np.float32, (n,), f'{what}.rcs'))
        object.__setattr__(self, 'velocity',
                           _checked_array(self.velocity, np.float32, (n, 2), f'{what}.velocity'))
        object.__setattr__(self, 'velocity_comp',
                           _checked_array(self.velocity_comp, np.float32, (n, 2), f'{what}.velocity_comp'))
        object.__setattr__(self, 'fields', _channels(self.fields, n, what))
        object.__setattr__(self, 'source_fields', tuple(self.source_fields))

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @classmethod
    def unmeasured(cls, count: int) -> dict[str, np.ndarray]:
        """NaN-filled physical channels for ``count`` points, to fill in what a sensor reports."""
        return {'doppler': np.full(count, np.nan, np.float32), 'rcs': np.full(count, np.nan, np.float32),
                'velocity': np.full((count, 2), np.nan, np.float32),
                'velocity_comp': np.full((count, 2), np.nan, np.float32)}


@dataclass(frozen=True, eq=False)
class Detections3D:
    """Oriented 3D boxes with class, score, velocity and id, as arrays (one row per object)."""

    stamp_ns: int
    frame_id: str
    centers: np.ndarray  # (N, 3) float64 box centres
    sizes: np.ndarray  # (N, 3) float64 length (along heading), width, height
    yaws: np.ndarray  # (N,) float64 heading about +z, radians
    velocities: np.ndarray  # (N, 2) float64 vx, vy in frame_id, m/s
    labels: tuple[str, ...]  # class names
    scores: np.ndarray  # (N,) float64 in [0, 1]
    ids: tuple[str, ...] = ()  # track or detection ids; left empty, the row index is used

    def __post_init__(self) -> None:
        what = f'Detections3D({self.frame_id!r})'
        centers = _checked_array(self.centers, np.float64, (None, 3), f'{what}.centers')
        n = len(centers)
        object.__setattr__(self, 'centers', centers)
        sizes = _checked_array(self.sizes, np.float64, (n, 3), f'{what}.sizes')
        if np.any(sizes < 0):
            raise ValueError(f'{what}: negative box size')
        object.__setattr__(self, 'sizes', sizes)
        object.__setattr__(self, 'yaws', _checked_array(self.yaws, np.float64, (n,), f'{what}.yaws'))
        object.__setattr__(self, 'velocities',
                           _checked_array(self.velocities, np.float64, (n, 2), f'{what}.velocities'))
        object.__setattr__(self, 'scores', _checked_array(self.scores, np.float64, (n,), f'{what}.scores'))
        labels, ids = tuple(self.labels), tuple(self.ids) or tuple(str(i) for i in range(n))
        if len(labels) != n or len(ids) != n:
            raise ValueError(f'{what}: {n} boxes but {len(labels)} labels and {len(ids)} ids')
        object.__setattr__(self, 'labels', labels)
        object.__setattr__(self, 'ids', ids)

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    @classmethod
    def empty(cls, stamp_ns: int, frame_id: str) -> Detections3D:
        return cls(stamp_ns, frame_id, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 2)),
                   (), np.zeros(0))


@dataclass(frozen=True)
class DiagnosticStatus:
    """The health of one component, as ``diagnostic_msgs/DiagnosticStatus`` reports it."""

    OK: ClassVar[int] = 0
    WARN: ClassVar[int] = 1
    ERROR: ClassVar[int] = 2
    STALE: ClassVar[int] = 3

    level: int  # OK, WARN, ERROR or STALE
    name: str
    message: str = ''
    hardware_id: str = ''
    values: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, in order

    def __post_init__(self) -> None:
        if self.level not in (self.OK, self.WARN, self.ERROR, self.STALE):
            raise ValueError(f'DiagnosticStatus({self.name!r}): level {self.level!r} is not one of '
                             f'0 OK, 1 WARN, 2 ERROR, 3 STALE')
        values = tuple((str(key), str(value)) for key, value in self.values)
        object.__setattr__(self, 'values', values)


@dataclass(frozen=True, eq=False)
class BoxMarker:
    """One box to draw in a viewer: what ``encode_markers`` turns into cube, label and arrow."""

    id: int
    center: np.ndarray  # (3,) float64 box centre
    size: np.ndarray  # (3,) float64 length, width, height
    yaw: float  # heading about +z, radians
    rgba: np.ndarray  # (4,) float64 colour, each in [0, 1]
    label: str = ''  # text shown above the box; empty draws none
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) float64 vx, vy, m/s
    lifetime_ns: int = 0  # how long a viewer keeps it without an update; 0 keeps it until replaced

    def __post_init__(self) -> None:
        what = f'BoxMarker({self.id})'
        object.__setattr__(self, 'center', _checked_array(self.center, np.float64, (3,), f'{what}.center'))
        size = _checked_array(self.size, np.float64, (3,), f'{what}.size')
        if np.any(size < 0):
            raise ValueError(f'{what}: negative box size {size.tolist()}')
        object.__setattr__(self, 'size', size)
        rgba = _checked_array(self.rgba, np.float64, (4,), f'{what}.rgba')
        if np.any(rgba < 0) or np.any(rgba > 1):
            raise ValueError(f'{what}: colour {rgba.tolist()} is outside [0, 1]')
        object.__setattr__(self, 'rgba', rgba)
        object.__setattr__(self, 'velocity',
                           _checked_array(self.velocity, np.float64, (2,), f'{what}.velocity'))
        object.__setattr__(self, 'yaw', float(self.yaw))
        if self.lifetime_ns < 0:
            raise ValueError(f'{what}: negative lifetime {self.lifetime_ns} ns')
