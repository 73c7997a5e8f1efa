"""CDR bytes to typed samples, with errors that say which topic, field and value were wrong.

Every decoder takes the raw CDR payload of one message and an optional ``topic`` that only serves
error messages. Whatever is wrong (truncated bytes, an encoding we do not read, a cloud whose fields
do not fit its ``point_step``) comes out as one ``DecodeError`` line naming the topic (or the message
type when no topic is given), the field and the value, so a node can log it and keep running.

Decoded samples own their arrays (nothing points into ``raw``), in native byte order.

Conventions worth knowing:

- PointCloud2: any field layout is read through one numpy structured dtype built from ``fields``
  (offsets, datatypes, ``count > 1`` as sub-arrays, ``is_bigendian``, row padding). Fields named
  ``''`` or ``'_'`` are padding and skipped; a ``count`` of 0 is read as 1. Points whose x, y or z
  is not finite are dropped and counted in ``dropped_invalid``.
- Radar PointCloud2: field names are matched case-insensitively. Doppler comes from the first of
  ``doppler``, ``range_rate``, ``radial_velocity``, ``v_r``, ``velocity`` (CARLA); RCS from ``rcs``. Without an explicit
  doppler field but with ``vx`` and ``vy`` (nuScenes), doppler is the projection of (vx, vy, 0) on
  the line of sight, ``(x*vx + y*vy) / |xyz|``: nuScenes' vx, vy are the measured radial velocity
  split into x and y components, so the projection gives it back with its sign (positive away).
  ``source_fields`` lists the wire fields the physical quantities came from (a derived doppler
  shows as vx, vy and no doppler field).
- RadarScan: x = r cos(el) cos(az), y = r cos(el) sin(az), z = r sin(el); amplitude (dB) is taken
  as RCS; doppler_velocity keeps its sign.
- Frame ids: a leading '/' (ROS 1 style) is stripped everywhere, as tf2 does, so a sample's frame
  matches the frames of the transforms. TF quaternions are normalised.
- Detection3DArray: see ``mmfusion_ros/msgs/README.md``; velocity comes from the hypothesis whose
  class_id is ``'velocity'`` (NaN when there is none); the class is the best-scoring other
  hypothesis ('' and NaN score when there is none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from mmfusion_ros.errors import DecodeError
from mmfusion_ros.msgs.conventions import (
    BOX_NS_SUFFIX,
    IMAGE_WIRE_ENCODINGS,
    LABEL_NS_SUFFIX,
    POINTFIELD_DTYPES,
    POINTFIELD_NAMES,
    VELOCITY_CLASS_ID,
    VELOCITY_NS_SUFFIX,
    normalize_msgtype,
    yaw_from_quaternion,
)
from mmfusion_ros.msgs.typestore import deserialize
from mmfusion_ros.types import (
    BoxMarker,
    CameraImage,
    CameraIntrinsics,
    Detections3D,
    DiagnosticStatus,
    PointCloud,
    RadarPoints,
    RigidTransform,
    TransformStamped,
    stamp_from_ros,
)

__all__ = [
    'decode',
    'decode_camera_info',
    'decode_compressed_image',
    'decode_detections',
    'decode_diagnostics',
    'decode_image',
    'decode_markers',
    'decode_pointcloud',
    'decode_radar',
    'decode_tf',
]

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
RADAR_SCAN = 'radar_msgs/msg/RadarScan'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
DETECTION3D_ARRAY = 'vision_msgs/msg/Detection3DArray'
DIAGNOSTIC_ARRAY = 'diagnostic_msgs/msg/DiagnosticArray'
MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'

_DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')
_MARKER_CUBE, _MARKER_ARROW, _MARKER_TEXT = 1, 0, 9
_MARKER_ADD, _MARKER_MODIFY = 0, 1


def _one_line(err: BaseException) -> str:
    """An exception's text with newlines folded, so our messages stay one line."""
    return ' '.join(str(err).split()) or type(err).__name__


