"""compensate_ego_motion: numba kernel and torch baseline against the numpy reference and closed forms."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.motion import (
    compensate_ego_motion,
    compensate_ego_motion_baseline,
    compensate_ego_motion_reference,
)
from mmfusion_ros.types import RigidTransform

# The kernel and the reference share every operation except the slerp ``sin`` (numpy's vs LLVM's),
# which may round differently in the last float64 bit: float32 results equal, or one ulp apart.
KERNEL_RTOL, KERNEL_ATOL = 2e-7, 2e-6


def pose(yaw: float, translation, roll: float = 0.0) -> np.ndarray:
    half_yaw, half_roll = yaw / 2, roll / 2
    # yaw about z, then roll about x: q = q_yaw * q_roll (x, y, z, w)
    q_yaw = np.array([0.0, 0.0, math.sin(half_yaw), math.cos(half_yaw)])
    q_roll = np.array([math.sin(half_roll), 0.0, 0.0, math.cos(half_roll)])
    x1, y1, z1, w1 = q_yaw
    x2, y2, z2, w2 = q_roll
    q = np.array([w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                  w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2])
    return RigidTransform.from_quaternion(q, translation).matrix


@st.composite
def sweeps(draw) -> tuple:
    """A pose table (1..6 samples; big and tiny turns) and points with times inside it."""
    T = draw(st.integers(1, 6))
    N = draw(st.integers(0, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    start = int(rng.integers(0, 2**62))
    pose_times = start + np.cumsum(rng.integers(1, 50_000_000, T)).astype(np.int64)
    turn = draw(st.sampled_from([1e-6, 0.01, 0.5, 3.0]))  # radians between samples, roughly
    yaws = np.cumsum(rng.normal(0, turn, T))
    rolls = np.cumsum(rng.normal(0, turn / 3, T))
    offset = draw(st.sampled_from([0.0, 1e5]))  # a map frame far from its origin
    poses = np.stack([pose(y, offset + rng.normal(0, 3, 3), r) for y, r in zip(yaws, rolls)])
    first, last = int(pose_times[0]), int(pose_times[-1])
    times = rng.integers(first, last + 1, N).astype(np.int64)
    if N:
        times[rng.random(N) < 0.2] = rng.choice(pose_times, 1)[0]  # exactly on samples
    if draw(st.booleans()):
        times = np.sort(times)  # firing order: runs of equal stamps
    points = rng.normal(0, 30, (N, 3)).astype(np.float32)
    if N and draw(st.booleans()):
        points[rng.random(N) < 0.1, 0] = np.nan
    target = draw(st.sampled_from(['first', 'last', 'inside']))
    target_time = {'first': first, 'last': last, 'inside': int(rng.integers(first, last + 1))}[target]
    return points, times, pose_times, poses, target_time


@settings(max_examples=120, deadline=None)
@given(sweep=sweeps())
def test_numba_equals_reference(sweep) -> None:
    want = compensate_ego_motion_reference(*sweep)
    got = compensate_ego_motion(*sweep)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(sweep[0][:, :1]).repeat(3, axis=1))


def test_baseline_agrees() -> None:
    rng = np.random.default_rng(4)
    pose_times = np.array([0, 50_000_000, 100_000_000], np.int64) + 10**18
    poses = np.stack([pose(0.0, [1000, 2000, 3]), pose(0.1, [1001, 2000.2, 3]), pose(0.25, [1002.1, 2000.5, 3])])
    times = np.sort(rng.integers(pose_times[0], pose_times[-1] + 1, 5000))
    points = rng.normal(0, 40, (5000, 3)).astype(np.float32)
    want = compensate_ego_motion_reference(points, times, pose_times, poses, pose_times[1])
    np.testing.assert_allclose(compensate_ego_motion_baseline(points, times, pose_times, poses, pose_times[1]),
                               want, atol=1e-4)


def test_static_sensor_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(0, 50, (1000, 3)).astype(np.float32)
    times = rng.integers(0, 101, 1000)
    poses = np.stack([pose(0.7, [10, -4, 2])] * 3)
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference):
        out = implementation(points, times, np.array([0, 50, 100]), poses, 30)
        np.testing.assert_allclose(out, points, rtol=1e-6, atol=1e-5)
    identity = np.stack([np.eye(4)] * 2)
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference):
        np.testing.assert_array_equal(implementation(points, times, np.array([0, 100]), identity, 100), points)


def test_constant_velocity_and_yaw_rate_closed_form() -> None:
    """Sensor moving at 10 m/s along x and turning at 0.5 rad/s: poses sampled every 50 ms."""
    sample_times = np.arange(0, 200_000_001, 50_000_000, dtype=np.int64)
    seconds = sample_times / 1e9
    poses = np.stack([pose(0.5 * s, [10 * s, 0, 0]) for s in seconds])
    point_times = np.array([0, 25_000_000, 70_000_000, 200_000_000], np.int64)
    points = np.array([[5, 0, 0], [0, 5, 1], [-3, 2, 0], [1, 1, 1]], np.float32)
    target = 100_000_000
    expected = []
    for p, t in zip(points.astype(np.float64), point_times / 1e9):
        # Translation is interpolated linearly between samples (the path is a straight line here),
        # rotation by slerp about z: exact for a constant yaw rate.
        at_t = RigidTransform.from_matrix(pose(0.5 * t, [10 * t, 0, 0]))
        at_target = RigidTransform.from_matrix(pose(0.5 * 0.1, [1.0, 0, 0]))
        expected.append((at_target.inverse() @ at_t).apply(p[None])[0])
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference, compensate_ego_motion_baseline):
        np.testing.assert_allclose(implementation(points, point_times, sample_times, poses, target),
                                   np.array(expected), atol=2e-6)


def test_slerp_takes_the_short_way_round() -> None:
    """179 deg to -179 deg is a 2 deg turn through 180 deg, not 358 deg back through 0."""
    poses = np.stack([pose(math.radians(179), [0, 0, 0]), pose(math.radians(-179), [0, 0, 0])])
    points = np.array([[1, 0, 0]], np.float32)
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference, compensate_ego_motion_baseline):
        # The point seen at the midpoint (heading 180 deg), expressed in the frame at the first sample.
        out = implementation(points, np.array([50]), np.array([0, 100]), poses, 0)
        heading = math.degrees(math.atan2(out[0, 1], out[0, 0]))
        assert heading == pytest.approx(1.0, abs=1e-4)


def test_one_sample_table_covers_its_own_stamp() -> None:
    poses = pose(0.3, [1, 2, 3])[None]
    points = np.array([[1, 2, 3]], np.float32)
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference, compensate_ego_motion_baseline):
        np.testing.assert_allclose(implementation(points, np.array([7]), np.array([7]), poses, 7), points, atol=1e-6)
        with pytest.raises(GeometryError, match=r'point_times_ns: 1 time\(s\) outside the pose table \[7, 7\]'):
            implementation(points, np.array([8]), np.array([7]), poses, 7)


def test_empty_sweep() -> None:
    poses = np.stack([np.eye(4), np.eye(4)])
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference, compensate_ego_motion_baseline):
        out = implementation(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.array([0, 10]), poses, 5)
        assert out.shape == (0, 3) and out.dtype == np.float32


def test_result_does_not_depend_on_thread_count() -> None:
    rng = np.random.default_rng(8)
    poses = np.stack([pose(0.0, [0, 0, 0]), pose(0.2, [2, 1, 0]), pose(0.3, [4, 1, 0.2])])
    args = (rng.normal(0, 20, (30000, 3)).astype(np.float32), np.sort(rng.integers(0, 1001, 30000)),
            np.array([0, 500, 1000]), poses, 600)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = compensate_ego_motion(*args)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(compensate_ego_motion(*args), single)


def _bad_rotation() -> np.ndarray:
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, 0, 0] = 2.0
    return poses


@pytest.mark.parametrize('args, match', [
    ((np.zeros((2, 3), np.float32), np.array([-1, 5]), np.array([0, 10]), np.stack([np.eye(4)] * 2), 5),
     r'point_times_ns: 1 time\(s\) outside the pose table \[0, 10\] ns \(earliest -1, latest -1\)'),
    ((np.zeros((2, 3), np.float32), np.array([3, 5]), np.array([0, 10]), np.stack([np.eye(4)] * 2), 11),
     r'target_time_ns: 1 time\(s\) outside the pose table \[0, 10\]'),
    ((np.zeros((2, 3), np.float32), np.array([3, 5]), np.array([10, 10]), np.stack([np.eye(4)] * 2), 10),
     'pose_times_ns: not strictly increasing at index 1'),
    ((np.zeros((2, 3), np.float32), np.array([3, 5]), np.array([0, 10]), _bad_rotation(), 5),
     r'sensor_to_fixed\[1\]: not a proper rotation'),
    ((np.zeros((2, 3), np.float32), np.array([3, 5]), np.array([0, 10]), np.stack([np.eye(4)] * 3), 5),
     r'sensor_to_fixed: expected shape \(2, 4, 4\)'),
    ((np.zeros((2, 3), np.float32), np.array([3.0, 5.0]), np.array([0, 10]), np.stack([np.eye(4)] * 2), 5),
     'point_times_ns: expected'),
    ((np.zeros((2, 3)), np.array([3, 5]), np.array([0, 10]), np.stack([np.eye(4)] * 2), 5),
     'points: expected float32'),
    ((np.zeros((2, 3), np.float32), np.array([3, 5]), np.zeros(0, np.int64), np.zeros((0, 4, 4)), 5),
     'pose_times_ns: expected a non-empty'),
])
def test_bad_input_is_refused(args, match) -> None:
    for implementation in (compensate_ego_motion, compensate_ego_motion_reference, compensate_ego_motion_baseline):
        with pytest.raises(GeometryError, match=match):
            implementation(*args)
