"""CUDA pillarize, scatter and bev_pool against the numpy references, on tiny inputs.

Runs on a GPU, or anywhere under numba's simulator::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/geometry/cuda -m cuda -q
"""

from __future__ import annotations

import numpy as np
import pytest

from mmfusion_ros.config import GridConfig
from mmfusion_ros.geometry.bev_pool import bev_pool_geometry, bev_pool_reference, frustum_points
from mmfusion_ros.geometry.pillars import Pillars, pillarize_reference
from mmfusion_ros.geometry.scatter import scatter_max_reference, scatter_to_bev_reference


def _cuda_available() -> bool:
    try:
        from numba import cuda
    except Exception:  # noqa: BLE001 - any failure to load the CUDA driver means: no device
        return False
    return bool(cuda.is_available())


pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _cuda_available(),
                       reason='no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)'),
]

GRID = GridConfig(x_range=(-2.0, 2.0), y_range=(-1.2, 1.6), z_range=(-1.0, 1.0), cell_size=0.4)  # 7 x 10


def tiny_cloud(rng: np.random.Generator, n: int, F: int) -> np.ndarray:
    points = rng.uniform(-2.3, 2.3, (n, F)).astype(np.float32)
    points[: n // 3, :3] = np.float32([0.3, 0.3, 0.1]) + rng.uniform(0, 0.05, (n // 3, 3)).astype(np.float32)
    points[1, 0] = np.nan
    points[2] = [2.0, 0.0, 0.0, *points[2, 3:]]  # on x_max: out
    points[3, :3] = [-2.0, -1.2, -1.0]  # on every min edge: in
    points[4, :3] = [np.float32(-2.0 + 0.4 * 3), 0.5, 0.0]  # on a column border
    return points


@pytest.mark.parametrize('F, cap', [(4, 3), (7, 1)])
def test_pillarize_cuda_equals_reference(F: int, cap: int) -> None:
    from mmfusion_ros.geometry.cuda.pillars import pillarize_cuda

    points = tiny_cloud(np.random.default_rng(F), 90, F)
    expected = pillarize_reference(points, GRID, cap)
    assert expected.dropped_over_cap > 0 and expected.dropped_invalid == 1
    actual = pillarize_cuda(points, GRID, cap)
    for name, a, e in zip(Pillars._fields, actual, expected):
        if isinstance(e, np.ndarray):
            assert a.dtype == e.dtype and a.shape == e.shape, name
            np.testing.assert_array_equal(a, e, err_msg=name)
        else:
            assert a == e, name


def test_pillarize_cuda_empty_and_all_out() -> None:
    from mmfusion_ros.geometry.cuda.pillars import pillarize_cuda

    assert pillarize_cuda(np.zeros((0, 4), np.float32), GRID, 2).num_pillars == 0
    result = pillarize_cuda(np.full((3, 4), 9.0, np.float32), GRID, 2)
    assert result.num_pillars == 0 and result.dropped_out_of_range == 3


def test_scatter_cuda_equals_reference() -> None:
    from mmfusion_ros.geometry.cuda.scatter import scatter_max_cuda, scatter_to_bev_cuda

    rng = np.random.default_rng(1)
    pillars = pillarize_reference(tiny_cloud(rng, 60, 4), GRID, 4)
    P = pillars.num_pillars
    features = rng.standard_normal((len(pillars.point_index), 5)).astype(np.float32)
    expected = scatter_max_reference(features, pillars.point_pillar, P)
    np.testing.assert_array_equal(scatter_max_cuda(features, pillars.point_pillar, P), expected)
    order = rng.permutation(len(features))
    np.testing.assert_array_equal(scatter_max_cuda(features[order], pillars.point_pillar[order], P), expected)
    with_empty = scatter_max_cuda(features, pillars.point_pillar, P + 2)  # two pillars without points
    np.testing.assert_array_equal(with_empty[:P], expected)
    assert not with_empty[P:].any()
    bev = scatter_to_bev_cuda(expected, pillars.coords, GRID.shape)
    np.testing.assert_array_equal(bev, scatter_to_bev_reference(expected, pillars.coords, GRID.shape))


def test_bev_pool_cuda_equals_reference() -> None:
    from mmfusion_ros.geometry.cuda.bev_pool import bev_pool_cuda, bev_pool_geometry_to_device

    grid = GridConfig(x_range=(-4.0, 4.0), y_range=(-4.0, 4.0), z_range=(-2.0, 2.0), cell_size=0.5)
    K = np.array([[[20.0, 0, 16.0], [0, 20.0, 8.0], [0, 0, 1]]] * 2)
    T = np.repeat(np.eye(4)[None], 2, axis=0)
    T[:, :3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # looking along +x
    T[1, :3, :3] = np.diag([-1, -1, 1]) @ T[1, :3, :3]  # looking along -x
    frustum = frustum_points(K, T, (32, 16), (4, 2), np.arange(0.5, 5.0, 1.0))
    geometry = bev_pool_geometry(frustum, grid)
    assert 0 < geometry.num_points and geometry.dropped_outside > 0
    rng = np.random.default_rng(2)
    depth = rng.random(geometry.frustum_shape, dtype=np.float32)
    features = rng.standard_normal((2, 2, 4, 3), dtype=np.float32)
    expected = bev_pool_reference(depth, features, geometry)
    np.testing.assert_allclose(bev_pool_cuda(depth, features, geometry), expected, rtol=1e-5, atol=1e-6)
    on_device = bev_pool_geometry_to_device(geometry)
    for _ in range(2):  # the device geometry is reused across frames
        np.testing.assert_allclose(bev_pool_cuda(depth, features, on_device), expected, rtol=1e-5, atol=1e-6)
