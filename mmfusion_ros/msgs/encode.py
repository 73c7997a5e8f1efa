"""Typed samples to CDR bytes: what the nodes publish and what tests and tools write into bags.

Messages are built from the typestore's own classes and serialised little-endian. Anything a message
cannot carry (a channel dtype PointField has no code for, a 32-bit float image as jpeg, a label that
collides with our velocity convention) is an ``EncodeError`` naming the sample, field and value.

The point-cloud encoder can also write the odd layouts real drivers produce (big-endian, padded
``point_step``, organized ``height > 1``, padded rows, any field order) so tests can prove the decoder
reads them.

Detection3DArray convention (vision_msgs has no velocity slot; also in ``msgs/README.md``): each
Detection3D has ``id`` = the track or detection id; ``bbox.center`` = box centre and yaw quaternion,
``bbox.size`` = (length, width, height); ``results[0]`` = the class hypothesis (``class_id`` = label,
``score``, ``pose`` = the box pose); and, when the velocity is known (not both NaN), one more
hypothesis with ``class_id = 'velocity'``, score 0.0, whose ``pose.pose.position`` holds
(vx, vy, 0) in the header frame, m/s. Centres, sizes, velocities, scores, labels and ids round-trip
bit for bit; yaw goes through a quaternion and comes back wrapped to [-pi, pi] within ~1e-15 rad.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from mmfusion_ros.errors import EncodeError
from mmfusion_ros.msgs.conventions import (
    BOX_NS_SUFFIX,
    IMAGE_WIRE_ENCODINGS,
    LABEL_NS_SUFFIX,
    VELOCITY_CLASS_ID,
    VELOCITY_NS_SUFFIX,
    normalize_msgtype,
    pointfield_datatype,
    quaternion_from_yaw,
)
from mmfusion_ros.msgs.typestore import serialize, typestore
from mmfusion_ros.types import (
    BoxMarker,
    CameraImage,
    CameraIntrinsics,
    Detections3D,
    DiagnosticStatus,
    PointCloud,
    RadarPoints,
    TransformStamped,
    stamp_to_ros,
)

__all__ = [
    'encode_camera_info',
    'encode_compressed_image',
    'encode_detections',
    'encode_diagnostics',
    'encode_image',
    'encode_markers',
    'encode_pointcloud',
    'encode_radar',
    'encode_float64',
    'encode_tf',
]

# How encode_markers draws: text height and clearance above the box, arrow shaft and head, in m.
_LABEL_HEIGHT = 0.6
_LABEL_CLEARANCE = 0.4
_ARROW_SHAFT, _ARROW_HEAD = 0.15, 0.3
_MIN_ARROW_SPEED = 0.1  # m/s; slower boxes get no arrow


def _msg(msgtype: str, *args: Any) -> Any:
    """An instance of the typestore's class for ``msgtype`` (all fields positional, as declared)."""
    return typestore().types[msgtype](*args)


def _time(stamp_ns: int) -> Any:
    sec, nanosec = stamp_to_ros(stamp_ns)
    return _msg('builtin_interfaces/msg/Time', sec, nanosec)


def _duration(duration_ns: int) -> Any:
    sec, nanosec = stamp_to_ros(duration_ns)
    return _msg('builtin_interfaces/msg/Duration', sec, nanosec)


def _header(stamp_ns: int, frame_id: str) -> Any:
    return _msg('std_msgs/msg/Header', _time(stamp_ns), frame_id)


def _point(x: float, y: float, z: float) -> Any:
    return _msg('geometry_msgs/msg/Point', float(x), float(y), float(z))


def _vector3(x: float, y: float, z: float) -> Any:
    return _msg('geometry_msgs/msg/Vector3', float(x), float(y), float(z))


def _quaternion(x: float, y: float, z: float, w: float) -> Any:
    return _msg('geometry_msgs/msg/Quaternion', float(x), float(y), float(z), float(w))


def _pose(center: Sequence[float], yaw: float = 0.0) -> Any:
    return _msg('geometry_msgs/msg/Pose', _point(*center), _quaternion(*quaternion_from_yaw(yaw)))


def _pose_with_covariance(pose: Any) -> Any:
    return _msg('geometry_msgs/msg/PoseWithCovariance', pose, np.zeros(36))


# --- images -------------------------------------------------------------------------------------


def _image_compatible(sample_encoding: str, wire_encoding: str) -> bool:
    layout = IMAGE_WIRE_ENCODINGS[wire_encoding]
    sixteen = {'mono16', '16UC1'}
    return layout.sample_encoding == sample_encoding or {sample_encoding, layout.sample_encoding} <= sixteen


