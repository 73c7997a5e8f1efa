"""project_points and depth_images: numba kernels and torch baselines against the numpy references,
OpenCV's lens model, and the real nuScenes and KITTI frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.projection import (
    Projection,
    depth_images,
    depth_images_baseline,
    depth_images_reference,
    project_points,
    project_points_baseline,
    project_points_reference,
)

REAL_DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'real'


def needs_real_data(*parts: str) -> Path:
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'real sample data not found at {path} (it sits beside the checkout in CI)')
    return path


def assert_same_projection(got: Projection, want: Projection) -> None:
    assert got.point_index.dtype == np.int32 and got.camera.dtype == np.int32
    assert got.uv.dtype == np.float32 and got.depth.dtype == np.float32
    np.testing.assert_array_equal(got.point_index, want.point_index)
    np.testing.assert_array_equal(got.camera, want.camera)
    np.testing.assert_array_equal(got.uv, want.uv)
    np.testing.assert_array_equal(got.depth, want.depth)
    assert got.dropped_invalid == want.dropped_invalid


def yaw_camera(yaw: float, position=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 points_to_camera of a camera looking along heading ``yaw`` in a z-up frame (OpenCV axes)."""
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    rotation = np.stack([right, down, forward])  # rows: camera axes in the points' frame
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = -rotation @ np.asarray(position)
    return transform


