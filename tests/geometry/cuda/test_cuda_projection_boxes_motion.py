"""CUDA project_points, points_in_boxes and compensate_ego_motion == the numpy references.

Tiny inputs, so this also runs in numba's CUDA simulator:
``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/geometry/cuda -m cuda``. The simulator does the
references' arithmetic exactly; a real GPU fuses multiply-adds, so values are compared to a few
float32 ulps and the inputs keep away from image borders and box faces (except where the test puts
a point on one exactly, with arithmetic that fusing cannot change).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import cuda

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.boxes import points_in_boxes_reference
from mmfusion_ros.geometry.motion import compensate_ego_motion_reference
from mmfusion_ros.geometry.projection import project_points_reference
from mmfusion_ros.types import RigidTransform

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda.is_available(),
                       reason='no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)'),
]


def cameras() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three cameras: looking along +x, +y (distorted), and -x; 64 x 48 images."""
    transforms = []
    for yaw in (0.0, math.pi / 2, math.pi):
        forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        transform = np.eye(4)
        transform[:3, :3] = np.stack([right, [0.0, 0.0, -1.0], forward])
        transform[:3, 3] = [0.1, -0.2, 0.05]
        transforms.append(transform)
    intrinsics = np.tile([[40.0, 0.0, 32.0], [0.0, 41.0, 24.0], [0.0, 0.0, 1.0]], (3, 1, 1))
    distortion = np.zeros((3, 5))
    distortion[1] = [-0.2, 0.05, 0.001, -0.002, 0.0]
    return np.stack(transforms), intrinsics, distortion, np.tile([64, 48], (3, 1))


def test_project_points_matches_reference():
    from mmfusion_ros.geometry.cuda.projection import project_points_cuda

    rng = np.random.default_rng(0)
    points = rng.normal(0, 4, (300, 3)).astype(np.float32)
    points[5] = [np.nan, 0, 0]
    points[6] = [0, 0, np.inf]
    got = project_points_cuda(points, *cameras())
    want = project_points_reference(points, *cameras())
    assert len(want.point_index) > 50 and set(want.camera.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(got.point_index, want.point_index)
    np.testing.assert_array_equal(got.camera, want.camera)
    np.testing.assert_allclose(got.uv, want.uv, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(got.depth, want.depth, rtol=1e-6)
    assert got.dropped_invalid == want.dropped_invalid == 2
    assert got.uv.dtype == np.float32 and got.point_index.dtype == np.int32


def test_project_points_border_and_empty():
    from mmfusion_ros.geometry.cuda.projection import project_points_cuda

    camera = (np.eye(4)[None], np.array([[[64.0, 0, 0], [0, 48, 0], [0, 0, 1]]]), np.zeros((1, 5)),
              np.array([[64, 48]]))
    points = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 1], [0, 0, -1]], np.float32)
    np.testing.assert_array_equal(project_points_cuda(points, *camera).point_index, [0])
    empty = project_points_cuda(np.zeros((0, 3), np.float32), *camera)
    assert empty.point_index.shape == (0,) and empty.uv.shape == (0, 2)
    with pytest.raises(GeometryError, match='points: expected float32'):
        project_points_cuda(np.zeros((2, 3)), *camera)


def test_points_in_boxes_matches_reference():
    from mmfusion_ros.geometry.cuda.boxes import points_in_boxes_cuda

    rng = np.random.default_rng(1)
    boxes = np.column_stack([rng.uniform(-5, 5, (8, 2)), rng.uniform(-0.5, 0.5, 8), rng.uniform(0.5, 4, (8, 3)),
                             rng.uniform(-np.pi, np.pi, 8)])
    boxes[3] = boxes[2]  # duplicate: both count, the first wins
    boxes[4, 6] = 0.0
    boxes[5, 6] = math.pi / 2
    points = np.column_stack([rng.uniform(-6, 6, (400, 2)), rng.uniform(-1.5, 1.5, 400)]).astype(np.float32)
    points[7] = [np.nan, 0, 0]
    points[8] = (boxes[4, :3] + boxes[4, 3:6] / 2).astype(np.float32)  # corner of the yaw-0 box: inside
    got = points_in_boxes_cuda(points, boxes)
    want = points_in_boxes_reference(points, boxes)
    assert np.count_nonzero(want[0] >= 0) > 20 and want[1][2] == want[1][3] > 0 and want[0][8] >= 0
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    box_of_point, counts = points_in_boxes_cuda(np.zeros((0, 3), np.float32), boxes)
    assert box_of_point.shape == (0,) and counts.tolist() == [0] * 8
    box_of_point, counts = points_in_boxes_cuda(points[:3], np.zeros((0, 7)))
    assert box_of_point.tolist() == [-1, -1, -1] and counts.shape == (0,)


def test_compensate_ego_motion_matches_reference():
    from mmfusion_ros.geometry.cuda.motion import compensate_ego_motion_cuda

    rng = np.random.default_rng(2)
    pose_times = 10**18 + np.array([0, 40_000_000, 100_000_000, 100_000_050], np.int64)
    poses = np.stack([RigidTransform.from_quaternion([0, 0, math.sin(y / 2), math.cos(y / 2)],
                                                     [1e4 + 2 * i, 5e3 - i, 1]).matrix
                      for i, y in enumerate([0.0, 0.3, 3.0, 3.0000001])])
    times = rng.integers(pose_times[0], pose_times[-1] + 1, 200)
    times[:10] = pose_times[[0, 1, 2, 3, 3, 2, 1, 0, 0, 1]]
    points = rng.normal(0, 20, (200, 3)).astype(np.float32)
    points[4] = np.nan
    args = (points, times, pose_times, poses, int(pose_times[1]) + 7)
    got = compensate_ego_motion_cuda(*args)
    want = compensate_ego_motion_reference(*args)
    assert got.dtype == np.float32 and got.shape == (200, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    assert np.isnan(got[4]).all()
    with pytest.raises(GeometryError, match='outside the pose table'):
        compensate_ego_motion_cuda(points, times - 10**9, pose_times, poses, int(pose_times[0]))
    assert compensate_ego_motion_cuda(points[:0], times[:0], pose_times, poses, int(pose_times[0])).shape == (0, 3)