def encode_image(image: CameraImage, encoding: str | None = None, *, big_endian: bool = False,
                 row_padding: int = 0) -> bytes:
    """A CameraImage as ``sensor_msgs/Image`` in ``encoding`` (default: the image's own).

    RGB images can be written as rgb8, bgr8, rgba8 or bgra8 (alpha 255); mono16 and 16UC1 as either;
    ``big_endian`` and ``row_padding`` (bytes added to each row's ``step``) exist to exercise readers.
    """
    encoding = encoding or image.encoding
    what = f'image {image.frame_id!r}'
    layout = IMAGE_WIRE_ENCODINGS.get(encoding)
    if layout is None:
        raise EncodeError(f'{what}: unknown image encoding {encoding!r}; supported: '
                          f'{", ".join(IMAGE_WIRE_ENCODINGS)}')
    if not _image_compatible(image.encoding, encoding):
        raise EncodeError(f'{what}: cannot write a {image.encoding} image as {encoding}')
    if row_padding < 0:
        raise EncodeError(f'{what}: negative row_padding {row_padding}')
    height, width = image.height, image.width
    if layout.rgb is not None:
        wire = np.full((height, width, layout.channels), 255, dtype=np.uint8)  # (H, W, C), alpha 255
        wire[..., layout.rgb] = image.pixels
    else:
        wire = image.pixels[..., np.newaxis]  # (H, W, 1)
    wire = wire.astype(layout.dtype.newbyteorder('>' if big_endian else '<'))
    row_bytes = width * layout.bytes_per_pixel
    rows = np.zeros((height, row_bytes + row_padding), dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(wire).view(np.uint8).reshape(height, row_bytes)
    msg = _msg('sensor_msgs/msg/Image', _header(image.stamp_ns, image.frame_id), height, width, encoding,
               int(big_endian), row_bytes + row_padding, rows.reshape(-1))
    return serialize(msg, 'sensor_msgs/msg/Image')


def encode_compressed_image(image: CameraImage, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """A CameraImage as ``sensor_msgs/CompressedImage`` (jpeg or png).

    ``format`` is written as image_transport does (``'rgb8; jpeg compressed bgr8'``). jpeg takes
    8-bit images only; png also 16-bit ones and is lossless. ``quality`` (1..100) applies to jpeg.
    """
    what = f'image {image.frame_id!r}'
    fmt = 'jpeg' if fmt == 'jpg' else fmt
    if fmt not in ('jpeg', 'png'):
        raise EncodeError(f"{what}: unknown compression {fmt!r}; supported: jpeg, png")
    if not 1 <= quality <= 100:
        raise EncodeError(f'{what}: jpeg quality {quality} is outside 1..100')
    if image.encoding == '32FC1' or (fmt == 'jpeg' and image.encoding in ('mono16', '16UC1')):
        raise EncodeError(f'{what}: a {image.encoding} image cannot be compressed as {fmt}')
    if image.encoding == 'rgb8':
        pixels, wire_encoding = np.ascontiguousarray(image.pixels[..., ::-1]), 'bgr8'
    else:
        pixels, wire_encoding = image.pixels, image.encoding
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    try:
        ok, buffer = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', pixels, params)
    except cv2.error as err:
        raise EncodeError(f'{what}: {fmt} compression failed: {" ".join(str(err).split())}') from err
    if not ok:
        raise EncodeError(f'{what}: {fmt} compression failed')
    msg = _msg('sensor_msgs/msg/CompressedImage', _header(image.stamp_ns, image.frame_id),
               f'{image.encoding}; {fmt} compressed {wire_encoding}',
               np.asarray(buffer, dtype=np.uint8).reshape(-1))
    return serialize(msg, 'sensor_msgs/msg/CompressedImage')


def encode_camera_info(intrinsics: CameraIntrinsics, stamp_ns: int) -> bytes:
    """CameraIntrinsics as ``sensor_msgs/CameraInfo``; model 'none' is written as ''."""
    model = '' if intrinsics.distortion_model == 'none' else intrinsics.distortion_model
    roi = _msg('sensor_msgs/msg/RegionOfInterest', 0, 0, 0, 0, False)
    msg = _msg('sensor_msgs/msg/CameraInfo', _header(stamp_ns, intrinsics.frame_id), intrinsics.height,
               intrinsics.width, model, intrinsics.d.copy(), intrinsics.k.reshape(-1).copy(),
               intrinsics.r.reshape(-1).copy(), np.asarray(intrinsics.p).reshape(-1).copy(), 0, 0, roi)
    return serialize(msg, 'sensor_msgs/msg/CameraInfo')


# --- point clouds -------------------------------------------------------------------------------


def _pointcloud_message(stamp_ns: int, frame_id: str, columns: dict[str, np.ndarray], *,
                        big_endian: bool, point_step: int | None, height: int, row_padding: int,
                        field_order: Sequence[str] | None, what: str) -> Any:
    """A PointCloud2 message from named (N,) or (N, k) columns, each written with its own dtype."""
    order = list(columns) if field_order is None else list(field_order)
    if sorted(order) != sorted(columns):
        raise EncodeError(f'{what}: field_order {order} must name each of {list(columns)} exactly once')
    count = len(columns['x'])
    if height < 1 or count % height:
        raise EncodeError(f'{what}: {count} points cannot be arranged in {height} rows')
    if row_padding < 0:
        raise EncodeError(f'{what}: negative row_padding {row_padding}')
    byte_order = '>' if big_endian else '<'
    fields, formats, offsets, offset = [], [], [], 0
    for name in order:
        values = columns[name]
        code = pointfield_datatype(values.dtype)
        if code is None:
            raise EncodeError(f'{what}: field {name!r} has dtype {values.dtype}, which PointField cannot '
                              f'carry (int8..int32, uint8..uint32, float32, float64)')
        width = 1 if values.ndim == 1 else values.shape[1]
        if width < 1:
            raise EncodeError(f'{what}: field {name!r} has no values per point (shape {values.shape})')
        wire = values.dtype.newbyteorder(byte_order)
        fields.append(_msg('sensor_msgs/msg/PointField', name, offset, code, width))
        formats.append(wire if values.ndim == 1 else (wire, (width,)))
        offsets.append(offset)
        offset += values.dtype.itemsize * width
    point_step = offset if point_step is None else int(point_step)
    if point_step < offset:
        raise EncodeError(f'{what}: point_step {point_step} is shorter than the {offset} bytes the '
                          f'fields need')
    dtype = np.dtype({'names': order, 'formats': formats, 'offsets': offsets, 'itemsize': point_step})
    records = np.zeros(count, dtype=dtype)  # (N,) structured, padding bytes zero
    for name in order:
        records[name] = columns[name]
    width = count // height
    row_bytes = width * point_step
    rows = np.zeros((height, row_bytes + row_padding), dtype=np.uint8)  # (H, row_step)
    rows[:, :row_bytes] = records.view(np.uint8).reshape(height, row_bytes)
    xyz_finite = all(np.isfinite(columns[axis]).all() for axis in 'xyz')
    return _msg('sensor_msgs/msg/PointCloud2', _header(stamp_ns, frame_id), height, width, fields,
                big_endian, point_step, row_bytes + row_padding, rows.reshape(-1), xyz_finite)


def _cloud_columns(xyz: np.ndarray, channels: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    columns = {'x': xyz[:, 0], 'y': xyz[:, 1], 'z': xyz[:, 2]}
    for name, values in channels.items():
        if name in columns:
            raise EncodeError(f'{what}: channel {name!r} clashes with a field of the same name')
        columns[name] = np.asarray(values)
    return columns


def encode_pointcloud(cloud: PointCloud, *, big_endian: bool = False, point_step: int | None = None,
                      height: int = 1, row_padding: int = 0,
                      field_order: Sequence[str] | None = None) -> bytes:
    """A PointCloud as ``sensor_msgs/PointCloud2``: x, y, z float32, then every channel in its dtype.

    Fields are packed in ``field_order`` (default x, y, z, then channels) without alignment;
    ``point_step`` may add padding after them, ``height`` organizes the cloud in rows (it must divide
    the point count) and ``row_padding`` appends bytes to each row.
    """
    what = f'point cloud {cloud.frame_id!r}'
    columns = _cloud_columns(cloud.xyz, dict(cloud.fields), what)
    msg = _pointcloud_message(cloud.stamp_ns, cloud.frame_id, columns, big_endian=big_endian,
                              point_step=point_step, height=height, row_padding=row_padding,
                              field_order=field_order, what=what)
    return serialize(msg, 'sensor_msgs/msg/PointCloud2')


def encode_radar(radar: RadarPoints, msgtype: str = 'sensor_msgs/msg/PointCloud2') -> bytes:
    """RadarPoints as ``sensor_msgs/PointCloud2`` or ``radar_msgs/RadarScan``.

    PointCloud2 gets x, y, z, doppler, rcs, vx, vy, vx_comp, vy_comp (float32) and then every
    channel; a quantity the sensor did not report (all NaN) is left out, so a decoder does not list it
    as measured. RadarScan can only carry range, azimuth, elevation, doppler and amplitude (= RCS);
    velocities and channels are not written.
    """
    msgtype = normalize_msgtype(msgtype)
    what = f'radar {radar.frame_id!r}'
    xyz = radar.xyz.astype(np.float64)  # (N, 3)
    if msgtype == 'radar_msgs/msg/RadarScan':
        distance = np.linalg.norm(xyz, axis=1)
        azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
        with np.errstate(invalid='ignore', divide='ignore'):
            elevation = np.where(distance > 0, np.arcsin(np.clip(xyz[:, 2] / distance, -1, 1)), 0.0)
        returns = [_msg('radar_msgs/msg/RadarReturn', *map(float, values))
                   for values in zip(distance, azimuth, elevation, radar.doppler, radar.rcs, strict=True)]
        msg = _msg('radar_msgs/msg/RadarScan', _header(radar.stamp_ns, radar.frame_id), returns)
        return serialize(msg, msgtype)
    if msgtype != 'sensor_msgs/msg/PointCloud2':
        raise EncodeError(f'{what}: cannot write radar as {msgtype}; supported: '
                          f'sensor_msgs/msg/PointCloud2, radar_msgs/msg/RadarScan')
    quantities = {'doppler': radar.doppler, 'rcs': radar.rcs,
                  'vx': radar.velocity[:, 0], 'vy': radar.velocity[:, 1],
                  'vx_comp': radar.velocity_comp[:, 0], 'vy_comp': radar.velocity_comp[:, 1]}
    measured = {name: values for name, values in quantities.items() if not np.all(np.isnan(values))}
    for name in radar.fields:
        if name.lower() in quantities:
            raise EncodeError(f'{what}: channel {name!r} clashes with the {name.lower()} field')
    columns = _cloud_columns(radar.xyz, {**measured, **radar.fields}, what)
    msg = _pointcloud_message(radar.stamp_ns, radar.frame_id, columns, big_endian=False, point_step=None,
                              height=1, row_padding=0, field_order=None, what=what)
    return serialize(msg, msgtype)


# --- transforms, detections, diagnostics, markers -----------------------------------------------


def encode_tf(transforms: Sequence[TransformStamped]) -> bytes:
    """Transforms as one ``tf2_msgs/TFMessage`` (publish static ones on /tf_static)."""
    items = []
    for transform in transforms:
        rigid = transform.transform
        items.append(_msg('geometry_msgs/msg/TransformStamped',
                          _header(transform.stamp_ns, transform.parent_frame), transform.child_frame,
                          _msg('geometry_msgs/msg/Transform', _vector3(*rigid.translation),
                               _quaternion(*rigid.as_quaternion()))))
    return serialize(_msg('tf2_msgs/msg/TFMessage', items), 'tf2_msgs/msg/TFMessage')


def encode_detections(detections: Detections3D) -> bytes:
    """Detections3D as ``vision_msgs/Detection3DArray`` (convention in the module docstring)."""
    header = _header(detections.stamp_ns, detections.frame_id)
    items = []
    for row in range(len(detections)):
        label, score = detections.labels[row], float(detections.scores[row])
        if label == VELOCITY_CLASS_ID:
            raise EncodeError(f'detections {detections.frame_id!r}: box {detections.ids[row]!r} has label '
                              f'{label!r}, which is reserved for the velocity hypothesis')
        pose = _pose(detections.centers[row], detections.yaws[row])
        results = [_msg('vision_msgs/msg/ObjectHypothesisWithPose',
                        _msg('vision_msgs/msg/ObjectHypothesis', label, score), _pose_with_covariance(pose))]
        vx, vy = detections.velocities[row]
        if not (np.isnan(vx) and np.isnan(vy)):
            velocity_pose = _msg('geometry_msgs/msg/Pose', _point(vx, vy, 0.0), _quaternion(0, 0, 0, 1))
            results.append(_msg('vision_msgs/msg/ObjectHypothesisWithPose',
                                _msg('vision_msgs/msg/ObjectHypothesis', VELOCITY_CLASS_ID, 0.0),
                                _pose_with_covariance(velocity_pose)))
        bbox = _msg('vision_msgs/msg/BoundingBox3D', pose, _vector3(*detections.sizes[row]))
        items.append(_msg('vision_msgs/msg/Detection3D', header, results, bbox, detections.ids[row]))
    msg = _msg('vision_msgs/msg/Detection3DArray', header, items)
    return serialize(msg, 'vision_msgs/msg/Detection3DArray')


def encode_float64(value: float) -> bytes:
    """One number as ``std_msgs/Float64`` (the debug timing topics, in milliseconds)."""
    return serialize(_msg('std_msgs/msg/Float64', float(value)), 'std_msgs/msg/Float64')


def encode_diagnostics(stamp_ns: int, statuses: Sequence[DiagnosticStatus]) -> bytes:
    """Statuses as one ``diagnostic_msgs/DiagnosticArray``."""
    items = [_msg('diagnostic_msgs/msg/DiagnosticStatus', status.level, status.name, status.message,
                  status.hardware_id,
                  [_msg('diagnostic_msgs/msg/KeyValue', key, value) for key, value in status.values])
             for status in statuses]
    msg = _msg('diagnostic_msgs/msg/DiagnosticArray', _header(stamp_ns, ''), items)
    return serialize(msg, 'diagnostic_msgs/msg/DiagnosticArray')


def _marker(header: Any, ns: str, marker_id: int, marker_type: int, action: int, pose: Any, scale: Any,
            rgba: Sequence[float], lifetime_ns: int, *, points: Sequence[Any] = (), text: str = '') -> Any:
    color = _msg('std_msgs/msg/ColorRGBA', *map(float, rgba))
    texture = _msg('sensor_msgs/msg/CompressedImage', _header(0, ''), '', np.zeros(0, np.uint8))
    mesh = _msg('visualization_msgs/msg/MeshFile', '', np.zeros(0, np.uint8))
    return _msg('visualization_msgs/msg/Marker', header, ns, int(marker_id), marker_type, action, pose,
                scale, color, _duration(lifetime_ns), False, list(points), [], '', texture, [], text, '',
                mesh, False)


def encode_markers(stamp_ns: int, frame_id: str, markers: Sequence[BoxMarker],
                   namespace: str = 'mmfusion') -> bytes:
    """Boxes as a ``visualization_msgs/MarkerArray`` that RViz and Foxglove draw.

    First DELETEALL markers, so boxes from the previous frame vanish (one per namespace we draw in:
    some viewers clear everything on DELETEALL, others only the marker's namespace); then per box a CUBE
    (``<namespace>/box``), a TEXT_VIEW_FACING label above it (``<namespace>/label``, when the label is
    not empty) and, faster than 0.1 m/s, an ARROW from the centre to where the box will be in one
    second (``<namespace>/velocity``). All three share the box's id.
    """
    types = typestore().types
    marker_cls = types['visualization_msgs/msg/Marker']
    header = _header(stamp_ns, frame_id)
    identity = _pose((0.0, 0.0, 0.0))
    items = [_marker(header, namespace + suffix, 0, marker_cls.CUBE, marker_cls.DELETEALL, identity,
                     _vector3(1, 1, 1), (0, 0, 0, 0), 0)
             for suffix in (BOX_NS_SUFFIX, LABEL_NS_SUFFIX, VELOCITY_NS_SUFFIX)]
    for box in markers:
        center, size = box.center, box.size
        items.append(_marker(header, namespace + BOX_NS_SUFFIX, box.id, marker_cls.CUBE, marker_cls.ADD,
                             _pose(center, box.yaw), _vector3(*size), box.rgba, box.lifetime_ns))
        if box.label:
            above = (center[0], center[1], center[2] + 0.5 * size[2] + _LABEL_CLEARANCE)
            items.append(_marker(header, namespace + LABEL_NS_SUFFIX, box.id, marker_cls.TEXT_VIEW_FACING,
                                 marker_cls.ADD, _pose(above), _vector3(0, 0, _LABEL_HEIGHT),
                                 (1.0, 1.0, 1.0, 1.0), box.lifetime_ns, text=box.label))
        vx, vy = box.velocity
        if np.hypot(vx, vy) > _MIN_ARROW_SPEED:
            start = _point(*center)
            end = _point(center[0] + vx, center[1] + vy, center[2])
            items.append(_marker(header, namespace + VELOCITY_NS_SUFFIX, box.id, marker_cls.ARROW,
                                 marker_cls.ADD, identity, _vector3(_ARROW_SHAFT, _ARROW_HEAD, _ARROW_HEAD),
                                 (*box.rgba[:3], 1.0), box.lifetime_ns, points=(start, end)))
    msg = _msg('visualization_msgs/msg/MarkerArray', items)
    return serialize(msg, 'visualization_msgs/msg/MarkerArray')