@st.composite
def scenes(draw) -> tuple:
    """Points (with NaN, inf, behind-camera and border cases) and 0..3 cameras, some distorted."""
    M = draw(st.integers(0, 3))
    N = draw(st.integers(0, 80))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    points = rng.normal(0.0, 6.0, (N, 3)).astype(np.float32)
    if N and draw(st.booleans()):
        points[rng.random(N) < 0.1, rng.integers(0, 3)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    transforms = np.array([yaw_camera(rng.uniform(-np.pi, np.pi), rng.normal(0, 0.5, 3)) for _ in range(M)]
                          ).reshape(M, 4, 4)
    sizes = rng.integers(8, 120, (M, 2))
    intrinsics = np.zeros((M, 3, 3))
    intrinsics[:, 0, 0] = rng.uniform(5, 80, M)
    intrinsics[:, 1, 1] = intrinsics[:, 0, 0] * rng.uniform(0.9, 1.1, M)
    intrinsics[:, 0, 1] = np.where(rng.random(M) < 0.3, rng.uniform(-1, 1, M), 0.0)
    intrinsics[:, 0, 2] = sizes[:, 0] / 2
    intrinsics[:, 1, 2] = sizes[:, 1] / 2
    intrinsics[:, 2, 2] = 1.0
    distortion = np.where(rng.random((M, 1)) < 0.5, rng.normal(0, 0.05, (M, 5)), 0.0)
    min_depth = draw(st.sampled_from([0.0, 0.1, 1.0]))
    return points, transforms, intrinsics, distortion, sizes, min_depth


@settings(max_examples=80, deadline=None)
@given(scene=scenes())
def test_numba_equals_reference(scene) -> None:
    got = project_points(*scene)
    want = project_points_reference(*scene)
    assert_same_projection(got, want)
    points, _, _, _, sizes, min_depth = scene
    assert want.dropped_invalid == int((~np.isfinite(points).all(axis=1)).sum())
    assert np.all(np.isfinite(points[want.point_index]))
    order = want.point_index.astype(np.int64) * 8 + want.camera
    assert np.all(np.diff(order) > 0), 'hits are point-major, then camera, without repeats'
    if len(want.depth):
        assert np.all(want.depth > min_depth)
        assert np.all(want.uv >= 0) and np.all(want.uv < sizes[want.camera])


@settings(max_examples=40, deadline=None)
@given(scene=scenes())
def test_depth_images_numba_and_baseline_equal_reference(scene) -> None:
    sizes = scene[4]
    projection = project_points_reference(*scene)
    want = depth_images_reference(projection, sizes, len(sizes))
    np.testing.assert_array_equal(depth_images(projection, sizes, len(sizes)), want)
    np.testing.assert_array_equal(depth_images_baseline(projection, sizes, len(sizes)), want)
    if len(sizes):
        assert want.shape == (len(sizes), sizes[:, 1].max(), sizes[:, 0].max())
        for camera, (width, height) in enumerate(sizes):  # beyond a camera's own size: empty
            assert not want[camera, height:].any() and not want[camera, :, width:].any()


def test_baseline_agrees_up_to_float32_rounding() -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(0, 15, (3000, 3)).astype(np.float32)
    transforms = np.stack([yaw_camera(a) for a in np.linspace(0, 2 * np.pi, 4, endpoint=False)])
    intrinsics = np.tile([[300.0, 0, 320], [0, 300, 240], [0, 0, 1]], (4, 1, 1))
    distortion = np.zeros((4, 5))
    distortion[1] = [0.05, -0.01, 0.001, -0.002, 0.001]
    sizes = np.tile([640, 480], (4, 1))
    want = project_points_reference(points, transforms, intrinsics, distortion, sizes)
    got = project_points_baseline(points, transforms, intrinsics, distortion, sizes)
    want_uv = {(i, m): uv for i, m, uv in zip(want.point_index.tolist(), want.camera.tolist(), want.uv)}
    got_uv = {(i, m): uv for i, m, uv in zip(got.point_index.tolist(), got.camera.tolist(), got.uv)}
    assert len(want_uv) > 500
    assert len(want_uv.keys() ^ got_uv.keys()) <= 2  # only points within float32 rounding of a border
    common = sorted(want_uv.keys() & got_uv.keys())
    np.testing.assert_allclose([got_uv[k] for k in common], [want_uv[k] for k in common], atol=2e-3)


def test_empty_inputs() -> None:
    camera = (yaw_camera(0.0)[None], np.array([[[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]]), np.zeros((1, 5)),
              np.array([[10, 10]]))
    for implementation in (project_points, project_points_reference, project_points_baseline):
        empty = implementation(np.zeros((0, 3), np.float32), *camera)
        assert empty.point_index.shape == (0,) and empty.uv.shape == (0, 2) and empty.dropped_invalid == 0
        no_cameras = implementation(np.array([[1, 2, 3], [np.nan, 0, 0]], np.float32), np.zeros((0, 4, 4)),
                                    np.zeros((0, 3, 3)), np.zeros((0, 5)), np.zeros((0, 2), int))
        assert no_cameras.depth.shape == (0,) and no_cameras.dropped_invalid == 1
    assert depth_images(Projection(*(a[:0] for a in empty[:4]), 0), [10, 10], 1).shape == (1, 10, 10)


def test_behind_the_camera_and_min_depth() -> None:
    identity = (np.eye(4)[None], np.array([[[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]]), np.zeros((1, 5)),
                np.array([[10, 10]]))
    just_deeper = np.nextafter(np.float32(0.5), np.float32(1))
    points = np.array([[0, 0, -2], [0, 0, 0], [0, 0, 0.5], [0, 0, just_deeper], [0, 0, 2]], np.float32)
    for implementation in (project_points, project_points_reference, project_points_baseline):
        hits = implementation(points, *identity, min_depth=0.5)
        np.testing.assert_array_equal(hits.point_index, [3, 4])  # depth must exceed min_depth
        np.testing.assert_array_equal(hits.uv, [[5, 5], [5, 5]])


def test_image_border_is_half_open() -> None:
    """0 <= u < width and 0 <= v < height, exactly, on the returned float32 uv."""
    width, height = 64, 48
    camera = (np.eye(4)[None], np.array([[[64.0, 0, 0], [0, 48, 0], [0, 0, 1]]]), np.zeros((1, 5)),
              np.array([[width, height]]))
    below_one = np.nextafter(np.float32(1), np.float32(0))
    points = np.array([
        [0, 0, 1],  # (0, 0): the first pixel's corner, inside
        [1, 0, 1],  # u == width: outside
        [0, 1, 1],  # v == height: outside
        [below_one, below_one, 1],  # just inside the far corner
        [-1e-6, 0, 1],  # just left of the image
    ], np.float32)
    for implementation in (project_points, project_points_reference, project_points_baseline):
        hits = implementation(points, *camera)
        np.testing.assert_array_equal(hits.point_index, [0, 3])
    hits = project_points(points, *camera)
    image = depth_images(hits, [width, height], 1)
    assert image[0, 0, 0] == 1 and image[0, height - 1, width - 1] == 1 and np.count_nonzero(image) == 2


def test_nan_and_inf_points_are_dropped_and_counted() -> None:
    camera = (np.eye(4)[None], np.array([[[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]]), np.zeros((1, 5)),
              np.array([[10, 10]]))
    # (0, 0, inf) would otherwise "project" onto the principal point at infinite depth.
    points = np.array([[0, 0, 2], [np.nan, 0, 2], [0, 0, np.inf], [0, -np.inf, 2], [0.1, 0, 3]], np.float32)
    for implementation in (project_points, project_points_reference, project_points_baseline):
        hits = implementation(points, *camera)
        np.testing.assert_array_equal(hits.point_index, [0, 4])
        assert hits.dropped_invalid == 3


def test_plumb_bob_matches_opencv() -> None:
    rng = np.random.default_rng(7)
    points = np.column_stack([rng.uniform(-1, 1, (500, 2)), rng.uniform(1, 5, 500)]).astype(np.float32)
    intrinsics = np.array([[800.0, 0, 640], [0, 790, 360], [0, 0, 1]])  # OpenCV ignores a skew term
    distortion = np.array([-0.28, 0.09, 0.0012, -0.0007, -0.012])
    transform = np.eye(4)
    transform[:3, 3] = [0.05, -0.02, 0.1]
    hits = project_points(points, transform[None], intrinsics[None], distortion[None], np.array([[1280, 720]]))
    assert len(hits.point_index) > 300
    opencv, _ = cv2.projectPoints(points[hits.point_index].astype(np.float64), np.zeros(3), transform[:3, 3],
                                  intrinsics, distortion)
    np.testing.assert_allclose(hits.uv, opencv[:, 0, :], atol=1e-3, rtol=0)  # float32 ulp at 1e3 px: 6e-5


def test_result_does_not_depend_on_thread_count() -> None:
    rng = np.random.default_rng(11)
    points = rng.normal(0, 10, (20000, 3)).astype(np.float32)
    args = (points, np.stack([yaw_camera(a) for a in (0.0, 2.0, 4.0)]),
            np.tile([[100.0, 0, 64], [0, 100, 48], [0, 0, 1]], (3, 1, 1)), np.zeros((3, 5)), np.tile([128, 96], (3, 1)))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = project_points(*args)
    finally:
        numba.set_num_threads(threads)
    assert_same_projection(project_points(*args), single)


def test_nearest_depth_wins() -> None:
    projection = Projection(np.array([0, 1, 2, 3], np.int32), np.array([0, 0, 1, 0], np.int32),
                            np.array([[1.2, 2.9], [1.9, 2.0], [1.5, 2.5], [0.0, 0.0]], np.float32),
                            np.array([5.0, 3.0, 7.0, 2.0], np.float32), 0)
    for implementation in (depth_images, depth_images_reference, depth_images_baseline):
        images = implementation(projection, np.array([[4, 3], [2, 3]]), 2)
        assert images.shape == (2, 3, 4) and images.dtype == np.float32
        assert images[0, 2, 1] == 3.0 and images[1, 2, 1] == 7.0 and images[0, 0, 0] == 2.0
        assert np.count_nonzero(images) == 3


@pytest.mark.parametrize('call, match', [
    (lambda: project_points(np.zeros((3, 2), np.float32), np.eye(4)[None], np.eye(3)[None], np.zeros((1, 5)),
                            [[4, 4]]), r'points: expected shape \(N, 3\)'),
    (lambda: project_points(np.zeros((3, 3)), np.eye(4)[None], np.eye(3)[None], np.zeros((1, 5)), [[4, 4]]),
     'points: expected float32'),
    (lambda: project_points(np.zeros((3, 3), np.float32), np.ones((1, 4, 4)), np.eye(3)[None], np.zeros((1, 5)),
                            [[4, 4]]), r'points_to_camera\[0\]: last row'),
    (lambda: project_points(np.zeros((3, 3), np.float32), np.eye(4)[None], np.eye(3)[None], np.zeros((2, 5)),
                            [[4, 4]]), r'distortion: expected shape \(1, 5\)'),
    (lambda: project_points(np.zeros((3, 3), np.float32), np.eye(4)[None], np.ones((1, 3, 3)), np.zeros((1, 5)),
                            [[4, 4]]), 'intrinsics: each must be'),
    (lambda: project_points(np.zeros((3, 3), np.float32), np.eye(4)[None], np.eye(3)[None], np.zeros((1, 5)),
                            [[4, 0]]), 'image_size: expected positive'),
    (lambda: project_points(np.zeros((3, 3), np.float32), np.eye(4)[None], np.eye(3)[None], np.zeros((1, 5)),
                            [[4, 4]], min_depth=-1), 'min_depth'),
    (lambda: depth_images(Projection(np.zeros(1, np.int32), np.zeros(1, np.int32), np.array([[5.0, 0]], np.float32),
                                     np.ones(1, np.float32), 0), [[4, 4]], 1), 'outside their camera'),
    (lambda: depth_images(Projection(np.zeros(1, np.int32), np.ones(1, np.int32), np.zeros((1, 2), np.float32),
                                     np.ones(1, np.float32), 0), [4, 4], 1), 'num_cameras'),
    (lambda: depth_images_reference(Projection(np.zeros(1, np.int32), np.zeros(1, np.int32),
                                               np.zeros((1, 2), np.float32), np.ones(2, np.float32), 0), [4, 4], 1),
     'do not describe the same hits'),
])
def test_bad_input_is_refused(call, match) -> None:
    with pytest.raises(GeometryError, match=match):
        call()


# --- real data -----------------------------------------------------------------------------------

NUSCENES_HITS_PER_CAMERA = {'CAM_FRONT': 3067, 'CAM_FRONT_RIGHT': 3079, 'CAM_FRONT_LEFT': 3704,
                            'CAM_BACK': 4826, 'CAM_BACK_LEFT': 4097, 'CAM_BACK_RIGHT': 3379}


def test_nuscenes_lidar_into_six_cameras() -> None:
    from mmfusion_ros.io.nuscenes import load_nuscenes_keyframe

    keyframe = load_nuscenes_keyframe(needs_real_data('nuscenes_keyframe'))
    cameras = list(keyframe.cameras.values())
    args = (keyframe.lidar.xyz, np.stack([c.lidar_to_cam.matrix for c in cameras]),
            np.stack([c.cam2img for c in cameras]), np.zeros((6, 5)), np.tile([1600, 900], (6, 1)))
    got = project_points(*args)
    assert_same_projection(got, project_points_reference(*args))
    per_camera = {c.name: int(np.count_nonzero(got.camera == m)) for m, c in enumerate(cameras)}
    assert per_camera == NUSCENES_HITS_PER_CAMERA
    # Sanity: 22,152 hits from 20,206 of the 34,688 points (the rest are below the cameras' view or
    # on the car); overlapping neighbours share a few, and nothing lands closer than the car's body.
    assert len(got.depth) == 22152 and len(np.unique(got.point_index)) == 20206
    assert 3.0 < got.depth.min() and got.depth.max() < 105.0
    images = depth_images(got, [1600, 900], 6)
    np.testing.assert_array_equal(images, depth_images_reference(got, [1600, 900], 6))


def kitti_camera(p2: np.ndarray, r0_rect: np.ndarray, velo_to_cam: np.ndarray,
                 keep_p2_offset: bool) -> tuple[np.ndarray, np.ndarray]:
    """(intrinsics, points_to_camera) equal to ``P2 @ R0_rect @ Tr_velo_to_cam``.

    P2 = K [I | t]: ``t = K^-1 P2[:, 3]`` is camera 2's offset from the rectified reference camera
    (camera 0). ``keep_p2_offset=False`` drops it, i.e. projects into the reference camera with K.
    """
    intrinsics = p2[:3, :3]
    offset = np.eye(4)
    if keep_p2_offset:
        offset[:3, 3] = np.linalg.solve(intrinsics, p2[:3, 3])
    return intrinsics, offset @ r0_rect @ velo_to_cam


def kitti_000000() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = needs_real_data('kitti', '000000')
    calib = {}
    for line in (folder / 'calib' / '000000.txt').read_text().splitlines():
        if ':' in line:
            key, values = line.split(':', 1)
            calib[key] = np.array(values.split(), np.float64)
    r0_rect, velo_to_cam = np.eye(4), np.eye(4)
    r0_rect[:3, :3] = calib['R0_rect'].reshape(3, 3)
    velo_to_cam[:3] = calib['Tr_velo_to_cam'].reshape(3, 4)
    points = np.fromfile(folder / 'velodyne' / '000000.bin', np.float32).reshape(-1, 4)[:, :3]
    return np.ascontiguousarray(points), calib['P2'].reshape(3, 4), r0_rect, velo_to_cam


def kitti_000008() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = needs_real_data('kitti', '000008')
    sample = json.loads((folder / '000008.derived.json').read_text())['data_list'][0]
    p2 = np.array((folder / '000008.txt').read_text().split(), np.float64).reshape(4, 4)[:3]
    points = np.fromfile(folder / '000008.bin', np.float32).reshape(-1, 4)[:, :3]
    return (np.ascontiguousarray(points), p2, np.array(sample['images']['R0_rect']),
            np.array(sample['lidar_points']['Tr_velo_to_cam']))


@pytest.mark.parametrize('frame, size, readme_count, with_p2_offset_count, total', [
    (kitti_000000, (1224, 370), 20279, 20285, 115384),
    (kitti_000008, (1242, 375), 17153, 17238, 17238),
])
def test_kitti_counts(frame, size, readme_count, with_p2_offset_count, total) -> None:
    """The README's counts come out exactly with our bounds test (0 <= u < w, 0 <= v < h, no rounding).

    They are the counts of the rectified reference camera (K of P2 without P2's 4th column, which
    is also P0 with camera 2's K). With camera 2's own offset kept, as in P2 @ R0_rect @ Tr, the
    counts are 20,285 and 17,238: the whole FOV-reduced 000008 scan, which was cut to camera 2's view.
    """
    points, p2, r0_rect, velo_to_cam = frame()
    assert len(points) == total
    for keep_offset, want in ((False, readme_count), (True, with_p2_offset_count)):
        intrinsics, transform = kitti_camera(p2, r0_rect, velo_to_cam, keep_offset)
        args = (points, transform[None], intrinsics[None], np.zeros((1, 5)), np.array([size]))
        got = project_points(*args, min_depth=0.0)
        assert_same_projection(got, project_points_reference(*args, min_depth=0.0))
        assert len(got.point_index) == want
    # The folded transform reproduces the 3x4 matrix exactly: K @ [I | t] @ R0 @ Tr == P2 @ R0 @ Tr.
    intrinsics, transform = kitti_camera(p2, r0_rect, velo_to_cam, True)
    np.testing.assert_allclose(intrinsics @ transform[:3], p2 @ r0_rect @ velo_to_cam, rtol=1e-12, atol=1e-9)
