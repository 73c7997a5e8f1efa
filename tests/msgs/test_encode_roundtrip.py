"""Samples survive encode then decode: exactly where the wire is lossless, closely where it is not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import EncodeError
from mmfusion_ros.msgs import (
    decode_camera_info,
    decode_compressed_image,
    decode_detections,
    decode_diagnostics,
    decode_image,
    decode_markers,
    decode_pointcloud,
    decode_radar,
    decode_tf,
    deserialize,
    encode_camera_info,
    encode_compressed_image,
    encode_detections,
    encode_diagnostics,
    encode_image,
    encode_markers,
    encode_pointcloud,
    encode_radar,
    encode_tf,
)
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
)

STAMP = 1_532_402_927_647_951_000
RNG = np.random.default_rng(1234)


def assert_clouds_equal(out: PointCloud, expected: PointCloud) -> None:
    assert (out.stamp_ns, out.frame_id, out.dropped_invalid) == (expected.stamp_ns, expected.frame_id, 0)
    np.testing.assert_array_equal(out.xyz, expected.xyz)
    assert set(out.fields) == set(expected.fields)
    for name, values in expected.fields.items():
        assert out.fields[name].dtype == values.dtype.newbyteorder('='), name
        assert out.fields[name].dtype.isnative and out.fields[name].flags.c_contiguous
        np.testing.assert_array_equal(out.fields[name], values, err_msg=name)


# --- images -------------------------------------------------------------------------------------

COLOUR = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
SAMPLES = {
    'rgb8': COLOUR,
    'mono8': RNG.integers(0, 256, (7, 9), dtype=np.uint8),
    'mono16': RNG.integers(0, 65536, (7, 9), dtype=np.uint16),
    '16UC1': RNG.integers(0, 65536, (7, 9), dtype=np.uint16),
    '32FC1': RNG.normal(size=(7, 9)).astype(np.float32),
}
WIRE = [('rgb8', 'rgb8'), ('rgb8', 'bgr8'), ('rgb8', 'rgba8'), ('rgb8', 'bgra8'), ('mono8', 'mono8'),
        ('mono8', '8UC1'), ('mono16', 'mono16'), ('mono16', '16UC1'), ('16UC1', '16UC1'), ('16UC1', 'mono16'),
        ('32FC1', '32FC1')]


@pytest.mark.parametrize(('sample', 'wire'), WIRE)
@pytest.mark.parametrize('big_endian', [False, True])
@pytest.mark.parametrize('row_padding', [0, 3])
def test_image_every_encoding(sample: str, wire: str, big_endian: bool, row_padding: int) -> None:
    image = CameraImage(STAMP, 'cam', SAMPLES[sample], sample)
    raw = encode_image(image, wire, big_endian=big_endian, row_padding=row_padding)
    msg = deserialize(raw, 'sensor_msgs/msg/Image')
    assert (msg.encoding, msg.is_bigendian, msg.width, msg.height) == (wire, int(big_endian), 9, 7)
    out = decode_image(raw)
    expected_encoding = {'8UC1': 'mono8', 'rgb8': 'rgb8', 'bgr8': 'rgb8', 'rgba8': 'rgb8', 'bgra8': 'rgb8'}
    assert out.encoding == expected_encoding.get(wire, wire)
    assert (out.stamp_ns, out.frame_id) == (STAMP, 'cam')
    assert out.pixels.dtype.isnative and out.pixels.flags.c_contiguous
    np.testing.assert_array_equal(out.pixels, image.pixels)


def test_image_bgr_wire_order_is_bgr() -> None:
    raw = encode_image(CameraImage(1, 'c', COLOUR, 'rgb8'), 'bgra8')
    data = deserialize(raw, 'sensor_msgs/msg/Image').data.reshape(7, 9, 4)
    np.testing.assert_array_equal(data[..., :3], COLOUR[..., ::-1])
    assert np.all(data[..., 3] == 255)


@pytest.mark.parametrize(('sample', 'wire', 'message'), [
    ('rgb8', 'mono8', r"^image 'cam': cannot write a rgb8 image as mono8$"),
    ('32FC1', '16UC1', r'cannot write a 32FC1 image as 16UC1'),
    ('mono8', 'yuv422', r"unknown image encoding 'yuv422'; supported: rgb8, "),
])
def test_image_encode_errors(sample: str, wire: str, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_image(CameraImage(1, 'cam', SAMPLES[sample], sample), wire)


def test_png_is_exact() -> None:
    for encoding in ('rgb8', 'mono8', 'mono16', '16UC1'):
        image = CameraImage(STAMP, 'cam', SAMPLES[encoding], encoding)
        out = decode_compressed_image(encode_compressed_image(image, 'png'))
        assert (out.encoding, out.stamp_ns, out.frame_id) == (encoding, STAMP, 'cam')
        np.testing.assert_array_equal(out.pixels, image.pixels)


def test_jpeg_is_close() -> None:
    yy, xx = np.mgrid[0:64, 0:96]
    smooth = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).astype(np.uint8)  # (64, 96, 3)
    raw = encode_compressed_image(CameraImage(STAMP, 'cam', smooth, 'rgb8'), 'jpeg', quality=95)
    assert deserialize(raw, 'sensor_msgs/msg/CompressedImage').format == 'rgb8; jpeg compressed bgr8'
    out = decode_compressed_image(raw)
    assert out.encoding == 'rgb8' and out.pixels.shape == smooth.shape
    error = np.abs(out.pixels.astype(int) - smooth.astype(int))
    assert error.mean() < 2.0 and error.max() < 20
    grey = decode_compressed_image(
        encode_compressed_image(CameraImage(1, 'g', smooth[..., 0], 'mono8'), 'jpg'))
    assert grey.encoding == 'mono8' and np.abs(grey.pixels.astype(int) - smooth[..., 0]).mean() < 2.0


@pytest.mark.parametrize(('encoding', 'fmt', 'quality', 'message'), [
    ('32FC1', 'png', 90, r"^image 'cam': a 32FC1 image cannot be compressed as png$"),
    ('mono16', 'jpeg', 90, r'a mono16 image cannot be compressed as jpeg'),
    ('rgb8', 'webp', 90, r"unknown compression 'webp'; supported: jpeg, png"),
    ('rgb8', 'jpeg', 0, r'jpeg quality 0 is outside 1..100'),
])
def test_compressed_encode_errors(encoding: str, fmt: str, quality: int, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_compressed_image(CameraImage(1, 'cam', SAMPLES[encoding], encoding), fmt, quality)


# --- camera info --------------------------------------------------------------------------------

K = np.array([[1266.417203046554, 0.0, 816.2670197447984], [0.0, 1266.417203046554, 491.50706579294757],
              [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(('model', 'd'), [
    ('plumb_bob', [-0.3, 0.1, 0.001, -0.002, 0.0]),
    ('rational_polynomial', [-0.3, 0.1, 0.001, -0.002, 0.01, 0.2, -0.05, 0.003]),
    ('equidistant', [0.01, -0.02, 0.003, -0.0004]),
    ('none', []),
])
def test_camera_info(model: str, d: list[float]) -> None:
    r = RigidTransform.from_quaternion(np.array([0.01, -0.02, 0.03, 1.0]), np.zeros(3)).rotation
    p = np.hstack([K * 0.9, np.array([[-120.5], [0.0], [0.0]])])
    info = CameraIntrinsics('CAM_FRONT', 1600, 900, K, model, np.array(d), r, p)
    raw = encode_camera_info(info, STAMP)
    msg = deserialize(raw, 'sensor_msgs/msg/CameraInfo')
    assert msg.header.stamp.sec == STAMP // 10**9
    assert msg.distortion_model == ('' if model == 'none' else model)
    out = decode_camera_info(raw)
    assert (out.frame_id, out.width, out.height, out.distortion_model) == ('CAM_FRONT', 1600, 900, model)
    for name in ('k', 'd', 'r', 'p'):
        np.testing.assert_array_equal(getattr(out, name), getattr(info, name), err_msg=name)


# --- point clouds -------------------------------------------------------------------------------

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64]


def random_values(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    values = (rng.normal(size=shape) * 1e3).astype(dtype)
    values.reshape(-1)[:: 7] = np.nan  # NaN in channels is data, not an invalid point
    return values


@st.composite
def layouts(draw: st.DrawFn) -> tuple[PointCloud, dict]:
    """A cloud with random channels plus a random wire layout to write it in."""
    height = draw(st.integers(1, 4))
    count = height * draw(st.integers(0, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    names = draw(st.lists(st.from_regex(r'[a-w][a-z_0-9]{0,8}', fullmatch=True), max_size=6, unique=True))
    channels = {}
    for name in names:
        dtype = draw(st.sampled_from(DTYPES))
        width = draw(st.integers(1, 3))
        channels[name] = random_values(rng, dtype, (count,) if width == 1 else (count, width))
    xyz = (rng.normal(size=(count, 3)) * 50).astype(np.float32)
    order = draw(st.permutations(['x', 'y', 'z', *names]))
    options = {'big_endian': draw(st.booleans()), 'height': height, 'row_padding': draw(st.integers(0, 9)),
               'field_order': order}
    if draw(st.booleans()):
        packed = 12 + sum(v.dtype.itemsize * (1 if v.ndim == 1 else v.shape[1]) for v in channels.values())
        options['point_step'] = packed + draw(st.integers(0, 7))
    return PointCloud(STAMP, 'lidar', xyz, channels), options


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_pointcloud_any_layout(case: tuple[PointCloud, dict]) -> None:
    cloud, options = case
    raw = encode_pointcloud(cloud, **options)
    msg = deserialize(raw, 'sensor_msgs/msg/PointCloud2')
    assert [f.name for f in msg.fields] == list(options['field_order'])
    assert bool(msg.is_bigendian) == options['big_endian'] and msg.height == options['height']
    assert msg.row_step == msg.width * msg.point_step + options['row_padding']
    assert_clouds_equal(decode_pointcloud(raw), cloud)


def test_pointcloud_every_datatype_and_count() -> None:
    channels = {f'c{i}': random_values(RNG, dtype, (12,)) for i, dtype in enumerate(DTYPES)}
    channels |= {f'v{i}': random_values(RNG, dtype, (12, 3)) for i, dtype in enumerate(DTYPES)}
    cloud = PointCloud(STAMP, 'lidar', RNG.normal(size=(12, 3)).astype(np.float32), channels)
    for options in ({}, {'big_endian': True}, {'point_step': 300, 'height': 3, 'row_padding': 5}):
        raw = encode_pointcloud(cloud, **options)
        fields = deserialize(raw, 'sensor_msgs/msg/PointCloud2').fields
        codes = {f.name: (f.datatype, f.count) for f in fields}
        assert [codes[f'c{i}'] for i in range(8)] == [(i + 1, 1) for i in range(8)]
        assert [codes[f'v{i}'] for i in range(8)] == [(i + 1, 3) for i in range(8)]
        assert_clouds_equal(decode_pointcloud(raw), cloud)


def test_pointcloud_organized_row_major() -> None:
    xyz = np.arange(24, dtype=np.float32).reshape(8, 3)
    raw = encode_pointcloud(PointCloud(1, 'l', xyz), height=2, row_padding=7, point_step=16)
    msg = deserialize(raw, 'sensor_msgs/msg/PointCloud2')
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (2, 4, 16, 71)
    np.testing.assert_array_equal(decode_pointcloud(raw).xyz, xyz)


def test_pointcloud_is_dense_flag() -> None:
    xyz = np.ones((2, 3), np.float32)
    assert deserialize(encode_pointcloud(PointCloud(1, 'l', xyz)), 'sensor_msgs/msg/PointCloud2').is_dense
    xyz[0, 1] = np.nan
    out = deserialize(encode_pointcloud(PointCloud(1, 'l', xyz)), 'sensor_msgs/msg/PointCloud2')
    assert not out.is_dense


@pytest.mark.parametrize(('fields', 'options', 'message'), [
    ({'t': np.zeros(4, np.int64)}, {},
     r"^point cloud 'lidar': field 't' has dtype int64, which PointField cannot "),
    ({'b': np.zeros(4, bool)}, {}, r"field 'b' has dtype bool"),
    ({}, {'field_order': ['x', 'y']},
     r"field_order \['x', 'y'\] must name each of \['x', 'y', 'z'\] exactly once"),
    ({}, {'height': 3}, r'4 points cannot be arranged in 3 rows'),
    ({}, {'point_step': 11}, r'point_step 11 is shorter than the 12 bytes the fields need'),
    ({'x': np.zeros(4, np.float32)}, {}, r"channel 'x' clashes with a field of the same name"),
    ({}, {'row_padding': -1}, r'negative row_padding -1'),
])
def test_pointcloud_encode_errors(fields: dict, options: dict, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode_pointcloud(PointCloud(1, 'lidar', np.zeros((4, 3), np.float32), fields), **options)


# --- radar --------------------------------------------------------------------------------------


def radar_sample(count: int = 6) -> RadarPoints:
    xyz = (RNG.normal(size=(count, 3)) * 20).astype(np.float32)
    def normal(*shape: int) -> np.ndarray:
        return RNG.normal(size=shape).astype(np.float32)

    return RadarPoints(STAMP, 'radar', xyz, normal(count), normal(count), normal(count, 2), normal(count, 2),
                       {'track_id': np.arange(count, dtype=np.uint16), 'prob': RNG.random(count)})


def test_radar_pointcloud_round_trip() -> None:
    radar = radar_sample()
    raw = encode_radar(radar, 'sensor_msgs/msg/PointCloud2')
    names = [f.name for f in deserialize(raw, 'sensor_msgs/msg/PointCloud2').fields]
    assert names == ['x', 'y', 'z', 'doppler', 'rcs', 'vx', 'vy', 'vx_comp', 'vy_comp', 'track_id', 'prob']
    out = decode_radar(raw, 'sensor_msgs/msg/PointCloud2')
    assert out.source_fields == tuple(names[:9])
    for name in ('xyz', 'doppler', 'rcs', 'velocity', 'velocity_comp'):
        np.testing.assert_array_equal(getattr(out, name), getattr(radar, name), err_msg=name)
    assert set(out.fields) == {'track_id', 'prob'}
    np.testing.assert_array_equal(out.fields['prob'], radar.fields['prob'])


def test_radar_pointcloud_leaves_out_unmeasured() -> None:
    xyz = np.ones((3, 3), np.float32)
    partial = RadarPoints.unmeasured(3) | {'doppler': np.array([1, 2, 3], np.float32)}
    raw = encode_radar(RadarPoints(1, 'r', xyz, **partial), 'sensor_msgs/PointCloud2')
    out = decode_radar(raw, 'sensor_msgs/msg/PointCloud2')
    assert out.source_fields == ('x', 'y', 'z', 'doppler')
    np.testing.assert_array_equal(out.doppler, [1, 2, 3])
    assert np.all(np.isnan(out.rcs)) and np.all(np.isnan(out.velocity))


def test_radar_scan_round_trip() -> None:
    radar = radar_sample()
    raw = encode_radar(radar, 'radar_msgs/msg/RadarScan')
    assert len(deserialize(raw, 'radar_msgs/msg/RadarScan').returns) == len(radar)
    out = decode_radar(raw, 'radar_msgs/msg/RadarScan')
    np.testing.assert_allclose(out.xyz, radar.xyz, atol=1e-4)
    np.testing.assert_array_equal(out.doppler, radar.doppler)
    np.testing.assert_array_equal(out.rcs, radar.rcs)
    assert np.all(np.isnan(out.velocity)) and not out.fields


def test_radar_encode_errors() -> None:
    radar = radar_sample()
    with pytest.raises(EncodeError, match=r"^radar 'radar': cannot write radar as sensor_msgs/msg/Image; "):
        encode_radar(radar, 'sensor_msgs/msg/Image')
    clash = RadarPoints(1, 'radar', radar.xyz, radar.doppler, radar.rcs, radar.velocity, radar.velocity_comp,
                        {'RCS': radar.rcs})
    with pytest.raises(EncodeError, match=r"channel 'RCS' clashes with the rcs field"):
        encode_radar(clash)


# --- tf, detections, diagnostics, markers -------------------------------------------------------


def test_tf_round_trip() -> None:
    poses = [RigidTransform.from_quaternion(RNG.normal(size=4), RNG.normal(size=3)) for _ in range(4)]
    edges = [TransformStamped(STAMP + i, 'base_link', f'sensor_{i}', pose, static=True)
             for i, pose in enumerate(poses)]
    out = decode_tf(encode_tf(edges), static=True)
    assert len(out) == 4
    for got, want in zip(out, edges, strict=True):
        assert (got.stamp_ns, got.parent_frame, got.child_frame, got.static) == (
            want.stamp_ns, want.parent_frame, want.child_frame, True)
        np.testing.assert_array_equal(got.transform.translation, want.transform.translation)
        np.testing.assert_allclose(got.transform.rotation, want.transform.rotation, atol=1e-12)


def detections_sample(count: int) -> Detections3D:
    velocities = RNG.normal(size=(count, 2))
    if count > 1:
        velocities[1] = np.nan  # velocity unknown: no hypothesis written, NaN read back
    return Detections3D(STAMP, 'base_link', RNG.normal(size=(count, 3)) * 30, RNG.random((count, 3)) * 5,
                        RNG.uniform(-np.pi, np.pi, count), velocities,
                        tuple(RNG.choice(['car', 'pedestrian', 'barrier'], count)), RNG.random(count),
                        tuple(f'track-{i}' for i in range(count)))


@pytest.mark.parametrize('count', [0, 1, 7])
def test_detections_round_trip_exactly(count: int) -> None:
    detections = detections_sample(count)
    raw = encode_detections(detections)
    out = decode_detections(raw)
    assert (out.stamp_ns, out.frame_id, out.labels, out.ids) == (
        detections.stamp_ns, detections.frame_id, detections.labels, detections.ids)
    for name in ('centers', 'sizes', 'velocities', 'scores'):
        np.testing.assert_array_equal(getattr(out, name), getattr(detections, name), err_msg=name)
    np.testing.assert_allclose(out.yaws, detections.yaws, rtol=0, atol=1e-14)
    again = decode_detections(encode_detections(out))
    np.testing.assert_array_equal(again.yaws, out.yaws)


def test_detections_wire_convention() -> None:
    detections = detections_sample(2)
    msg = deserialize(encode_detections(detections), 'vision_msgs/msg/Detection3DArray')
    first = msg.detections[0]
    assert first.id == 'track-0' and first.header.frame_id == 'base_link'
    assert first.results[0].hypothesis.class_id == detections.labels[0]
    assert (first.results[1].hypothesis.class_id, first.results[1].hypothesis.score) == ('velocity', 0.0)
    position = first.results[1].pose.pose.position
    assert (position.x, position.y, position.z) == (*detections.velocities[0], 0.0)
    assert first.results[0].pose.pose == first.bbox.center
    assert (first.bbox.size.x, first.bbox.size.y, first.bbox.size.z) == tuple(detections.sizes[0])
    assert len(msg.detections[1].results) == 1  # unknown velocity: no velocity hypothesis


def test_detections_reserved_label() -> None:
    detections = Detections3D(1, 'f', np.zeros((1, 3)), np.ones((1, 3)), np.zeros(1), np.zeros((1, 2)),
                              ('velocity',), np.ones(1))
    with pytest.raises(EncodeError, match=r"box '0' has label 'velocity', which is reserved"):
        encode_detections(detections)


def test_diagnostics_round_trip() -> None:
    statuses = [DiagnosticStatus(DiagnosticStatus.OK, 'mmfusion: camera', 'ok', 'CAM_FRONT',
                                 (('rate_hz', '12.0'),)),
                DiagnosticStatus(DiagnosticStatus.WARN, 'mmfusion: lidar', 'late by 40 ms'),
                DiagnosticStatus(DiagnosticStatus.ERROR, 'mmfusion: radar', 'no data', 'ars408',
                                 (('last', 'never'), ('topic', '/radar'))),
                DiagnosticStatus(DiagnosticStatus.STALE, 'mmfusion: fusion', '')]
    stamp, out = decode_diagnostics(encode_diagnostics(STAMP, statuses))
    assert stamp == STAMP and out == statuses


def test_diagnostic_status_rejects_bad_level() -> None:
    with pytest.raises(ValueError, match=r"level 4 is not one of 0 OK, 1 WARN, 2 ERROR, 3 STALE"):
        DiagnosticStatus(4, 'x')


def test_markers_round_trip() -> None:
    boxes = [BoxMarker(3, np.array([10.0, -2.0, 0.8]), np.array([4.5, 1.9, 1.6]), 0.7,
                       np.array([1, 0.5, 0, 0.8]), 'car 0.93', np.array([5.0, -1.0]), 250_000_000),
             BoxMarker(4, np.array([1.0, 2.0, 0.5]), np.array([0.6, 0.6, 1.8]), -2.5,
                       np.array([0, 0, 1, 1]), '', np.array([0.05, 0.0]), 0)]
    raw = encode_markers(STAMP, 'base_link', boxes, namespace='fusion')
    msg = deserialize(raw, 'visualization_msgs/msg/MarkerArray')
    kinds = [(m.ns, m.id, m.type, m.action) for m in msg.markers]
    clear = [('fusion/box', 0, 1, 3), ('fusion/label', 0, 1, 3), ('fusion/velocity', 0, 1, 3)]
    assert kinds == [*clear, ('fusion/box', 3, 1, 0), ('fusion/label', 3, 9, 0),
                     ('fusion/velocity', 3, 0, 0), ('fusion/box', 4, 1, 0)]
    assert all(m.header.frame_id == 'base_link' and m.header.stamp.sec == STAMP // 10**9 for m in msg.markers)
    assert msg.markers[4].text == 'car 0.93' and msg.markers[4].pose.position.z > 0.8 + 0.8
    assert (msg.markers[3].lifetime.sec, msg.markers[3].lifetime.nanosec) == (0, 250_000_000)
    out = decode_markers(raw)
    assert [b.id for b in out] == [3, 4]
    for got, want in zip(out, boxes, strict=True):
        np.testing.assert_array_equal(got.center, want.center)
        np.testing.assert_array_equal(got.size, want.size)
        np.testing.assert_allclose(got.yaw, want.yaw, atol=1e-14)
        np.testing.assert_allclose(got.rgba, want.rgba, atol=1e-7)  # ColorRGBA is float32
        assert (got.label, got.lifetime_ns) == (want.label, want.lifetime_ns)
    np.testing.assert_allclose(out[0].velocity, [5.0, -1.0], atol=1e-12)
    np.testing.assert_array_equal(out[1].velocity, [0.0, 0.0])  # below 0.1 m/s: no arrow


def test_markers_empty_still_clears() -> None:
    msg = deserialize(encode_markers(STAMP, 'map', []), 'visualization_msgs/msg/MarkerArray')
    assert [(m.ns, m.action) for m in msg.markers] == [('mmfusion/box', 3), ('mmfusion/label', 3),
                                                       ('mmfusion/velocity', 3)]
    assert decode_markers(encode_markers(STAMP, 'map', [])) == []