def _stamp(header: Any) -> int:
    return stamp_from_ros(header.stamp.sec, header.stamp.nanosec)


def _frame(header: Any) -> str:
    """The header's frame id without a leading '/', so it matches the frames ``decode_tf`` yields."""
    return header.frame_id.removeprefix('/')


def _owned(values: np.ndarray) -> np.ndarray:
    """A contiguous, native-byte-order copy: the sample must not pin or alias the message buffer."""
    return np.array(values, dtype=values.dtype.newbyteorder('='), order='C', copy=True)


# --- images -------------------------------------------------------------------------------------


def decode_image(raw: bytes | memoryview, topic: str = '') -> CameraImage:
    """``sensor_msgs/Image`` to a CameraImage: colour as RGB uint8, single channel as it came."""
    msg: Any = deserialize(raw, IMAGE, topic)
    where = topic or IMAGE
    layout = IMAGE_WIRE_ENCODINGS.get(msg.encoding)
    if layout is None:
        raise DecodeError(f'{where}: unknown image encoding {msg.encoding!r}; supported: '
                          f'{", ".join(IMAGE_WIRE_ENCODINGS)}')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise DecodeError(f'{where}: image is empty ({width}x{height})')
    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise DecodeError(f'{where}: image step {step} is shorter than one row of {width} '
                          f'{msg.encoding} pixels ({row_bytes} bytes)')
    data = msg.data
    if len(data) < height * step:
        raise DecodeError(f'{where}: image data has {len(data)} bytes, expected {height * step} '
                          f'(height {height} x step {step})')
    wire_dtype = layout.dtype.newbyteorder('>' if msg.is_bigendian else '<')
    rows = data[:height * step].reshape(height, step)[:, :row_bytes]  # (H, W*bpp) uint8, padding cut
    pixels = rows.view(wire_dtype).reshape(height, width, layout.channels)  # (H, W, C) wire order
    pixels = pixels[..., layout.rgb] if layout.rgb is not None else pixels[..., 0]
    return CameraImage(_stamp(msg.header), _frame(msg.header), _owned(pixels), layout.sample_encoding)


def decode_compressed_image(raw: bytes | memoryview, topic: str = '') -> CameraImage:
    """``sensor_msgs/CompressedImage`` (jpeg or png) to a CameraImage.

    OpenCV sniffs the codec from the bytes; ``format`` (``'jpeg'``, ``'rgb8; jpeg compressed bgr8'``
    as image_transport writes it) only tells us what a single-channel 16-bit image was before
    compression (``16UC1`` stays ``16UC1``, anything else becomes ``mono16``). 16-bit colour is
    reduced to 8 bits, the only colour depth CameraImage holds.
    """
    msg: Any = deserialize(raw, COMPRESSED_IMAGE, topic)
    where = topic or COMPRESSED_IMAGE
    fmt = msg.format
    if 'compresseddepth' in fmt.lower():
        raise DecodeError(f'{where}: compressed image format {fmt!r} (compressedDepth) is not '
                          f'supported; publish png or jpeg')
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise DecodeError(f'{where}: compressed image ({fmt!r}) has no data')
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise DecodeError(f'{where}: cannot decode {data.size} bytes of {fmt!r} image data: '
                          f'{_one_line(err)}') from err
    if decoded is None:
        raise DecodeError(f'{where}: cannot decode {data.size} bytes of {fmt!r} image data '
                          f'(not a valid jpeg or png)')
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    source_encoding = fmt.split(';')[0].strip() if ';' in fmt else ''
    stamp, frame_id = _stamp(msg.header), _frame(msg.header)
    if decoded.ndim == 2 and decoded.dtype == np.uint8:
        return CameraImage(stamp, frame_id, decoded, 'mono8')
    if decoded.ndim == 2 and decoded.dtype == np.uint16:
        encoding = '16UC1' if source_encoding == '16UC1' else 'mono16'
        return CameraImage(stamp, frame_id, decoded, encoding)
    if decoded.ndim == 3 and decoded.shape[2] in (3, 4) and decoded.dtype in (np.uint8, np.uint16):
        bgr = decoded[..., :3] if decoded.dtype == np.uint8 else (decoded[..., :3] >> 8).astype(np.uint8)
        return CameraImage(stamp, frame_id, np.ascontiguousarray(bgr[..., ::-1]), 'rgb8')
    raise DecodeError(f'{where}: decoded {fmt!r} image has shape {decoded.shape} and dtype '
                      f'{decoded.dtype}; expected 1, 3 or 4 channels of 8 or 16 bits')


