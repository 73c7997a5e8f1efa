"""bev_pool: frustum, geometry and pooling against the numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.config import GridConfig
from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.bev_pool import (
    BevPoolGeometry,
    bev_pool,
    bev_pool_baseline,
    bev_pool_geometry,
    bev_pool_geometry_reference,
    bev_pool_reference,
    frustum_points,
)

GRID = GridConfig(x_range=(-4.0, 4.0), y_range=(-4.0, 4.0), z_range=(-2.0, 2.0), cell_size=0.5)  # 16 x 16
IMAGE, FEATURE = (64, 32), (8, 4)  # (width, height)
DEPTHS = np.arange(0.5, 6.01, 0.5)  # 12 bins, the far ones beyond the grid


def rig(yaws_deg=(0.0, 180.0), height=0.5) -> tuple[np.ndarray, np.ndarray]:
    """Cameras at the origin looking along the given headings; optical frame -> base frame."""
    K = np.array([[40.0, 0, 32.0], [0, 40.0, 16.0], [0, 0, 1]])
    optical_to_forward = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # z fwd -> x, x right -> -y
    transforms = []
    for yaw in np.deg2rad(yaws_deg):
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ optical_to_forward
        T[:3, 3] = [0.1 * c, 0.1 * s, height]
        transforms.append(T)
    return np.repeat(K[None], len(yaws_deg), axis=0), np.array(transforms)


def frame(rng: np.random.Generator, shape: tuple[int, int, int, int], C: int) -> tuple[np.ndarray, np.ndarray]:
    Ncam, D, H, W = shape
    depth = rng.random((Ncam, D, H, W), dtype=np.float32)
    depth /= depth.sum(axis=1, keepdims=True)
    return depth, rng.standard_normal((Ncam, H, W, C), dtype=np.float32)


def assert_same_geometry(actual: BevPoolGeometry, expected: BevPoolGeometry) -> None:
    for name, a, e in zip(BevPoolGeometry._fields, actual, expected):
        if isinstance(e, np.ndarray):
            assert a.dtype == e.dtype, name
            np.testing.assert_array_equal(a, e, err_msg=name)
        else:
            assert a == e, name


def test_frustum_points_project_back_to_pixel_centres() -> None:
    K, T = rig()
    frustum = frustum_points(K, T, IMAGE, FEATURE, DEPTHS)
    assert frustum.shape == (2, 12, 4, 8, 3) and frustum.dtype == np.float32
    for n in range(2):
        base_to_camera = np.linalg.inv(T[n])
        camera = frustum[n].astype(np.float64) @ base_to_camera[:3, :3].T + base_to_camera[:3, 3]
        np.testing.assert_allclose(camera[..., 2], np.broadcast_to(DEPTHS[:, None, None], (12, 4, 8)), rtol=1e-5)
        uv = camera @ K[n].T
        uv = uv[..., :2] / uv[..., 2:]
        np.testing.assert_allclose(uv[..., 0], np.broadcast_to((np.arange(8) + 0.5) * 8, (12, 4, 8)), atol=1e-3)
        np.testing.assert_allclose(uv[..., 1], np.broadcast_to((np.arange(4)[:, None] + 0.5) * 8, (12, 4, 8)),
                                   atol=1e-3)


@st.composite
def random_frustums(draw) -> np.ndarray:
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frustum = rng.uniform(-5, 5, (*shape, 3)).astype(np.float32)
    frustum[rng.random(shape) < 0.1] = np.nan
    if draw(st.booleans()):  # crowd one cell
        frustum[..., :2] = np.where(rng.random((*shape, 1)) < 0.5, np.float32(0.1), frustum[..., :2])
    return frustum


@settings(max_examples=80, deadline=None)
@given(frustum=random_frustums(), C=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_geometry_and_pooling_equal_reference(frustum: np.ndarray, C: int, seed: int) -> None:
    geometry = bev_pool_geometry(frustum, GRID)
    assert_same_geometry(geometry, bev_pool_geometry_reference(frustum, GRID))
    xyz = frustum.reshape(-1, 3).astype(np.float64)
    inside = np.all((xyz >= [-4, -4, -2]) & (xyz < [4, 4, 2]), axis=1)  # NaN compares False: outside
    assert geometry.dropped_outside == np.count_nonzero(~inside)
    assert geometry.num_points == np.count_nonzero(inside)
    depth, features = frame(np.random.default_rng(seed), geometry.frustum_shape, C)
    expected = bev_pool_reference(depth, features, geometry)
    assert expected.shape == (C, 16, 16)
    np.testing.assert_array_equal(bev_pool(depth, features, geometry), expected)
    for method in ('index_add', 'cumsum'):
        np.testing.assert_allclose(bev_pool_baseline(depth, features, geometry, method=method, chunk_points=5),
                                   expected, rtol=1e-5, atol=1e-6)


def test_geometry_reuse_across_frames_equals_recomputing() -> None:
    K, T = rig((0.0, 90.0, 180.0))
    frustum = frustum_points(K, T, IMAGE, FEATURE, DEPTHS)
    geometry = bev_pool_geometry(frustum, GRID)
    assert 0 < geometry.dropped_outside < frustum.size // 3
    assert np.all(np.diff(geometry.interval_cell) > 0) and geometry.interval_length.sum() == geometry.num_points
    rng = np.random.default_rng(11)
    reused = bev_pool(*frame(rng, geometry.frustum_shape, 6), geometry)  # warm the buffer with another frame
    for _ in range(2):
        depth, features = frame(rng, geometry.frustum_shape, 6)
        reused = bev_pool(depth, features, geometry, out=reused)
        fresh = bev_pool(depth, features, bev_pool_geometry(frustum, GRID))
        np.testing.assert_array_equal(reused, fresh)
        np.testing.assert_array_equal(fresh, bev_pool_reference(depth, features, geometry))
        np.testing.assert_allclose(bev_pool_baseline(depth, features, geometry), fresh, rtol=1e-5, atol=1e-6)


def test_pooled_mass_equals_sum_over_in_grid_points() -> None:
    K, T = rig()
    frustum = frustum_points(K, T, IMAGE, FEATURE, DEPTHS)
    geometry = bev_pool_geometry(frustum, GRID)
    depth, features = frame(np.random.default_rng(2), geometry.frustum_shape, 3)
    xyz = frustum.reshape(-1, 3)
    inside = np.all((xyz >= [-4, -4, -2]) & (xyz < [4, 4, 2]), axis=1).reshape(geometry.frustum_shape)
    expected = np.einsum('ndhw,nhwc->c', (depth * inside).astype(np.float64), features.astype(np.float64))
    np.testing.assert_allclose(bev_pool(depth, features, geometry).sum(axis=(1, 2), dtype=np.float64), expected,
                               rtol=1e-4, atol=1e-4)


def test_points_outside_are_counted() -> None:
    K, T = rig(height=5.0)  # above the grid's z range: nothing lands
    frustum = frustum_points(K, T, IMAGE, FEATURE, DEPTHS[:2])
    geometry = bev_pool_geometry(frustum, GRID)
    assert geometry.num_points == 0 and geometry.num_intervals == 0
    assert geometry.dropped_outside == 2 * 2 * 4 * 8
    depth, features = frame(np.random.default_rng(0), geometry.frustum_shape, 4)
    assert not bev_pool(depth, features, geometry).any()
    assert not bev_pool_baseline(depth, features, geometry).any()


def test_invalid_input() -> None:
    K, T = rig()
    geometry = bev_pool_geometry(frustum_points(K, T, IMAGE, FEATURE, DEPTHS), GRID)
    depth, features = frame(np.random.default_rng(0), geometry.frustum_shape, 4)
    with pytest.raises(GeometryError, match=r'depth must be float32 \(2, 12, 4, 8\)'):
        bev_pool(depth[:, :5], features, geometry)
    with pytest.raises(GeometryError, match=r'features must be float32 \(2, 4, 8, C\) channels-last'):
        bev_pool(depth, features.transpose(0, 3, 1, 2), geometry)
    with pytest.raises(GeometryError, match='features must be float32'):
        bev_pool_reference(depth, features.astype(np.float64), geometry)
    with pytest.raises(GeometryError, match=r'out must be a C-contiguous float32 array of shape \(4, 16, 16\)'):
        bev_pool(depth, features, geometry, out=np.zeros((4, 16, 15), np.float32))
    with pytest.raises(GeometryError, match="method must be 'index_add' or 'cumsum', got 'scan'"):
        bev_pool_baseline(depth, features, geometry, method='scan')
    with pytest.raises(GeometryError, match=r'frustum_points must be \(Ncam, D, H, W, 3\)'):
        bev_pool_geometry(np.zeros((2, 3, 4, 3), np.float32), GRID)
    with pytest.raises(GeometryError, match='frustum_points must be float32, got float64'):
        bev_pool_geometry(np.zeros((1, 2, 3, 4, 3)), GRID)
    with pytest.raises(GeometryError, match=r'camera_to_base must be \(2, 4, 4\)'):
        frustum_points(K, T[:1], IMAGE, FEATURE, DEPTHS)
    with pytest.raises(GeometryError, match='depth_bins must be a non-empty'):
        frustum_points(K, T, IMAGE, FEATURE, np.array([1.0, -1.0]))
    with pytest.raises(GeometryError, match='intrinsics must be finite and invertible'):
        frustum_points(np.zeros_like(K), T, IMAGE, FEATURE, DEPTHS)


def test_real_nuscenes_calibration(real_data) -> None:
    import json

    info = json.loads(next((real_data / 'nuscenes_keyframe').glob('*.derived.json')).read_text())['data_list'][0]
    cameras = list(info['images'].values())
    K = np.array([c['cam2img'] for c in cameras])  # (6, 3, 3) for 1600x900
    K[:, :2] *= 0.44  # resized to 704x396 ...
    K[:, 1, 2] -= 140  # ... and cropped to 704x256, as BEVFusion feeds its camera encoder
    camera_to_base = np.array([c['cam2ego'] for c in cameras])
    frustum = frustum_points(K, camera_to_base, (704, 256), (88, 32), np.arange(1.0, 60.0, 4.0))
    front = frustum[0, :, 16, 44]  # CAM_FRONT, the middle pixel, every depth: straight ahead of the car
    assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.abs(front[:, 1]) < 0.05 * front[:, 0] + 0.1)
    grid = GridConfig()
    geometry = bev_pool_geometry(frustum, grid)
    assert_same_geometry(geometry, bev_pool_geometry_reference(frustum, grid))
    assert geometry.dropped_outside + geometry.num_points == frustum.size // 3
    assert geometry.num_points > 0.5 * frustum.size // 3
    depth, features = frame(np.random.default_rng(4), geometry.frustum_shape, 4)
    np.testing.assert_array_equal(bev_pool(depth, features, geometry), bev_pool_reference(depth, features, geometry))
