"""Every message of the real bags (nuScenes keyframe, PJLab radar + lidar) decodes as expected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmfusion_ros.msgs import (
    decode,
    decode_camera_info,
    decode_compressed_image,
    decode_pointcloud,
    decode_radar,
    decode_tf,
    encode_pointcloud,
)
from mmfusion_ros.types import CameraImage, CameraIntrinsics, PointCloud, RadarPoints, TransformStamped

NUSCENES = ('nuscenes_demo_keyframe_mcap', 'nuscenes_demo_keyframe_sqlite3')
PJLAB = ('pjlab_radar_lidar_mcap', 'pjlab_radar_lidar_sqlite3')
SAMPLE_TYPES = {'sensor_msgs/msg/PointCloud2': PointCloud, 'sensor_msgs/msg/CompressedImage': CameraImage,
                'sensor_msgs/msg/CameraInfo': CameraIntrinsics, 'tf2_msgs/msg/TFMessage': list}


def test_every_message_decodes(bag_messages: dict) -> None:
    for bag, messages in bag_messages.items():
        assert messages, bag
        for topic, msgtype, raw in messages:
            if topic == '/front_radar/tracks':
                sample = decode_radar(raw, msgtype, topic)
            else:
                sample = decode(raw, msgtype, topic)
            expected = RadarPoints if topic == '/front_radar/tracks' else SAMPLE_TYPES[msgtype]
            assert isinstance(sample, expected), (bag, topic)


@pytest.mark.parametrize('bag', NUSCENES)
def test_nuscenes_lidar_top(bag_messages: dict, bag: str) -> None:
    [raw] = [raw for topic, _, raw in bag_messages[bag] if topic == '/LIDAR_TOP']
    cloud = decode_pointcloud(raw, '/LIDAR_TOP')
    assert len(cloud) == 34_688
    assert cloud.frame_id == 'LIDAR_TOP'
    assert set(cloud.fields) == {'intensity', 'ring'}
    assert cloud.dropped_invalid == 0
    rings = np.unique(cloud.field('ring'))
    assert len(rings) == 32 and rings.min() == 0 and rings.max() == 31


def test_nuscenes_lidar_matches_the_pcd_bin(bag_messages: dict, real_root: Path) -> None:
    [path] = (real_root / 'nuscenes_keyframe').glob('*LIDAR_TOP*.pcd.bin')
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 5)  # x, y, z, intensity, ring
    [raw] = [raw for topic, _, raw in bag_messages[NUSCENES[0]] if topic == '/LIDAR_TOP']
    cloud = decode_pointcloud(raw)
    np.testing.assert_array_equal(cloud.xyz, points[:, :3])
    np.testing.assert_array_equal(cloud.field('intensity'), points[:, 3])
    np.testing.assert_array_equal(cloud.field('ring'), points[:, 4])


@pytest.mark.parametrize('bag', NUSCENES)
def test_nuscenes_cameras(bag_messages: dict, bag: str) -> None:
    images = {topic.split('/')[1]: decode_compressed_image(raw, topic)
              for topic, msgtype, raw in bag_messages[bag] if msgtype.endswith('CompressedImage')}
    infos = {topic.split('/')[1]: decode_camera_info(raw, topic)
             for topic, msgtype, raw in bag_messages[bag] if msgtype.endswith('CameraInfo')}
    assert len(images) == 6 and set(images) == set(infos)
    for camera, image in images.items():
        assert (image.width, image.height, image.encoding) == (1600, 900, 'rgb8')
        assert image.pixels.shape == (900, 1600, 3) and image.frame_id == camera
        assert image.pixels.std() > 10  # a real picture, not a blank
        info = infos[camera]
        assert (info.width, info.height, info.frame_id) == (1600, 900, camera)
        assert info.distortion_model == 'plumb_bob' and not info.is_distorted
        assert 500 < info.k[0, 0] < 2000 and info.k[0, 0] == info.k[1, 1]
        image.with_intrinsics(info)


def test_nuscenes_camera_info_matches_the_json(bag_messages: dict, real_root: Path) -> None:
    [path] = (real_root / 'nuscenes_keyframe').glob('*.derived.json')
    images = json.loads(path.read_text())['data_list'][0]['images']
    infos = {topic.split('/')[1]: decode_camera_info(raw)
             for topic, msgtype, raw in bag_messages[NUSCENES[0]] if msgtype.endswith('CameraInfo')}
    assert set(infos) == set(images)
    for camera, info in infos.items():
        np.testing.assert_allclose(info.k, images[camera]['cam2img'], rtol=1e-12)


@pytest.mark.parametrize('bag', NUSCENES)
def test_nuscenes_tf(bag_messages: dict, bag: str) -> None:
    static = [t for topic, _, raw in bag_messages[bag] if topic == '/tf_static'
              for t in decode_tf(raw, static=True, topic=topic)]
    dynamic = [t for topic, _, raw in bag_messages[bag] if topic == '/tf'
               for t in decode_tf(raw, static=False, topic=topic)]
    assert {t.child_frame for t in static} == {'LIDAR_TOP', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
                                               'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT'}
    assert all(t.parent_frame == 'base_link' and t.static for t in static)
    assert len(dynamic) == 7
    assert all((t.parent_frame, t.child_frame, t.static) == ('map', 'base_link', False) for t in dynamic)
    assert all(isinstance(t, TransformStamped) for t in static + dynamic)


@pytest.mark.parametrize('bag', PJLAB)
def test_pjlab_radar_tracks(bag_messages: dict, bag: str) -> None:
    scans = [decode_radar(raw, msgtype, topic) for topic, msgtype, raw in bag_messages[bag]
             if topic == '/front_radar/tracks']
    assert len(scans) == 10
    for radar in scans:
        assert radar.frame_id == 'front_radar' and len(radar) > 0
        assert radar.source_fields == ('x', 'y', 'z', 'range_rate')
        assert set(radar.fields) == {'range', 'angle', 'range_accel', 'lat_rate', 'width', 'track_id',
                                     'status'}
        assert radar.fields['track_id'].dtype == np.uint16 and radar.fields['status'].dtype == np.uint16
        assert np.all(np.isfinite(radar.doppler))
        assert np.all(np.isnan(radar.rcs)) and np.all(np.isnan(radar.velocity))
        # x = r cos(angle), y = r sin(angle), z = 0 per the data's README.
        r, angle = radar.fields['range'], radar.fields['angle']
        np.testing.assert_allclose(radar.xyz[:, 0], r * np.cos(angle), atol=1e-3)
        np.testing.assert_allclose(radar.xyz[:, 1], r * np.sin(angle), atol=1e-3)


@pytest.mark.parametrize('bag', PJLAB)
def test_pjlab_lidar_with_unaligned_float64(bag_messages: dict, bag: str) -> None:
    [raw] = [raw for topic, _, raw in bag_messages[bag] if topic == '/top_center_lidar/points']
    cloud = decode_pointcloud(raw, '/top_center_lidar/points')
    assert cloud.frame_id == 'top_center_lidar' and len(cloud) + cloud.dropped_invalid == 94_816
    assert {name: values.dtype for name, values in cloud.fields.items()} == {
        'intensity': np.float32, 'ring': np.uint16, 'timestamp': np.float64}
    stamps = cloud.field('timestamp')
    assert np.all(np.isfinite(stamps)) and np.ptp(stamps) < 0.2  # one sweep, ~0.1 s
    assert cloud.field('ring').max() < 64
    # Written back in the same layout, the cloud decodes to the same arrays.
    again = decode_pointcloud(encode_pointcloud(cloud))
    np.testing.assert_array_equal(again.xyz, cloud.xyz)
    np.testing.assert_array_equal(again.field('timestamp'), stamps)


@pytest.mark.parametrize('bag', PJLAB)
def test_pjlab_tf_static(bag_messages: dict, bag: str) -> None:
    [raw] = [raw for topic, _, raw in bag_messages[bag] if topic == '/tf_static']
    [edge] = decode(raw, 'tf2_msgs/msg/TFMessage', '/tf_static')
    assert (edge.parent_frame, edge.child_frame, edge.static) == ('top_center_lidar', 'front_radar', True)
    np.testing.assert_allclose(edge.transform.translation, [2.2728, 0.47596, -1.06])