def decode_camera_info(raw: bytes | memoryview, topic: str = '') -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` to CameraIntrinsics.

    An empty distortion model or empty D means no distortion ('none'). An all-zero R (drivers that
    never rectify) is read as identity and an all-zero P as "unset" ([K | 0]); an all-zero K means
    the camera was never calibrated, which no projection can work with.
    """
    msg: Any = deserialize(raw, CAMERA_INFO, topic)
    where = topic or CAMERA_INFO
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(k):
        raise DecodeError(f'{where}: camera {_frame(msg.header)!r} has no calibration (K is all zero)')
    d = np.array(msg.d, dtype=np.float64)
    model = msg.distortion_model
    if not model or model == 'none' or d.size == 0:
        model = 'none'
    elif model not in _DISTORTION_MODELS:
        raise DecodeError(f'{where}: unknown distortion model {model!r}; supported: '
                          f'{", ".join(_DISTORTION_MODELS)} (or empty for none)')
    r = np.array(msg.r, dtype=np.float64).reshape(3, 3)
    p = np.array(msg.p, dtype=np.float64).reshape(3, 4)
    try:
        return CameraIntrinsics(_frame(msg.header), int(msg.width), int(msg.height), k.copy(), model, d,
                                r if np.any(r) else np.eye(3), p if np.any(p) else None)
    except ValueError as err:
        raise DecodeError(f'{where}: {_one_line(err)}') from err


# --- point clouds -------------------------------------------------------------------------------


def _point_dtype(msg: Any, where: str) -> np.dtype:
    """One structured dtype that reads a whole point, built from the PointCloud2 ``fields``."""
    order = '>' if msg.is_bigendian else '<'
    point_step = int(msg.point_step)
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    for field in msg.fields:
        name = field.name
        if name in ('', '_'):  # PCL-style padding
            continue
        if name in names:
            raise DecodeError(f'{where}: PointCloud2 field {name!r} appears more than once')
        scalar = POINTFIELD_DTYPES.get(int(field.datatype))
        if scalar is None:
            known = ', '.join(f'{code} {label}' for code, label in POINTFIELD_NAMES.items())
            raise DecodeError(f'{where}: PointCloud2 field {name!r} has unknown datatype '
                              f'{field.datatype} (known: {known})')
        count = max(int(field.count), 1)
        end = int(field.offset) + scalar.itemsize * count
        if end > point_step:
            raise DecodeError(f'{where}: PointCloud2 field {name!r} ({count} x {scalar.name} at offset '
                              f'{field.offset}) ends at byte {end} but point_step is {point_step}')
        wire = scalar.newbyteorder(order)
        names.append(name)
        formats.append(wire if count == 1 else (wire, (count,)))
        offsets.append(int(field.offset))
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets, 'itemsize': point_step})


def _point_records(msg: Any, where: str) -> np.ndarray:
    """All points as a (height, width) structured view into the message buffer, padding skipped.

    Never a copy: fields are pulled out one at a time (``_column``), which is far cheaper than
    copying whole padded records.
    """
    dtype = _point_dtype(msg, where)
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height * width == 0:
        return np.zeros((height, width), dtype)
    row_bytes = width * point_step
    if height > 1 and row_step < row_bytes:
        raise DecodeError(f'{where}: PointCloud2 row_step {row_step} is shorter than width {width} x '
                          f'point_step {point_step} = {row_bytes}')
    data = msg.data
    need = (height - 1) * row_step + row_bytes
    if len(data) < need:
        raise DecodeError(f'{where}: PointCloud2 data has {len(data)} bytes, expected at least {need} '
                          f'(height {height}, width {width}, point_step {point_step}, '
                          f'row_step {row_step})')
    return np.ndarray((height, width), dtype=dtype, buffer=data, strides=(row_step, point_step))


def _column(records: np.ndarray, name: str) -> np.ndarray:
    """One field of every point, row-major: (N,) or (N, count), contiguous, native byte order."""
    values = records[name]  # (H, W) or (H, W, count), strided view
    owned = values.astype(values.dtype.newbyteorder('='), order='C')
    return owned.reshape(records.size, *values.shape[2:])


def _scalar_column(records: np.ndarray, name: str, where: str) -> np.ndarray:
    """Like ``_column`` for fields that must hold one value per point (coordinates, quantities)."""
    if records.dtype[name].shape:
        raise DecodeError(f'{where}: PointCloud2 field {name!r} has count {records.dtype[name].shape[0]}; '
                          f'expected a single value per point')
    return _column(records, name)


def _xyz(records: np.ndarray, names: Sequence[str], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions as (N, 3) float32 and which of them are finite, as an (N,) bool mask.

    Columns are gathered contiguous first and interleaved after; both that and the per-column
    finiteness test are several times faster than the same work on the (N, 3) array.
    """
    columns = [_scalar_column(records, name, where).astype(np.float32, copy=False) for name in names]
    valid = np.isfinite(columns[0]) & np.isfinite(columns[1]) & np.isfinite(columns[2])  # (N,)
    return np.stack(columns, axis=1), valid


def _keep(values: np.ndarray, valid: np.ndarray, dropped: int) -> np.ndarray:
    return values[valid] if dropped else values


def decode_pointcloud(raw: bytes | memoryview, topic: str = '') -> PointCloud:
    """``sensor_msgs/PointCloud2`` of any layout to a PointCloud; every non-xyz field is a channel."""
    msg: Any = deserialize(raw, POINTCLOUD2, topic)
    where = topic or POINTCLOUD2
    records = _point_records(msg, where)
    names = records.dtype.names or ()
    for axis in 'xyz':
        if axis not in names:
            raise DecodeError(f'{where}: PointCloud2 has no field {axis!r} (fields: '
                              f'{", ".join(names) or "none"})')
    xyz, valid = _xyz(records, 'xyz', where)  # (N, 3), (N,)
    dropped = int(valid.size - np.count_nonzero(valid))
    channels = {name: _keep(_column(records, name), valid, dropped)
                for name in names if name not in ('x', 'y', 'z')}
    return PointCloud(_stamp(msg.header), _frame(msg.header), _keep(xyz, valid, dropped), channels,
                      dropped)


# 'velocity' is CARLA's radar field (carla-ros-bridge): the range rate, negative when closing.
_DOPPLER_NAMES = ('doppler', 'range_rate', 'radial_velocity', 'v_r', 'velocity')


def _radar_from_pointcloud(msg: Any, where: str) -> RadarPoints:
    records = _point_records(msg, where)
    names = records.dtype.names or ()
    by_lower: dict[str, str] = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)

    def wire_name(*candidates: str) -> str | None:
        return next((by_lower[c] for c in candidates if c in by_lower), None)

    axes = [wire_name(axis) for axis in 'xyz']
    for axis, name in zip('xyz', axes, strict=True):
        if name is None:
            raise DecodeError(f'{where}: radar PointCloud2 has no field {axis!r} (fields: '
                              f'{", ".join(names) or "none"})')
    quantity = {'doppler': wire_name(*_DOPPLER_NAMES), 'rcs': wire_name('rcs'),
                'vx': wire_name('vx'), 'vy': wire_name('vy'),
                'vx_comp': wire_name('vx_comp'), 'vy_comp': wire_name('vy_comp')}

    xyz, valid = _xyz(records, axes, where)  # type: ignore[arg-type]
    dropped = int(valid.size - np.count_nonzero(valid))
    xyz = _keep(xyz, valid, dropped)
    out = RadarPoints.unmeasured(len(xyz))

    def measured(key: str) -> np.ndarray | None:
        name = quantity[key]
        if name is None:
            return None
        return _keep(_scalar_column(records, name, where), valid, dropped).astype(np.float64)

    doppler, rcs = measured('doppler'), measured('rcs')
    vx, vy, vx_comp, vy_comp = measured('vx'), measured('vy'), measured('vx_comp'), measured('vy_comp')
    if doppler is None and vx is not None and vy is not None:
        position = xyz.astype(np.float64)  # (N, 3)
        distance = np.linalg.norm(position, axis=1)  # (N,)
        with np.errstate(invalid='ignore', divide='ignore'):
            doppler = np.where(distance > 0, (position[:, 0] * vx + position[:, 1] * vy) / distance, np.nan)
    if doppler is not None:
        out['doppler'] = doppler.astype(np.float32)
    if rcs is not None:
        out['rcs'] = rcs.astype(np.float32)
    for key, components in (('velocity', (vx, vy)), ('velocity_comp', (vx_comp, vy_comp))):
        for axis, component in enumerate(components):
            if component is not None:
                out[key][:, axis] = component

    source = tuple(name for name in (*axes, *quantity.values()) if name is not None)
    channels = {name: _keep(_column(records, name), valid, dropped)
                for name in names if name not in source}
    return RadarPoints(_stamp(msg.header), _frame(msg.header), xyz, fields=channels,
                       source_fields=source, dropped_invalid=dropped, **out)


def _radar_from_scan(msg: Any, where: str) -> RadarPoints:
    returns = msg.returns
    polar = np.array([(r.range, r.azimuth, r.elevation, r.doppler_velocity, r.amplitude)
                      for r in returns], dtype=np.float64).reshape(len(returns), 5)  # (N, 5)
    distance, azimuth, elevation = polar[:, 0], polar[:, 1], polar[:, 2]
    flat = distance * np.cos(elevation)
    xyz = np.stack([flat * np.cos(azimuth), flat * np.sin(azimuth), distance * np.sin(elevation)],
                   axis=1).astype(np.float32)  # (N, 3)
    valid = np.isfinite(xyz).all(axis=1)
    dropped = int(valid.size - np.count_nonzero(valid))
    if dropped:
        xyz, polar = xyz[valid], polar[valid]
    out = RadarPoints.unmeasured(len(xyz))
    out['doppler'] = polar[:, 3].astype(np.float32)
    out['rcs'] = polar[:, 4].astype(np.float32)
    return RadarPoints(_stamp(msg.header), _frame(msg.header), xyz,
                       source_fields=('range', 'azimuth', 'elevation', 'doppler_velocity', 'amplitude'),
                       dropped_invalid=dropped, **out)


def decode_radar(raw: bytes | memoryview, msgtype: str, topic: str = '') -> RadarPoints:
    """A radar scan as RadarPoints, from ``sensor_msgs/PointCloud2`` or ``radar_msgs/RadarScan``.

    Needs the type because a PointCloud2 may be lidar or radar; quantities the message does not
    carry are NaN.
    """
    msgtype = normalize_msgtype(msgtype)
    where = topic or msgtype
    if msgtype == POINTCLOUD2:
        return _radar_from_pointcloud(deserialize(raw, POINTCLOUD2, topic), where)
    if msgtype == RADAR_SCAN:
        return _radar_from_scan(deserialize(raw, RADAR_SCAN, topic), where)
    raise DecodeError(f'{where}: cannot read radar from {msgtype}; supported: {POINTCLOUD2}, {RADAR_SCAN}')


# --- transforms, detections, diagnostics, markers -----------------------------------------------


def decode_tf(raw: bytes | memoryview, static: bool, topic: str = '') -> list[TransformStamped]:
    """``tf2_msgs/TFMessage`` to its transforms, in message order.

    ``static`` says which topic it came from (``/tf_static`` or ``/tf``); the message cannot tell.
    """
    msg: Any = deserialize(raw, TF_MESSAGE, topic)
    where = topic or TF_MESSAGE
    transforms = []
    for item in msg.transforms:
        parent = _frame(item.header)
        child = item.child_frame_id.removeprefix('/')
        rotation, translation = item.transform.rotation, item.transform.translation
        quaternion = np.array([rotation.x, rotation.y, rotation.z, rotation.w], dtype=np.float64)
        norm = float(np.linalg.norm(quaternion))
        if not np.isfinite(norm) or norm < 1e-9:
            raise DecodeError(f'{where}: transform {parent!r} -> {child!r} has an invalid rotation '
                              f'quaternion {quaternion.tolist()} (zero or not finite)')
        try:
            rigid = RigidTransform.from_quaternion(
                quaternion, np.array([translation.x, translation.y, translation.z], dtype=np.float64))
            transforms.append(TransformStamped(_stamp(item.header), parent, child, rigid, static))
        except ValueError as err:
            raise DecodeError(f'{where}: transform {parent!r} -> {child!r}: {_one_line(err)}') from err
    return transforms


def decode_detections(raw: bytes | memoryview, topic: str = '') -> Detections3D:
    """``vision_msgs/Detection3DArray`` to Detections3D (velocity convention in the module doc)."""
    msg: Any = deserialize(raw, DETECTION3D_ARRAY, topic)
    where = topic or DETECTION3D_ARRAY
    count = len(msg.detections)
    centers, sizes = np.zeros((count, 3)), np.zeros((count, 3))
    yaws, scores = np.zeros(count), np.full(count, np.nan)
    velocities = np.full((count, 2), np.nan)
    labels, ids = [], []
    for row, detection in enumerate(msg.detections):
        pose, size = detection.bbox.center, detection.bbox.size
        centers[row] = (pose.position.x, pose.position.y, pose.position.z)
        sizes[row] = (size.x, size.y, size.z)
        q = pose.orientation
        yaws[row] = yaw_from_quaternion(q.x, q.y, q.z, q.w)
        best = None
        for result in detection.results:
            hypothesis = result.hypothesis
            if hypothesis.class_id == VELOCITY_CLASS_ID:
                position = result.pose.pose.position
                velocities[row] = (position.x, position.y)
            elif best is None or hypothesis.score > best.score:
                best = hypothesis
        if best is not None:
            scores[row] = best.score
        labels.append('' if best is None else best.class_id)
        ids.append(detection.id)
    try:
        return Detections3D(_stamp(msg.header), _frame(msg.header), centers, sizes, yaws, velocities,
                            tuple(labels), scores, tuple(ids))
    except ValueError as err:
        raise DecodeError(f'{where}: {_one_line(err)}') from err


def decode_diagnostics(raw: bytes | memoryview, topic: str = '') -> tuple[int, list[DiagnosticStatus]]:
    """``diagnostic_msgs/DiagnosticArray`` to its stamp (ns) and statuses, in message order."""
    msg: Any = deserialize(raw, DIAGNOSTIC_ARRAY, topic)
    where = topic or DIAGNOSTIC_ARRAY
    statuses = []
    for status in msg.status:
        try:
            statuses.append(DiagnosticStatus(int(status.level), status.name, status.message,
                                             status.hardware_id,
                                             tuple((kv.key, kv.value) for kv in status.values)))
        except ValueError as err:
            raise DecodeError(f'{where}: {_one_line(err)}') from err
    return _stamp(msg.header), statuses


def decode_markers(raw: bytes | memoryview, topic: str = '') -> list[BoxMarker]:
    """``visualization_msgs/MarkerArray`` back to the boxes it draws, in message order.

    Each added CUBE marker is a box. A TEXT_VIEW_FACING marker in namespace ``<ns>/label`` and an
    ARROW in ``<ns>/velocity`` with the id of the cube in ``<ns>/box`` give its label and velocity
    (arrow end minus start, drawn as one second of motion); a box without an arrow stands still.
    Deletions and other marker types are skipped.
    """
    msg: Any = deserialize(raw, MARKER_ARRAY, topic)
    where = topic or MARKER_ARRAY
    cubes: dict[tuple[str, int], Any] = {}
    labels: dict[tuple[str, int], str] = {}
    velocities: dict[tuple[str, int], tuple[float, float]] = {}
    for marker in msg.markers:
        if marker.action not in (_MARKER_ADD, _MARKER_MODIFY):
            continue
        if marker.type == _MARKER_CUBE:
            cubes[(marker.ns.removesuffix(BOX_NS_SUFFIX), marker.id)] = marker
        elif marker.type == _MARKER_TEXT and marker.ns.endswith(LABEL_NS_SUFFIX):
            labels[(marker.ns.removesuffix(LABEL_NS_SUFFIX), marker.id)] = marker.text
        elif (marker.type == _MARKER_ARROW and marker.ns.endswith(VELOCITY_NS_SUFFIX)
              and len(marker.points) == 2):
            start, end = marker.points
            velocities[(marker.ns.removesuffix(VELOCITY_NS_SUFFIX), marker.id)] = (end.x - start.x,
                                                                                 end.y - start.y)
    boxes = []
    for key, cube in cubes.items():
        pose, scale, color = cube.pose, cube.scale, cube.color
        q = pose.orientation
        try:
            boxes.append(BoxMarker(
                id=int(cube.id),
                center=np.array([pose.position.x, pose.position.y, pose.position.z]),
                size=np.array([scale.x, scale.y, scale.z]),
                yaw=yaw_from_quaternion(q.x, q.y, q.z, q.w),
                rgba=np.array([color.r, color.g, color.b, color.a], dtype=np.float64),
                label=labels.get(key, ''),
                velocity=np.array(velocities.get(key, (0.0, 0.0))),
                lifetime_ns=stamp_from_ros(cube.lifetime.sec, cube.lifetime.nanosec),
            ))
        except ValueError as err:
            raise DecodeError(f'{where}: marker {cube.ns!r} {cube.id}: {_one_line(err)}') from err
    return boxes


# --- dispatch -----------------------------------------------------------------------------------

_DECODERS: dict[str, Callable[[bytes | memoryview, str], object]] = {
    IMAGE: decode_image,
    COMPRESSED_IMAGE: decode_compressed_image,
    CAMERA_INFO: decode_camera_info,
    POINTCLOUD2: decode_pointcloud,
    DETECTION3D_ARRAY: decode_detections,
    DIAGNOSTIC_ARRAY: decode_diagnostics,
    MARKER_ARRAY: decode_markers,
}


def decode(raw: bytes | memoryview, msgtype: str, topic: str = '') -> object:
    """Decode by message type.

    PointCloud2 is read as lidar (``decode_pointcloud``); call ``decode_radar`` for a radar cloud.
    A TFMessage counts as static when the topic ends in ``tf_static``.
    """
    msgtype = normalize_msgtype(msgtype)
    if msgtype == TF_MESSAGE:
        return decode_tf(raw, static=topic.rstrip('/').endswith('tf_static'), topic=topic)
    if msgtype == RADAR_SCAN:
        return decode_radar(raw, msgtype, topic)
    decoder = _DECODERS.get(msgtype)
    if decoder is None:
        supported = ', '.join(sorted((*_DECODERS, TF_MESSAGE, RADAR_SCAN)))
        raise DecodeError(f'{topic or msgtype}: no decoder for {msgtype}; supported: {supported}')
    return decoder(raw, topic)
