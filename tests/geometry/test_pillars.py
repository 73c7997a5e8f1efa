"""pillarize: the numba kernel and the vectorised baseline against the numpy reference, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfusion_ros.config import GridConfig
from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.pillars import (
    DECORATIONS,
    Pillars,
    pillarize,
    pillarize_baseline,
    pillarize_reference,
    pillars_padded,
)

GRID = GridConfig(x_range=(-2.0, 2.0), y_range=(-1.2, 1.6), z_range=(-1.0, 1.0), cell_size=0.4)  # 7 x 10


def assert_same(actual: Pillars, expected: Pillars) -> None:
    for name, a, e in zip(Pillars._fields, actual, expected):
        if isinstance(e, np.ndarray):
            assert a.dtype == e.dtype, name
            assert a.shape == e.shape, name
            np.testing.assert_array_equal(a, e, err_msg=name)  # NaN == NaN here, bit-identical otherwise
        else:
            assert a == e, name


def check_invariants(result: Pillars, points: np.ndarray, grid: GridConfig, cap: int) -> None:
    N, F = points.shape
    ny, nx = grid.shape
    P, Nk = result.num_pillars, len(result.point_index)
    assert result.features.shape == (Nk, F + DECORATIONS)
    assert result.dropped_invalid + result.dropped_out_of_range + result.dropped_over_cap + Nk == N
    assert np.all((result.num_points >= 1) & (result.num_points <= cap))
    assert result.num_points.sum() == Nk
    linear = result.coords[:, 0].astype(np.int64) * nx + result.coords[:, 1]
    assert np.all(np.diff(linear) > 0), 'pillars sorted by linear cell, each once'
    assert np.all((result.coords >= 0) & (result.coords < np.array([ny, nx])))
    assert np.all(np.diff(result.point_pillar) >= 0)
    start = result.pillar_start
    for p in range(P):
        index = result.point_index[start[p]:start[p + 1]]
        assert np.all(np.diff(index) > 0), 'input order within a pillar'
    np.testing.assert_array_equal(result.features[:, :F], points[result.point_index])
    if Nk:
        x = points[result.point_index, 0].astype(np.float64)
        cell_x0 = grid.x_range[0] + result.coords[result.point_pillar, 1] * grid.cell_size
        assert np.all(x >= cell_x0 - 1e-5) and np.all(x < cell_x0 + grid.cell_size + 1e-5), 'point in its cell'
        sums = np.zeros((P, 3))
        np.add.at(sums, result.point_pillar, result.features[:, F:F + 3].astype(np.float64))
        assert np.allclose(sums, 0.0, atol=1e-5), 'offsets from the pillar mean sum to zero'


def _border_values(grid: GridConfig) -> list[float]:
    values = [np.nan, np.inf, -np.inf]
    for low, high in (grid.x_range, grid.y_range, grid.z_range):
        values += [low, high, float(np.nextafter(np.float32(high), np.float32(-np.inf))),
                   float(np.nextafter(np.float32(low), np.float32(-np.inf)))]
    for low, high in (grid.x_range, grid.y_range):
        values += list(np.arange(low, high + 1e-9, grid.cell_size))
    return [float(np.float32(v)) for v in values]  # as the float32 points will hold them


coordinate = st.one_of(st.floats(-2.5, 2.5, width=32), st.sampled_from(_border_values(GRID)))


@st.composite
def clouds(draw) -> np.ndarray:
    n = draw(st.integers(0, 60))
    F = draw(st.integers(3, 7))
    xyz = draw(arrays(np.float32, (n, 3), elements=coordinate))
    if draw(st.booleans()) and n:  # crowd a few cells so the cap bites
        xyz[: n // 2] = xyz[0] + draw(arrays(np.float32, (n // 2, 3), elements=st.floats(0, 0.0625, width=32)))
    rest = draw(arrays(np.float32, (n, F - 3), elements=st.floats(-100, 100, width=32) | st.just(np.float32(np.nan))))
    return np.concatenate([xyz, rest], axis=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=clouds(), cap=st.integers(1, 5))
def test_kernel_and_baseline_equal_reference(points: np.ndarray, cap: int) -> None:
    expected = pillarize_reference(points, GRID, cap)
    check_invariants(expected, points, GRID, cap)
    assert_same(pillarize(points, GRID, cap), expected)
    assert_same(pillarize_baseline(points, GRID, cap), expected)


def test_realistic_cloud_equals_reference() -> None:
    rng = np.random.default_rng(7)
    N = 20_000
    radius = rng.exponential(15.0, N) + 1.0
    angle = rng.uniform(0, 2 * np.pi, N)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-6, 4, N),
                       rng.uniform(0, 1, N), rng.uniform(0, 0.1, N)], axis=1).astype(np.float32)
    points[::997, 2] = np.nan
    grid = GridConfig()
    expected = pillarize_reference(points, grid, 20)
    assert expected.dropped_over_cap > 0 and expected.dropped_out_of_range > 0
    assert expected.dropped_invalid == len(points[::997])
    check_invariants(expected, points, grid, 20)
    assert_same(pillarize(points, grid, 20), expected)


@pytest.mark.parametrize('implementation', [pillarize, pillarize_reference, pillarize_baseline])
def test_empty_input(implementation) -> None:
    result = implementation(np.zeros((0, 5), np.float32), GRID, 4)
    assert result.coords.shape == (0, 2) and result.features.shape == (0, 10)
    assert (result.dropped_out_of_range, result.dropped_over_cap, result.dropped_invalid) == (0, 0, 0)


@pytest.mark.parametrize('implementation', [pillarize, pillarize_reference, pillarize_baseline])
def test_all_points_out_of_range(implementation) -> None:
    points = np.array([[5.0, 0, 0], [0, -3.0, 0], [0, 0, 1.5], [2.0, 0, 0], [0, 1.6, 0], [0, 0, 1.0]], np.float32)
    result = implementation(points, GRID, 4)
    assert result.num_pillars == 0 and result.dropped_out_of_range == 6 and result.dropped_invalid == 0


def test_range_edges_are_half_open() -> None:
    points = np.array([
        [-2.0, -1.2, -1.0],  # every min edge: in, cell (0, 0)
        [2.0, 0.0, 0.0],  # on x_max: out
        [np.nextafter(np.float32(2.0), np.float32(0)), 0.0, 0.0],  # just below x_max: last column
        [0.0, 1.6, 0.0],  # on y_max: out
        [0.0, 0.0, 1.0],  # on z_max: out
        [0.0, 0.0, np.nextafter(np.float32(-1.0), np.float32(-2))],  # just below z_min: out
    ], np.float32)
    result = pillarize(points, GRID, 4)
    assert result.dropped_out_of_range == 4
    assert result.coords.tolist() == [[0, 0], [3, 9]]
    assert result.point_index.tolist() == [0, 2]
    assert_same(result, pillarize_reference(points, GRID, 4))


def test_cell_borders() -> None:
    xs = np.float32(-2.0 + 0.4 * np.arange(10))  # every column's lower border, as float32
    points = np.stack([xs, np.full(10, 0.1, np.float32), np.zeros(10, np.float32)], axis=1)
    result = pillarize(points, GRID, 4)
    assert_same(result, pillarize_reference(points, GRID, 4))
    check_invariants(result, points, GRID, 4)
    assert result.dropped_out_of_range == 0 and len(result.point_index) == 10


def test_nan_and_inf_dropped_and_counted() -> None:
    points = np.array([[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf], [0.1, 0.1, 0.1], [9, 9, np.nan]], np.float32)
    result = pillarize(points, GRID, 4)
    assert result.dropped_invalid == 4 and result.dropped_out_of_range == 0
    assert result.point_index.tolist() == [3]


def test_over_cap_keeps_first_points_in_input_order() -> None:
    rng = np.random.default_rng(3)
    in_cell = np.float32([0.1, 0.1, 0.0]) + rng.uniform(0, 0.2, (10, 3)).astype(np.float32)
    other = np.float32([[-1.9, -1.1, 0.0]])
    points = np.concatenate([in_cell[:4], other, in_cell[4:]])  # 10 in one cell, 1 in another
    result = pillarize(points, GRID, 3)
    assert result.dropped_over_cap == 7
    assert result.num_points.tolist() == [1, 3]
    assert result.point_index.tolist() == [4, 0, 1, 2]
    kept = points[[0, 1, 2]].astype(np.float64)
    np.testing.assert_allclose(result.features[1:, 3:6], kept - kept.mean(axis=0), atol=1e-6)


def test_radar_points_keep_nan_channels() -> None:
    # x y z vx vy rcs time; an unmeasured rcs is NaN and must not cost the point
    points = np.array([[10.0, 2.0, 0.5, 1.0, -0.5, np.nan, 0.01],
                       [10.1, 2.1, 0.4, 1.1, -0.4, 5.0, 0.02],
                       [60.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]], np.float32)
    grid = GridConfig()
    result = pillarize(points, grid, 20)
    assert result.features.shape == (2, 12)
    assert result.dropped_invalid == 0 and result.dropped_out_of_range == 1
    assert np.isnan(result.features[0, 5]) and not np.isnan(result.features[:, 7:]).any()
    cell_x = -51.2 + (result.coords[0, 1] + 0.5) * 0.4
    np.testing.assert_allclose(result.features[0, 10], 10.0 - cell_x, atol=1e-5)
    assert_same(result, pillarize_reference(points, grid, 20))


def test_padded_tensor() -> None:
    rng = np.random.default_rng(5)
    points = rng.uniform(-2, 2, (200, 4)).astype(np.float32)
    result = pillarize(points, GRID, 3)
    padded = pillars_padded(result, 5)
    P = result.num_pillars
    assert padded.shape == (P, 5, 9)
    for p in range(P):
        n = result.num_points[p]
        start = result.pillar_start[p]
        np.testing.assert_array_equal(padded[p, :n], result.features[start:start + n])
        assert not padded[p, n:].any()
    with pytest.raises(GeometryError, match='holds 3 points, more than max_points=2'):
        pillars_padded(result, 2)


@pytest.mark.parametrize('points, cap, message', [
    (np.zeros((4, 2), np.float32), 3, r'must be \(N, F\) with F >= 3'),
    (np.zeros((4, 4), np.float64), 3, 'must be float32, got float64'),
    (np.zeros(4, np.float32), 3, r'got shape \(4,\)'),
    (np.zeros((4, 4), np.float32), 0, 'max_points_per_pillar must be a positive integer, got 0'),
    (np.zeros((4, 4), np.float32), 2.5, 'got 2.5'),
])
def test_invalid_input(points, cap, message) -> None:
    for implementation in (pillarize, pillarize_reference, pillarize_baseline):
        with pytest.raises(GeometryError, match=message):
            implementation(points, GRID, cap)


def test_real_lidar_sweeps_equal_reference(real_data) -> None:
    kitti = np.fromfile(real_data / 'kitti' / '000000' / 'velodyne' / '000000.bin', np.float32).reshape(-1, 4)
    nuscenes = np.fromfile(next((real_data / 'nuscenes_keyframe').glob('*LIDAR_TOP*.pcd.bin')),
                           np.float32).reshape(-1, 5)
    grid = GridConfig()
    for points in (kitti, nuscenes):
        expected = pillarize_reference(points, grid, 20)
        check_invariants(expected, points, grid, 20)
        assert expected.num_pillars > 3000 and expected.dropped_over_cap > 0
        assert_same(pillarize(points, grid, 20), expected)
        assert_same(pillarize_baseline(points, grid, 20), expected)


def test_importing_the_kernels_loads_neither_numba_cuda_nor_torch() -> None:
    import subprocess
    import sys

    code = ('import sys\n'
            'import mmfusion_ros.geometry.pillars, mmfusion_ros.geometry.scatter, mmfusion_ros.geometry.bev_pool\n'
            'import mmfusion_ros.geometry.cuda.pillars, mmfusion_ros.geometry.cuda.scatter\n'
            'import mmfusion_ros.geometry.cuda.bev_pool\n'
            'print(sorted(m for m in sys.modules if m.startswith("numba.cuda") or m == "torch"))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == '[]'
