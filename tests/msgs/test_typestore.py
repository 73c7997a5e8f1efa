"""The typestore: shipped definitions registered with the upstream field lists, and errors our way."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mmfusion_ros.errors import DecodeError, EncodeError
from mmfusion_ros.msgs.typestore import deserialize, serialize, shipped_msgtypes, typestore

VISION = ('BoundingBox2D', 'BoundingBox2DArray', 'BoundingBox3D', 'BoundingBox3DArray', 'Classification',
          'Detection2D', 'Detection2DArray', 'Detection3D', 'Detection3DArray', 'LabelInfo',
          'ObjectHypothesis', 'ObjectHypothesisWithPose', 'Point2D', 'Pose2D', 'VisionClass', 'VisionInfo')
RADAR = ('RadarReturn', 'RadarScan', 'RadarTrack', 'RadarTracks')


def fields_of(msgtype: str) -> list[tuple[str, str]]:
    """``[(name, type)]`` of a registered type, types spelled as in a .msg file."""
    def spell(node: tuple) -> str:
        kind, detail = node
        if kind == 1:  # base type
            return detail[0]
        if kind == 2:  # message name
            return detail.replace('/msg/', '/')
        inner, size = detail
        return f'{spell(inner)}[{size or ""}]'

    return [(name, spell(node)) for name, node in typestore().fielddefs[msgtype][1]]


def test_every_shipped_definition_is_registered() -> None:
    expected = {f'vision_msgs/msg/{name}' for name in VISION} | {f'radar_msgs/msg/{name}' for name in RADAR}
    assert set(shipped_msgtypes()) == expected
    assert expected <= set(typestore().types)


def test_typestore_is_built_once_and_leaves_other_stores_alone() -> None:
    assert typestore() is typestore()
    assert 'vision_msgs/msg/Detection3DArray' not in get_typestore(Stores.ROS2_HUMBLE).types


@pytest.mark.parametrize(('msgtype', 'fields'), [
    ('vision_msgs/msg/Detection3D', [('header', 'std_msgs/Header'),
                                     ('results', 'vision_msgs/ObjectHypothesisWithPose[]'),
                                     ('bbox', 'vision_msgs/BoundingBox3D'), ('id', 'string')]),
    ('vision_msgs/msg/Detection3DArray', [('header', 'std_msgs/Header'),
                                          ('detections', 'vision_msgs/Detection3D[]')]),
    ('vision_msgs/msg/Detection2D', [('header', 'std_msgs/Header'),
                                     ('results', 'vision_msgs/ObjectHypothesisWithPose[]'),
                                     ('bbox', 'vision_msgs/BoundingBox2D'), ('id', 'string')]),
    ('vision_msgs/msg/ObjectHypothesisWithPose', [('hypothesis', 'vision_msgs/ObjectHypothesis'),
                                                  ('pose', 'geometry_msgs/PoseWithCovariance')]),
    ('vision_msgs/msg/ObjectHypothesis', [('class_id', 'string'), ('score', 'float64')]),
    ('vision_msgs/msg/BoundingBox3D', [('center', 'geometry_msgs/Pose'), ('size', 'geometry_msgs/Vector3')]),
    ('vision_msgs/msg/BoundingBox2D', [('center', 'vision_msgs/Pose2D'), ('size_x', 'float64'),
                                       ('size_y', 'float64')]),
    ('vision_msgs/msg/Pose2D', [('position', 'vision_msgs/Point2D'), ('theta', 'float64')]),
    ('vision_msgs/msg/Point2D', [('x', 'float64'), ('y', 'float64')]),
    ('vision_msgs/msg/Classification', [('header', 'std_msgs/Header'),
                                        ('results', 'vision_msgs/ObjectHypothesis[]')]),
    ('vision_msgs/msg/LabelInfo', [('header', 'std_msgs/Header'), ('class_map', 'vision_msgs/VisionClass[]'),
                                   ('threshold', 'float32')]),
    ('vision_msgs/msg/VisionClass', [('class_id', 'uint16'), ('class_name', 'string')]),
    ('vision_msgs/msg/VisionInfo', [('header', 'std_msgs/Header'), ('method', 'string'),
                                    ('database_location', 'string'), ('database_version', 'int32')]),
    ('radar_msgs/msg/RadarReturn', [('range', 'float32'), ('azimuth', 'float32'), ('elevation', 'float32'),
                                    ('doppler_velocity', 'float32'), ('amplitude', 'float32')]),
    ('radar_msgs/msg/RadarScan', [('header', 'std_msgs/Header'), ('returns', 'radar_msgs/RadarReturn[]')]),
    ('radar_msgs/msg/RadarTrack', [('uuid', 'unique_identifier_msgs/UUID'),
                                   ('position', 'geometry_msgs/Point'), ('velocity', 'geometry_msgs/Vector3'),
                                   ('acceleration', 'geometry_msgs/Vector3'),
                                   ('size', 'geometry_msgs/Vector3'), ('classification', 'uint16'),
                                   ('position_covariance', 'float32[6]'),
                                   ('velocity_covariance', 'float32[6]'),
                                   ('acceleration_covariance', 'float32[6]'),
                                   ('size_covariance', 'float32[6]')]),
    ('radar_msgs/msg/RadarTracks', [('header', 'std_msgs/Header'), ('tracks', 'radar_msgs/RadarTrack[]')]),
])
def test_field_lists_match_upstream(msgtype: str, fields: list[tuple[str, str]]) -> None:
    assert fields_of(msgtype) == fields


def test_radar_track_constants() -> None:
    track = typestore().types['radar_msgs/msg/RadarTrack']
    assert (track.NO_CLASSIFICATION, track.STATIC, track.DYNAMIC) == (0, 1, 2)


def test_radar_tracks_round_trip() -> None:
    types = typestore().types
    vec = types['geometry_msgs/msg/Vector3']
    track = types['radar_msgs/msg/RadarTrack'](
        types['unique_identifier_msgs/msg/UUID'](np.arange(16, dtype=np.uint8)),
        types['geometry_msgs/msg/Point'](1.0, 2.0, 0.0), vec(3.0, 0.5, 0.0), vec(0.0, 0.0, 0.0),
        vec(4.5, 1.8, 1.5), 2, *(np.full(6, k, np.float32) for k in range(4)))
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](5, 6), 'radar')
    raw = serialize(types['radar_msgs/msg/RadarTracks'](header, [track]), 'radar_msgs/msg/RadarTracks')
    back = deserialize(raw, 'radar_msgs/msg/RadarTracks')
    assert back.header.frame_id == 'radar'
    assert back.tracks[0].uuid.uuid.tolist() == list(range(16))
    assert back.tracks[0].classification == 2
    assert back.tracks[0].size_covariance.tolist() == [3.0] * 6


@pytest.mark.parametrize('raw', [b'', b'\x00\x01', b'\x07\x07\x00\x00garbage', bytes(range(256)) * 3,
                                 b'\x00\x01\x00\x00' + b'\xff' * 64])
def test_garbage_bytes_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match=r'^/lidar: cannot deserialize \d+ bytes as '
                                          r'sensor_msgs/msg/PointCloud2: ') as info:
        deserialize(raw, 'sensor_msgs/msg/PointCloud2', '/lidar')
    assert '\n' not in str(info.value)


def test_truncated_message_raises_decode_error() -> None:
    types = typestore().types
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](1, 2), 'camera')
    raw = serialize(types['sensor_msgs/msg/CompressedImage'](header, 'jpeg', np.arange(100, dtype=np.uint8)),
                    'sensor_msgs/msg/CompressedImage')
    for cut in (3, 10, 30, len(raw) - 50):
        with pytest.raises(DecodeError,
                           match=r'^/cam: cannot deserialize .* sensor_msgs/msg/CompressedImage'):
            deserialize(raw[:cut], 'sensor_msgs/msg/CompressedImage', '/cam')


def test_topic_defaults_to_the_type_in_messages() -> None:
    with pytest.raises(DecodeError, match=r'^sensor_msgs/msg/Image: cannot deserialize 3 bytes'):
        deserialize(b'abc', 'sensor_msgs/msg/Image')


def test_unknown_types() -> None:
    with pytest.raises(DecodeError, match=r"^/x: unknown message type 'nope_msgs/msg/Nope'$"):
        deserialize(b'\x00\x01\x00\x00', 'nope_msgs/msg/Nope', '/x')
    with pytest.raises(EncodeError, match=r"unknown message type 'nope_msgs/msg/Nope'"):
        serialize(object(), 'nope_msgs/msg/Nope')


def test_serialize_failure_raises_encode_error() -> None:
    types = typestore().types
    header = types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](2**40, 0), 'camera')
    with pytest.raises(EncodeError, match=r'^cannot serialize std_msgs/msg/Header: '):
        serialize(header, 'std_msgs/msg/Header')
