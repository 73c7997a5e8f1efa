"""Decoder behaviour beyond round trips: conventions, odd inputs, and every error path."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from mmfusion_ros.errors import DecodeError
from mmfusion_ros.msgs import (
    decode,
    decode_camera_info,
    decode_compressed_image,
    decode_detections,
    decode_diagnostics,
    decode_image,
    decode_markers,
    decode_pointcloud,
    decode_radar,
    decode_tf,
    encode_camera_info,
    encode_compressed_image,
    encode_detections,
    encode_image,
    encode_pointcloud,
    encode_tf,
    typestore,
)
from mmfusion_ros.msgs.typestore import serialize
from mmfusion_ros.types import (
    CameraImage,
    CameraIntrinsics,
    Detections3D,
    PointCloud,
    RigidTransform,
    TransformStamped,
)

PC2 = 'sensor_msgs/msg/PointCloud2'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'


def one_line(info: pytest.ExceptionInfo) -> str:
    text = str(info.value)
    assert '\n' not in text, text
    return text


def cloud(count: int = 4, **fields: np.ndarray) -> PointCloud:
    xyz = np.arange(count * 3, dtype=np.float32).reshape(count, 3)
    return PointCloud(7, 'lidar', xyz, fields)


def header(stamp: tuple[int, int] = (1, 2), frame_id: str = 'f') -> object:
    types = typestore().types
    return types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](*stamp), frame_id)


# --- point clouds -------------------------------------------------------------------------------


def test_pointcloud_data_shorter_than_the_layout(rewrite) -> None:
    raw = encode_pointcloud(cloud(10, intensity=np.ones(10, np.float32)))

    def cut(msg: object) -> None:
        msg.data = msg.data[:-1]

    with pytest.raises(DecodeError, match=r'^/lidar: PointCloud2 data has 159 bytes, expected at least 160 '
                                          r'\(height 1, width 10, point_step 16, row_step 160\)$') as info:
        decode_pointcloud(rewrite(raw, PC2, cut), '/lidar')
    one_line(info)


def test_pointcloud_organized_data_shorter_than_the_rows(rewrite) -> None:
    raw = encode_pointcloud(cloud(6), height=2, row_padding=4)

    def cut(msg: object) -> None:
        msg.data = msg.data[:(msg.row_step + msg.width * msg.point_step) - 1]

    with pytest.raises(DecodeError, match=r'data has 75 bytes, expected at least 76 \(height 2, width 3'):
        decode_pointcloud(rewrite(raw, PC2, cut), '/lidar')


def test_pointcloud_missing_x(rewrite) -> None:
    raw = encode_pointcloud(cloud(3, intensity=np.ones(3, np.float32)))

    def rename(msg: object) -> None:
        msg.fields[0].name = 'q'

    with pytest.raises(DecodeError,
                       match=r"^/lidar: PointCloud2 has no field 'x' \(fields: q, y, z, intensity\)$"):
        decode_pointcloud(rewrite(raw, PC2, rename), '/lidar')


@pytest.mark.parametrize('datatype', [0, 9, 255])
def test_pointcloud_unknown_datatype(rewrite, datatype: int) -> None:
    raw = encode_pointcloud(cloud(3, intensity=np.ones(3, np.float32)))

    def retype(msg: object) -> None:
        msg.fields[3].datatype = datatype

    with pytest.raises(DecodeError, match=rf"^/lidar: PointCloud2 field 'intensity' has unknown datatype "
                                          rf"{datatype} \(known: 1 int8, 2 uint8, .* 8 float64\)$"):
        decode_pointcloud(rewrite(raw, PC2, retype), '/lidar')


def test_pointcloud_duplicate_field(rewrite) -> None:
    raw = encode_pointcloud(cloud(3, intensity=np.ones(3, np.float32)))

    def duplicate(msg: object) -> None:
        msg.fields[3].name = 'z'

    with pytest.raises(DecodeError, match=r"^/lidar: PointCloud2 field 'z' appears more than once$"):
        decode_pointcloud(rewrite(raw, PC2, duplicate), '/lidar')


def test_pointcloud_field_beyond_point_step(rewrite) -> None:
    raw = encode_pointcloud(cloud(3, t=np.ones(3)))

    def shrink(msg: object) -> None:
        msg.point_step = 18
        msg.row_step = 54

    with pytest.raises(DecodeError, match=r"field 't' \(1 x float64 at offset 12\) ends at byte 20 but "
                                          r"point_step is 18$"):
        decode_pointcloud(rewrite(raw, PC2, shrink), '/lidar')


def test_pointcloud_row_step_too_short(rewrite) -> None:
    raw = encode_pointcloud(cloud(6), height=2)

    def shrink(msg: object) -> None:
        msg.row_step = 20

    with pytest.raises(DecodeError, match=r'row_step 20 is shorter than width 3 x point_step 12 = 36$'):
        decode_pointcloud(rewrite(raw, PC2, shrink), '/lidar')


def test_pointcloud_coordinate_with_count(rewrite) -> None:
    raw = encode_pointcloud(cloud(2, pad=np.zeros((2, 2), np.float32)))

    def widen(msg: object) -> None:
        msg.fields[0].count = 3

    with pytest.raises(DecodeError, match=r"field 'x' has count 3; expected a single value per point$"):
        decode_pointcloud(rewrite(raw, PC2, widen), '/lidar')


def test_pointcloud_padding_fields_and_zero_count(rewrite) -> None:
    raw = encode_pointcloud(cloud(3, a=np.ones(3, np.float32), b=np.full(3, 2, np.uint8)))

    def pcl_style(msg: object) -> None:
        msg.fields[3].name = '_'
        msg.fields[4].count = 0

    out = decode_pointcloud(rewrite(raw, PC2, pcl_style))
    assert list(out.fields) == ['b'] and out.field('b').tolist() == [2, 2, 2]


def test_pointcloud_drops_and_counts_non_finite_points() -> None:
    xyz = np.arange(18, dtype=np.float32).reshape(6, 3)
    xyz[1, 0], xyz[3, 2], xyz[4] = np.nan, np.inf, -np.inf
    intensity = np.arange(6, dtype=np.float32)
    raw = encode_pointcloud(PointCloud(1, 'l', xyz, {'intensity': intensity, 'v': np.ones((6, 2))}))
    out = decode_pointcloud(raw)
    assert out.dropped_invalid == 3 and len(out) == 3
    np.testing.assert_array_equal(out.xyz, xyz[[0, 2, 5]])
    np.testing.assert_array_equal(out.field('intensity'), [0, 2, 5])
    assert out.field('v').shape == (3, 2)


def test_leading_slash_stripped_from_sensor_frames(rewrite) -> None:
    def slash(msg: object) -> None:
        msg.header.frame_id = '/lidar'

    assert decode_pointcloud(rewrite(encode_pointcloud(cloud(1)), PC2, slash)).frame_id == 'lidar'
    raw = rewrite(encode_image(rgb()), 'sensor_msgs/msg/Image', slash)
    assert decode_image(raw).frame_id == 'lidar'


def test_pointcloud_empty() -> None:
    out = decode_pointcloud(encode_pointcloud(cloud(0, i=np.zeros(0, np.uint8))))
    assert len(out) == 0 and out.field('i').dtype == np.uint8


def test_pointcloud_does_not_alias_the_message_buffer() -> None:
    raw = bytearray(encode_pointcloud(cloud(4, i=np.arange(4, dtype=np.float32))))
    out = decode_pointcloud(raw)
    raw[:] = bytes(len(raw))
    assert out.xyz[1, 0] == 3 and out.field('i')[3] == 3


def test_pointcloud_200k_points_with_padded_layout_decode_exactly() -> None:
    # Sweep-sized input through the vectorised path (decode speed is measured by the benchmark).
    rng = np.random.default_rng(0)
    count = 200_000
    big = PointCloud(0, 'l', rng.normal(size=(count, 3)).astype(np.float32),
                     {'intensity': rng.random(count, np.float32),
                      'ring': rng.integers(0, 64, count, np.uint16), 'timestamp': rng.random(count)})
    out = decode_pointcloud(encode_pointcloud(big, point_step=32))
    np.testing.assert_array_equal(out.xyz, big.xyz)
    for name in ('intensity', 'ring', 'timestamp'):
        np.testing.assert_array_equal(out.field(name), big.field(name))
        assert out.field(name).dtype == big.field(name).dtype


# --- radar --------------------------------------------------------------------------------------


def test_radar_doppler_derived_from_nuscenes_vx_vy() -> None:
    xyz = np.array([[10, 0, 0], [0, 10, 0], [3, 4, 0], [0, 0, 0], [6, 0, 8]], dtype=np.float32)
    vx = np.array([-5, 0, 3, 1, 2], dtype=np.float32)
    vy = np.array([0, 3, 4, 1, 7], dtype=np.float32)
    channels = {'vx': vx, 'vy': vy, 'vx_comp': vx + 1, 'vy_comp': vy - 1, 'rcs': np.full(5, 7, np.float32),
                'dyn_prop': np.arange(5, dtype=np.uint8)}
    radar = decode_radar(encode_pointcloud(PointCloud(3, 'radar', xyz, channels)), PC2, '/radar')
    np.testing.assert_allclose(radar.doppler, [-5, 3, 5, np.nan, 1.2], rtol=1e-6)
    np.testing.assert_array_equal(radar.velocity, np.stack([vx, vy], axis=1))
    np.testing.assert_array_equal(radar.velocity_comp, np.stack([vx + 1, vy - 1], axis=1))
    np.testing.assert_array_equal(radar.rcs, 7)
    assert radar.source_fields == ('x', 'y', 'z', 'rcs', 'vx', 'vy', 'vx_comp', 'vy_comp')
    assert list(radar.fields) == ['dyn_prop']


def test_radar_names_case_insensitive_and_explicit_doppler_wins() -> None:
    xyz = np.array([[1, 0, 0], [0, 2, 0]], dtype=np.float32)
    channels = {'Range_Rate': np.array([0.5, -0.5], np.float32), 'RCS': np.array([1, 2], np.int8),
                'VX': np.array([9, 9], np.float32), 'vy': np.array([9, 9], np.float32),
                'track_id': np.array([4, 5], np.uint16)}
    raw = encode_pointcloud(PointCloud(3, 'radar', xyz, channels), field_order=['x', 'Range_Rate', 'y', 'RCS',
                                                                                'z', 'VX', 'vy', 'track_id'])
    radar = decode_radar(raw, 'sensor_msgs/PointCloud2')
    np.testing.assert_array_equal(radar.doppler, [0.5, -0.5])
    np.testing.assert_array_equal(radar.rcs, [1, 2])
    assert np.all(np.isnan(radar.velocity_comp))
    assert radar.source_fields == ('x', 'y', 'z', 'Range_Rate', 'RCS', 'VX', 'vy')
    assert list(radar.fields) == ['track_id']


@pytest.mark.parametrize('name', ['doppler', 'radial_velocity', 'v_r'])
def test_radar_doppler_aliases(name: str) -> None:
    channels = {name: np.array([1, -2], np.float32)}
    raw = encode_pointcloud(PointCloud(0, 'r', np.ones((2, 3), np.float32), channels))
    radar = decode_radar(raw, PC2)
    np.testing.assert_array_equal(radar.doppler, [1, -2])
    assert np.all(np.isnan(radar.rcs)) and radar.source_fields[-1] == name


def test_radar_only_xyz_is_all_nan() -> None:
    radar = decode_radar(encode_pointcloud(cloud(3)), PC2)
    assert len(radar) == 3 and radar.source_fields == ('x', 'y', 'z')
    for values in (radar.doppler, radar.rcs, radar.velocity, radar.velocity_comp):
        assert np.all(np.isnan(values))


def test_radar_scan_spherical_to_cartesian() -> None:
    types = typestore().types
    ret = types['radar_msgs/msg/RadarReturn']
    returns = [ret(10.0, 0.0, 0.0, -1.0, 5.0), ret(10.0, np.pi / 2, 0.0, 2.0, 6.0),
               ret(2.0, np.pi / 4, np.pi / 6, 0.0, -3.0), ret(float('nan'), 0.0, 0.0, 0.0, 0.0)]
    scan = types['radar_msgs/msg/RadarScan'](header((4, 5), 'radar'), returns)
    raw = serialize(scan, 'radar_msgs/msg/RadarScan')
    radar = decode(raw, 'radar_msgs/msg/RadarScan', '/radar/scan')
    assert radar.stamp_ns == 4_000_000_005 and radar.frame_id == 'radar'
    assert radar.dropped_invalid == 1 and len(radar) == 3
    flat = 2 * np.cos(np.pi / 6)
    third = [flat * np.cos(np.pi / 4), flat * np.sin(np.pi / 4), 1]
    np.testing.assert_allclose(radar.xyz, [[10, 0, 0], [0, 10, 0], third], atol=1e-5)
    np.testing.assert_array_equal(radar.doppler, [-1, 2, 0])
    np.testing.assert_array_equal(radar.rcs, [5, 6, -3])
    assert radar.source_fields == ('range', 'azimuth', 'elevation', 'doppler_velocity', 'amplitude')


def test_radar_errors(rewrite) -> None:
    with pytest.raises(DecodeError, match=r'^/r: cannot read radar from sensor_msgs/msg/Image; supported: '):
        decode_radar(b'', 'sensor_msgs/msg/Image', '/r')
    raw = encode_pointcloud(cloud(2, doppler=np.zeros((2, 2), np.float32)))
    with pytest.raises(DecodeError, match=r"^/r: PointCloud2 field 'doppler' has count 2; expected a single"):
        decode_radar(raw, PC2, '/r')

    def rename(msg: object) -> None:
        msg.fields[2].name = 'height'

    with pytest.raises(DecodeError,
                       match=r"^/r: radar PointCloud2 has no field 'z' \(fields: x, y, height\)$"):
        decode_radar(rewrite(encode_pointcloud(cloud(2)), PC2, rename), PC2, '/r')


# --- images -------------------------------------------------------------------------------------


def rgb(height: int = 3, width: int = 5) -> CameraImage:
    pixels = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return CameraImage(11, 'cam', pixels, 'rgb8')


def test_unknown_image_encoding(rewrite) -> None:
    def yuv(msg: object) -> None:
        msg.encoding = 'yuv422'

    raw = rewrite(encode_image(rgb()), 'sensor_msgs/msg/Image', yuv)
    with pytest.raises(DecodeError, match=r"^/cam/image: unknown image encoding 'yuv422'; supported: "
                                          r'rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, mono16, 16UC1, 32FC1$'):
        decode_image(raw, '/cam/image')


def test_image_data_too_short(rewrite) -> None:
    def cut(msg: object) -> None:
        msg.data = msg.data[:-1]

    raw = rewrite(encode_image(rgb(), row_padding=2), 'sensor_msgs/msg/Image', cut)
    with pytest.raises(DecodeError, match=r'^/cam/image: image data has 50 bytes, expected 51 '
                                          r'\(height 3 x step 17\)$'):
        decode_image(raw, '/cam/image')


def test_image_step_too_short(rewrite) -> None:
    def shrink(msg: object) -> None:
        msg.step = 14

    with pytest.raises(DecodeError,
                       match=r'image step 14 is shorter than one row of 5 rgb8 pixels \(15 bytes\)'):
        decode_image(rewrite(encode_image(rgb()), 'sensor_msgs/msg/Image', shrink), '/cam/image')


def test_image_empty(rewrite) -> None:
    def empty(msg: object) -> None:
        msg.height = 0

    with pytest.raises(DecodeError, match=r'image is empty \(5x0\)'):
        decode_image(rewrite(encode_image(rgb()), 'sensor_msgs/msg/Image', empty))


def test_image_does_not_alias_the_message_buffer() -> None:
    image = CameraImage(1, 'c', np.arange(12, dtype=np.uint8).reshape(3, 4), 'mono8')
    raw = bytearray(encode_image(image))
    out = decode_image(raw)
    raw[-12:] = bytes(12)
    np.testing.assert_array_equal(out.pixels, image.pixels)


def test_undecodable_jpeg(rewrite) -> None:
    def garble(msg: object) -> None:
        msg.data = np.frombuffer(b'\xff\xd8\xff\xe0 definitely not a jpeg', np.uint8)

    raw = rewrite(encode_compressed_image(rgb()), 'sensor_msgs/msg/CompressedImage', garble)
    with pytest.raises(DecodeError, match=r"^/cam/compressed: cannot decode 26 bytes of "
                                          r"'rgb8; jpeg compressed bgr8' image data") as info:
        decode_compressed_image(raw, '/cam/compressed')
    one_line(info)


def test_compressed_image_empty_and_compressed_depth(rewrite) -> None:
    def empty(msg: object) -> None:
        msg.data = np.zeros(0, np.uint8)

    with pytest.raises(DecodeError, match=r"compressed image \('rgb8; jpeg compressed bgr8'\) has no data"):
        decode_compressed_image(rewrite(encode_compressed_image(rgb()), COMPRESSED, empty))

    def depth(msg: object) -> None:
        msg.format = '16UC1; compressedDepth png'

    with pytest.raises(DecodeError, match=r'compressedDepth\) is not supported'):
        decode_compressed_image(rewrite(encode_compressed_image(rgb()), COMPRESSED, depth))


@pytest.mark.parametrize(('fmt', 'expected'), [('png', 'mono16'), ('16UC1; png compressed 16UC1', '16UC1'),
                                               ('mono16; png compressed mono16', 'mono16')])
def test_compressed_16bit_png(rewrite, fmt: str, expected: str) -> None:
    depth = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    raw = encode_compressed_image(CameraImage(1, 'd', depth, '16UC1'), 'png')

    def reformat(msg: object) -> None:
        msg.format = fmt

    out = decode_compressed_image(rewrite(raw, 'sensor_msgs/msg/CompressedImage', reformat))
    assert out.encoding == expected
    np.testing.assert_array_equal(out.pixels, depth)


def test_compressed_bgra_and_16bit_colour_png(rewrite) -> None:
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 77

    def repack(data: np.ndarray) -> object:
        def change(msg: object) -> None:
            msg.data = np.frombuffer(cv2.imencode('.png', data)[1].tobytes(), np.uint8)
            msg.format = 'png'
        return change

    base = encode_compressed_image(rgb(), 'png')
    out = decode_compressed_image(rewrite(base, 'sensor_msgs/msg/CompressedImage', repack(bgra)))
    assert out.encoding == 'rgb8' and out.pixels[0, 0].tolist() == [200, 0, 10]
    deep = (bgra[..., :3].astype(np.uint16) << 8) | 0xFF
    out = decode_compressed_image(rewrite(base, 'sensor_msgs/msg/CompressedImage', repack(deep)))
    assert out.pixels[1, 2].tolist() == [200, 0, 10]


# --- camera info --------------------------------------------------------------------------------


def intrinsics(model: str = 'plumb_bob',
               d: tuple[float, ...] = (0.1, -0.2, 0.001, 0.002, 0.05)) -> CameraIntrinsics:
    k = np.array([[800.0, 0, 320], [0, 801.0, 240], [0, 0, 1]])
    return CameraIntrinsics('cam', 640, 480, k, model, np.array(d))


def test_camera_info_without_calibration(rewrite) -> None:
    def zero_k(msg: object) -> None:
        msg.k = np.zeros(9)

    raw = rewrite(encode_camera_info(intrinsics(), 5), 'sensor_msgs/msg/CameraInfo', zero_k)
    with pytest.raises(DecodeError, match=r"^/cam/info: camera 'cam' has no calibration \(K is all zero\)$"):
        decode_camera_info(raw, '/cam/info')


def test_camera_info_unknown_model_and_short_d(rewrite) -> None:
    def fisheye(msg: object) -> None:
        msg.distortion_model = 'kannala_brandt'

    raw = rewrite(encode_camera_info(intrinsics(), 5), 'sensor_msgs/msg/CameraInfo', fisheye)
    with pytest.raises(DecodeError, match=r"unknown distortion model 'kannala_brandt'; supported: plumb_bob, "
                                          r'rational_polynomial, equidistant \(or empty for none\)$'):
        decode_camera_info(raw, '/cam/info')

    def short(msg: object) -> None:
        msg.d = np.zeros(3)

    raw = rewrite(encode_camera_info(intrinsics(), 5), 'sensor_msgs/msg/CameraInfo', short)
    with pytest.raises(DecodeError, match=r'^/cam/info: CameraIntrinsics\(.cam.\): '
                                          r'plumb_bob needs 5 coefficients, got 3$'):
        decode_camera_info(raw, '/cam/info')


@pytest.mark.parametrize(('model', 'd'), [('', (0.1, 0.2, 0, 0, 0)), ('plumb_bob', ()), ('none', ())])
def test_camera_info_without_distortion(rewrite, model: str, d: tuple) -> None:
    def change(msg: object) -> None:
        msg.distortion_model = model
        msg.d = np.array(d, dtype=np.float64)
        msg.r = np.zeros(9)
        msg.p = np.zeros(12)

    raw = rewrite(encode_camera_info(intrinsics(), 5), 'sensor_msgs/msg/CameraInfo', change)
    info = decode_camera_info(raw)
    assert info.distortion_model == 'none' and not info.is_distorted
    np.testing.assert_array_equal(info.r, np.eye(3))
    np.testing.assert_array_equal(info.p, np.hstack([info.k, np.zeros((3, 1))]))


# --- transforms ---------------------------------------------------------------------------------


def tf_raw(rewrite, change: object) -> bytes:
    edge = TransformStamped(1, 'base_link', 'lidar', RigidTransform.identity())
    return rewrite(encode_tf([edge]), 'tf2_msgs/msg/TFMessage', change)


def test_tf_strips_slashes_and_normalises(rewrite) -> None:
    def change(msg: object) -> None:
        msg.transforms[0].header.frame_id = '/base_link'
        msg.transforms[0].child_frame_id = '/lidar'
        q = msg.transforms[0].transform.rotation
        q.z, q.w = 2.0, 2.0  # 90 degrees about z, norm 2*sqrt(2)

    [edge] = decode_tf(tf_raw(rewrite, change), static=True)
    assert (edge.parent_frame, edge.child_frame, edge.static) == ('base_link', 'lidar', True)
    np.testing.assert_allclose(edge.transform.rotation, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_tf_zero_quaternion_names_the_child(rewrite) -> None:
    def zero(msg: object) -> None:
        msg.transforms[0].transform.rotation.w = 0.0

    with pytest.raises(DecodeError, match=r"^/tf: transform 'base_link' -> 'lidar' has an invalid rotation "
                                          r'quaternion \[0.0, 0.0, 0.0, 0.0\] \(zero or not finite\)$'):
        decode_tf(tf_raw(rewrite, zero), static=False, topic='/tf')


def test_tf_bad_translation_and_self_parent(rewrite) -> None:
    def nan(msg: object) -> None:
        msg.transforms[0].transform.translation.x = float('nan')

    with pytest.raises(DecodeError, match=r"^/tf: transform 'base_link' -> 'lidar': RigidTransform: "
                                          r'rotation and translation must be finite$'):
        decode_tf(tf_raw(rewrite, nan), static=False, topic='/tf')

    def loop(msg: object) -> None:
        msg.transforms[0].child_frame_id = '/base_link'

    with pytest.raises(DecodeError, match=r"frame 'base_link' is its own parent$"):
        decode_tf(tf_raw(rewrite, loop), static=False, topic='/tf')


def test_dispatch_marks_tf_static_by_topic() -> None:
    raw = encode_tf([TransformStamped(1, 'a', 'b', RigidTransform.identity())])
    assert decode(raw, 'tf2_msgs/msg/TFMessage', '/tf_static')[0].static
    assert not decode(raw, 'tf2_msgs/TFMessage', '/tf')[0].static


def test_dispatch_unknown_type() -> None:
    with pytest.raises(DecodeError, match=r'^/odom: no decoder for nav_msgs/msg/Odometry; supported: '
                                          r'diagnostic_msgs/msg/DiagnosticArray, radar_msgs/msg/RadarScan, '):
        decode(b'\x00\x01\x00\x00', 'nav_msgs/msg/Odometry', '/odom')


# --- detections from other publishers -----------------------------------------------------------


def test_detections_best_hypothesis_and_missing_velocity(rewrite) -> None:
    boxes = Detections3D(5, 'map', np.zeros((2, 3)), np.ones((2, 3)), np.zeros(2), np.full((2, 2), np.nan),
                         ('car', 'truck'), np.array([0.9, 0.8]), ('7', '8'))
    types = typestore().types

    def foreign(msg: object) -> None:
        first = msg.detections[0].results[0]
        other = types['vision_msgs/msg/ObjectHypothesisWithPose'](
            types['vision_msgs/msg/ObjectHypothesis']('bus', 0.95), first.pose)
        msg.detections[0].results.append(other)
        msg.detections[1].results = []

    out = decode_detections(rewrite(encode_detections(boxes), 'vision_msgs/msg/Detection3DArray', foreign))
    assert out.labels == ('bus', '') and out.ids == ('7', '8')
    np.testing.assert_array_equal(out.scores, [0.95, np.nan])
    assert np.all(np.isnan(out.velocities))


# --- garbage for every decoder ------------------------------------------------------------------

DECODERS = [
    (decode_image, 'sensor_msgs/msg/Image'), (decode_compressed_image, 'sensor_msgs/msg/CompressedImage'),
    (decode_camera_info, 'sensor_msgs/msg/CameraInfo'), (decode_pointcloud, 'sensor_msgs/msg/PointCloud2'),
    (decode_detections, 'vision_msgs/msg/Detection3DArray'),
    (decode_diagnostics, 'diagnostic_msgs/msg/DiagnosticArray'),
    (decode_markers, 'visualization_msgs/msg/MarkerArray'),
    (lambda raw, topic: decode_tf(raw, False, topic), 'tf2_msgs/msg/TFMessage'),
    (lambda raw, topic: decode_radar(raw, 'radar_msgs/msg/RadarScan', topic), 'radar_msgs/msg/RadarScan'),
]


@pytest.mark.parametrize(('decoder', 'msgtype'), DECODERS)
@pytest.mark.parametrize('raw', [b'', b'\x00\x01\x00\x00', b'\x01\x02\x03\x04\x05\x06\x07\x08',
                                 b'\x00\x01\x00\x00' + bytes(range(200, 256)) * 5])
def test_garbage_cdr(decoder: object, msgtype: str, raw: bytes) -> None:
    expected = rf'^/topic: cannot deserialize {len(raw)} bytes as {msgtype}: '
    with pytest.raises(DecodeError, match=expected) as info:
        decoder(raw, topic='/topic')  # type: ignore[operator]
    one_line(info)


@pytest.mark.parametrize('cut', [4, 9, 30, -1])
def test_truncated_cdr(cut: int) -> None:
    raw = encode_pointcloud(cloud(3, i=np.ones(3, np.float32)))
    with pytest.raises(DecodeError, match=r'^/lidar: cannot deserialize'):
        decode_pointcloud(raw[:cut] if cut > 0 else raw[:len(raw) // 2], '/lidar')
