"""TfBuffer on hand-built trees, and against the motion-compensated nuScenes calibration."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from mmfusion_ros.errors import TransformError
from mmfusion_ros.io.bag import BagReader
from mmfusion_ros.io.nuscenes import load_nuscenes_keyframe
from mmfusion_ros.sync.tf_buffer import TfBuffer
from mmfusion_ros.types import NS_PER_S, RigidTransform, TransformStamped, stamp_from_ros

REAL = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'real'
MS = 1_000_000


def yaw(angle: float, translation: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> RigidTransform:
    c, s = math.cos(angle), math.sin(angle)
    return RigidTransform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), np.array(translation))


def edge(parent: str, child: str, transform: RigidTransform, stamp: int = 0,
         static: bool = False) -> TransformStamped:
    return TransformStamped(stamp, parent, child, transform, static)


def assert_same(actual: RigidTransform, expected: RigidTransform, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(actual.matrix, expected.matrix, atol=tol, rtol=0)


@pytest.fixture
def car() -> TfBuffer:
    """map -> base_link moving along x and turning; base_link -> lidar and -> camera mounted."""
    tf = TfBuffer()
    tf.add(edge('base_link', 'lidar', yaw(0.0, (1.0, 0.0, 2.0)), static=True))
    tf.add(edge('base_link', 'camera', yaw(-math.pi / 2, (2.0, 0.5, 1.5)), static=True))
    tf.add(edge('map', 'base_link', yaw(0.0, (10.0, 0.0, 0.0)), 1 * NS_PER_S))
    tf.add(edge('map', 'base_link', yaw(math.pi / 2, (12.0, 0.0, 0.0)), 2 * NS_PER_S))
    return tf


def test_same_frame_is_identity_and_frames_are_listed(car: TfBuffer) -> None:
    assert_same(car.lookup('lidar', 'lidar', 0), RigidTransform.identity())
    assert car.frames() == ['base_link', 'camera', 'lidar', 'map']


def test_static_chain_ignores_time(car: TfBuffer) -> None:
    expected = yaw(-math.pi / 2, (2.0, 0.5, 1.5)).inverse() @ yaw(0.0, (1.0, 0.0, 2.0))
    for stamp in (0, 5 * NS_PER_S, -1):
        assert_same(car.lookup('camera', 'lidar', stamp), expected)
    # and the reverse direction is the inverse
    assert_same(car.lookup('lidar', 'camera', 0), expected.inverse())


def test_exact_samples_and_interpolation_midway(car: TfBuffer) -> None:
    assert_same(car.lookup('map', 'base_link', 1 * NS_PER_S), yaw(0.0, (10.0, 0.0, 0.0)))
    assert_same(car.lookup('map', 'base_link', 2 * NS_PER_S), yaw(math.pi / 2, (12.0, 0.0, 0.0)))
    midway = car.lookup('map', 'base_link', 1_500_000_000)
    assert_same(midway, yaw(math.pi / 4, (11.0, 0.0, 0.0)))
    # a point of the lidar through the whole chain, midway
    point = np.array([[1.0, 0.0, 0.0]])
    in_base = point + [1.0, 0.0, 2.0]
    expected = in_base @ yaw(math.pi / 4).rotation.T + [11.0, 0.0, 0.0]
    np.testing.assert_allclose(car.lookup('map', 'lidar', 1_500_000_000).apply(point), expected)


@pytest.mark.parametrize(('start', 'end', 'ratio'), [(0.0, 2.0, 0.25), (-3.0, 3.0, 0.5),
                                                      (3.0, -3.0, 0.7), (0.1, 0.1 + 1e-4, 0.3)])
def test_slerp_turns_at_constant_rate_along_the_short_arc(start: float, end: float,
                                                          ratio: float) -> None:
    tf = TfBuffer()
    tf.add(edge('map', 'base_link', yaw(start), 0))
    tf.add(edge('map', 'base_link', yaw(end), 1000))
    got = tf.lookup('map', 'base_link', round(1000 * ratio))
    delta = math.remainder(end - start, 2 * math.pi)  # short arc: 3 -> -3 rad crosses pi
    assert_same(got, yaw(start + ratio * delta), tol=1e-9)


def test_tf_buffer_slerp_is_sign_invariant() -> None:
    """q and -q are one rotation: a sample stored as -q must not send slerp the long way."""
    q = yaw(0.5).as_quaternion()
    tf = TfBuffer()
    tf.add(edge('a', 'b', RigidTransform.from_quaternion(q, np.zeros(3)), 0))
    tf.add(edge('a', 'b', RigidTransform.from_quaternion(-yaw(0.7).as_quaternion(), np.zeros(3)), 10))
    assert_same(tf.lookup('a', 'b', 5), yaw(0.6), tol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(40))))
def test_insertion_order_does_not_matter(order: list[int]) -> None:
    in_order, shuffled = TfBuffer(), TfBuffer()
    samples = [edge('odom', 'base', yaw(0.05 * i, (i, 0.5 * i, 0.0)), i * 10 * MS) for i in range(40)]
    in_order.add_many(samples)
    shuffled.add_many(samples[i] for i in order)
    assert shuffled.time_range('base') == (0, 390 * MS)
    for stamp in (0, 5 * MS, 123 * MS, 390 * MS):
        assert_same(shuffled.lookup('odom', 'base', stamp), in_order.lookup('odom', 'base', stamp))


def test_same_stamp_replaces_and_growth_keeps_every_sample() -> None:
    tf = TfBuffer()
    tf.add(edge('map', 'base', yaw(0.0, (1.0, 0, 0)), 100))
    tf.add(edge('map', 'base', yaw(0.0, (2.0, 0, 0)), 100))
    assert_same(tf.lookup('map', 'base', 100), yaw(0.0, (2.0, 0, 0)))
    stamps = [*range(1000, 101_000, 1000), *range(500, 100_500, 2000)]  # beyond the first capacity
    for stamp in stamps:
        tf.add(edge('map', 'base', yaw(0.0, (stamp, 0, 0)), stamp))
    for stamp in (500, 1000, 4500, 100_000):
        assert tf.lookup('map', 'base', stamp).translation[0] == pytest.approx(stamp)
    assert tf.lookup('map', 'base', 750).translation[0] == pytest.approx(750)


def test_pruning_keeps_cache_ns_of_history() -> None:
    tf = TfBuffer(cache_ns=1 * NS_PER_S)
    for i in range(60):  # 6 s at 10 Hz
        tf.add(edge('map', 'base', yaw(0.0, (i, 0, 0)), i * 100 * MS))
    assert tf.time_range('base') == (4_900 * MS, 5_900 * MS)
    with pytest.raises(TransformError, match=r"transform 'map' -> 'base' at 4800000000 ns is 100.000 "
                                             r'ms before its buffered range \[4900000000, 5900000000\] '
                                             r'ns \(11 samples; tolerance 0 ms\)'):
        tf.lookup('map', 'base', 4_800 * MS)
    tf.add(edge('map', 'base', yaw(0.0), 100 * MS))  # older than the window: dropped, counted
    assert tf.time_range('base') == (4_900 * MS, 5_900 * MS)
    assert tf.dropped_old == 1
    tf.add(edge('map', 'base', yaw(0.0), 4_950 * MS))  # late but inside the window: kept
    assert tf.dropped_old == 1 and tf.lookup('map', 'base', 4_950 * MS).translation[0] == 0.0


def test_extrapolation_is_refused_unless_within_tolerance(car: TfBuffer) -> None:
    late = 2 * NS_PER_S + 5 * MS
    with pytest.raises(TransformError, match=r"transform 'map' -> 'base_link' at 2005000000 ns is "
                                             r'5.000 ms after its buffered range \[1000000000, '
                                             r'2000000000\] ns'):
        car.lookup('map', 'lidar', late)
    assert not car.can_transform('map', 'lidar', late)
    held = car.lookup('map', 'base_link', late, extrapolation_ns=5 * MS)
    assert_same(held, yaw(math.pi / 2, (12.0, 0.0, 0.0)))  # the nearest sample, not extrapolated
    assert car.can_transform('map', 'lidar', late, extrapolation_ns=10 * MS)
    with pytest.raises(TransformError, match=r'4.000 ms after .* tolerance 1 ms'):
        car.lookup('map', 'lidar', 2 * NS_PER_S + 4 * MS, extrapolation_ns=1 * MS)


def test_unknown_and_disconnected_frames(car: TfBuffer) -> None:
    with pytest.raises(TransformError, match=r"unknown frame 'radar' \(looking up 'radar' -> 'map'\); "
                                             r'known frames: base_link, camera, lidar, map'):
        car.lookup('map', 'radar', 0)
    car.add(edge('odom', 'imu', RigidTransform.identity(), static=True))
    with pytest.raises(TransformError, match=r"frames 'imu' and 'camera' are not connected \(their "
                                             r"roots are 'odom' and 'map'\); known frames: base_link, "
                                             r'camera, imu, lidar, map, odom'):
        car.lookup('camera', 'imu', 0)
    assert not car.can_transform('camera', 'imu', 0)
    assert TfBuffer().frames() == []
    with pytest.raises(TransformError, match=r"unknown frame 'a'.*known frames: none"):
        TfBuffer().lookup('a', 'b', 0)


def test_tree_conflicts(car: TfBuffer) -> None:
    with pytest.raises(TransformError, match=r"transform 'odom' -> 'base_link': frame 'base_link' "
                                             r"already has parent 'map'; a frame has one parent"):
        car.add(edge('odom', 'base_link', yaw(0.0), 3 * NS_PER_S))
    with pytest.raises(TransformError, match=r"dynamic transform 'base_link' -> 'lidar': frame 'lidar' "
                                             r'already has a static transform'):
        car.add(edge('base_link', 'lidar', yaw(0.0), 3 * NS_PER_S))
    with pytest.raises(TransformError, match=r"static transform 'map' -> 'base_link': .* already has "
                                             r'dynamic transforms'):
        car.add(edge('map', 'base_link', yaw(0.0), static=True))
    with pytest.raises(TransformError, match=r"transform 'lidar' -> 'map' would close a loop"):
        car.add(edge('lidar', 'map', yaw(0.0), static=True))
    # re-publishing a static edge replaces it (a corrected /tf_static)
    car.add(edge('base_link', 'lidar', yaw(0.0, (1.5, 0.0, 2.0)), static=True))
    assert_same(car.lookup('base_link', 'lidar', 0), yaw(0.0, (1.5, 0.0, 2.0)))
    car.clear()
    assert car.frames() == []
    with pytest.raises(TransformError, match='cache_ns must be >= 0'):
        TfBuffer(cache_ns=-1)


def test_lookup_through_a_fixed_frame(car: TfBuffer) -> None:
    """Lidar at t=1 s into the camera at t=2 s: the car turned and moved in between."""
    got = car.lookup_through('camera', 2 * NS_PER_S, 'lidar', 1 * NS_PER_S, 'map')
    map_from_lidar = yaw(0.0, (10.0, 0.0, 0.0)) @ yaw(0.0, (1.0, 0.0, 2.0))
    map_from_camera = yaw(math.pi / 2, (12.0, 0.0, 0.0)) @ yaw(-math.pi / 2, (2.0, 0.5, 1.5))
    assert_same(got, map_from_camera.inverse() @ map_from_lidar, tol=1e-12)
    # with both stamps equal it is the plain lookup
    assert_same(car.lookup_through('camera', NS_PER_S, 'lidar', NS_PER_S, 'map'),
                car.lookup('camera', 'lidar', NS_PER_S), tol=1e-12)
    with pytest.raises(TransformError, match=r"'map' -> 'base_link' at 3000000000 ns is 1000.000 ms after"):
        car.lookup_through('camera', 3 * NS_PER_S, 'lidar', NS_PER_S, 'map')


# -- real data: nuScenes -------------------------------------------------------------------------

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


def transforms_from_tf(raw: bytes, static: bool) -> list[TransformStamped]:
    """tf2_msgs/TFMessage bytes as TransformStamped, decoded with rosbags directly."""
    message = TYPESTORE.deserialize_cdr(raw, 'tf2_msgs/msg/TFMessage')
    out = []
    for t in message.transforms:
        q, p = t.transform.rotation, t.transform.translation
        out.append(TransformStamped(
            stamp_from_ros(t.header.stamp.sec, t.header.stamp.nanosec), t.header.frame_id,
            t.child_frame_id, RigidTransform.from_quaternion([q.x, q.y, q.z, q.w], [p.x, p.y, p.z]),
            static))
    return out


def header_stamp(raw: bytes, msgtype: str) -> tuple[str, int]:
    header = TYPESTORE.deserialize_cdr(raw, msgtype).header
    return header.frame_id, stamp_from_ros(header.stamp.sec, header.stamp.nanosec)


@pytest.mark.skipif(not (REAL / 'bags').is_dir() or not (REAL / 'nuscenes_keyframe').is_dir(),
                    reason=f'real nuScenes data not found under {REAL}')
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_tf_reproduces_motion_compensated_lidar_to_camera(storage: str) -> None:
    tf = TfBuffer()
    sensor_stamps: dict[str, int] = {}
    with BagReader(REAL / 'bags' / f'nuscenes_demo_keyframe_{storage}') as bag:
        for message in bag.messages():
            if message.topic in ('/tf', '/tf_static'):
                tf.add_many(transforms_from_tf(message.raw, static=message.topic == '/tf_static'))
            elif message.msgtype in ('sensor_msgs/msg/PointCloud2', 'sensor_msgs/msg/CompressedImage'):
                frame, stamp = header_stamp(message.raw, message.msgtype)
                sensor_stamps[frame] = stamp
    assert tf.frames() == sorted(['map', 'base_link', 'LIDAR_TOP', *CAMERAS])
    assert tf.time_range('base_link') == (1532402927604844000, 1532402927647951000)

    keyframe = load_nuscenes_keyframe(REAL / 'nuscenes_keyframe')
    lidar_stamp = sensor_stamps['LIDAR_TOP']
    assert lidar_stamp == keyframe.stamp_ns
    static_offsets = {}
    for camera in CAMERAS:
        camera_stamp = sensor_stamps[camera]
        assert camera_stamp == keyframe.cameras[camera].stamp_ns
        expected = keyframe.cameras[camera].lidar_to_cam
        got = tf.lookup_through(camera, camera_stamp, 'LIDAR_TOP', lidar_stamp, 'map')
        np.testing.assert_allclose(got.matrix, expected.matrix, atol=1e-6, rtol=0,
                                   err_msg=f'{camera}: lidar -> camera through map')
        # ignoring ego motion: the mounting chain through base_link only
        static_chain = tf.lookup(camera, 'LIDAR_TOP', lidar_stamp)
        static_offsets[camera] = float(np.linalg.norm(static_chain.translation - expected.translation))
    assert max(static_offsets.values()) > 0.3  # CAM_FRONT_LEFT, 43 ms before the lidar: 0.40 m off
    assert sum(offset > 0.05 for offset in static_offsets.values()) >= 4
    assert static_offsets['CAM_BACK_LEFT'] < 0.01  # 0.5 ms apart: motion hardly matters
