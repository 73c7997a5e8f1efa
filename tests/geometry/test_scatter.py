"""scatter_max and scatter_to_bev: numba kernels and torch baselines against the numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.config import GridConfig
from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.pillars import pillarize
from mmfusion_ros.geometry.scatter import (
    scatter_max,
    scatter_max_baseline,
    scatter_max_reference,
    scatter_to_bev,
    scatter_to_bev_baseline,
    scatter_to_bev_reference,
)


@st.composite
def pooling_inputs(draw) -> tuple[np.ndarray, np.ndarray, int]:
    P = draw(st.integers(0, 12))
    C = draw(st.integers(1, 20))
    Nk = draw(st.integers(0, 60)) if P else 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pillar = rng.integers(0, P, Nk).astype(np.int32) if P else np.zeros(0, np.int32)
    if draw(st.booleans()):
        pillar = np.sort(pillar)  # grouped, as pillarize returns them (empty pillars allowed)
    features = rng.standard_normal((Nk, C)).astype(np.float32)
    if draw(st.booleans()):
        features[rng.random((Nk, C)) < 0.3] = -np.inf
    return features, pillar, P


@settings(max_examples=120, deadline=None)
@given(inputs=pooling_inputs())
def test_scatter_max_equals_reference(inputs) -> None:
    features, pillar, P = inputs
    expected = scatter_max_reference(features, pillar, P)
    assert expected.shape == (P, features.shape[1]) and expected.dtype == np.float32
    np.testing.assert_array_equal(scatter_max(features, pillar, P), expected)
    np.testing.assert_array_equal(scatter_max_baseline(features, pillar, P), expected)


def test_scatter_max_of_real_pillars() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-30, 30, (20_000, 4)).astype(np.float32)
    pillars = pillarize(points, GridConfig(), 20)
    features = rng.standard_normal((len(pillars.point_index), 64)).astype(np.float32)
    expected = scatter_max_reference(features, pillars.point_pillar, pillars.num_pillars)
    np.testing.assert_array_equal(scatter_max(features, pillars.point_pillar, pillars.num_pillars), expected)
    order = rng.permutation(len(features))  # the serial path for ungrouped points
    np.testing.assert_array_equal(scatter_max(features[order], pillars.point_pillar[order], pillars.num_pillars),
                                  expected)


def test_scatter_max_empty_pillar_is_zero_and_nan_propagates() -> None:
    features = np.array([[1.0, -2.0], [np.nan, -1.0], [-5.0, -3.0]], np.float32)
    pillar = np.array([0, 0, 2], np.int32)
    for pool in (scatter_max, scatter_max_reference):
        out = pool(features, pillar, 3)
        assert np.isnan(out[0, 0]) and out[0, 1] == -1.0
        assert out[1].tolist() == [0.0, 0.0]
        assert out[2].tolist() == [-5.0, -3.0]
    unsorted = scatter_max(features[[2, 1, 0]], pillar[[2, 1, 0]], 3)
    assert np.isnan(unsorted[0, 0]) and unsorted[0, 1] == -1.0


@pytest.mark.parametrize('features, pillar, P, message', [
    (np.zeros((3, 2), np.float32), np.array([0, 1, 3]), 3, r'spans \[0, 3\], outside \[0, 3\)'),
    (np.zeros((3, 2), np.float32), np.array([0, -1, 1]), 3, r'spans \[-1, 1\]'),
    (np.zeros((3, 2), np.float32), np.array([0, 1]), 3, r'point_pillar must be \(3,\) integers'),
    (np.zeros((3, 2), np.float64), np.array([0, 1, 2]), 3, 'must be float32, got float64'),
    (np.zeros(3, np.float32), np.array([0, 1, 2]), 3, r'must be a \(Nk, C\) array'),
])
def test_scatter_max_invalid_input(features, pillar, P, message) -> None:
    for pool in (scatter_max, scatter_max_reference, scatter_max_baseline):
        with pytest.raises(GeometryError, match=message):
            pool(features, pillar, P)


@st.composite
def bev_inputs(draw) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    ny, nx = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    C = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P = draw(st.integers(0, ny * nx))
    cells = rng.choice(ny * nx, P, replace=False)
    if draw(st.booleans()):
        cells = np.sort(cells)
    coords = np.stack([cells // nx, cells % nx], axis=1).astype(np.int32)
    return rng.standard_normal((P, C)).astype(np.float32), coords, (ny, nx)


@settings(max_examples=120, deadline=None)
@given(inputs=bev_inputs())
def test_scatter_to_bev_equals_reference(inputs) -> None:
    features, coords, shape = inputs
    expected = scatter_to_bev_reference(features, coords, shape)
    assert expected.shape == (features.shape[1], *shape)
    np.testing.assert_array_equal(scatter_to_bev(features, coords, shape), expected)
    np.testing.assert_array_equal(scatter_to_bev_baseline(features, coords, shape), expected)
    dirty = np.full(expected.shape, 7.0, np.float32)
    assert scatter_to_bev(features, coords, shape, out=dirty) is dirty
    np.testing.assert_array_equal(dirty, expected)


def test_scatter_to_bev_layout() -> None:
    features = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    coords = np.array([[0, 2], [1, 0]], np.int32)
    canvas = scatter_to_bev(features, coords, (2, 3))
    assert canvas[:, 0, 2].tolist() == [1.0, 2.0] and canvas[:, 1, 0].tolist() == [3.0, 4.0]
    assert np.count_nonzero(canvas) == 4


@pytest.mark.parametrize('coords, message', [
    (np.array([[0, 1], [1, 1], [0, 1]]), r'cell \(row, col\) = \(0, 1\) is given twice \(pillar 2'),
    (np.array([[1, 1], [1, 1], [0, 0]]), r'= \(1, 1\) is given twice'),
    (np.array([[0, 1], [2, 0], [1, 1]]), r'pillar 1 at \(row, col\) = \(2, 0\) is outside the 2x3 grid'),
    (np.array([[0, 1], [1, -1], [1, 1]]), r'pillar 1 at \(row, col\) = \(1, -1\) is outside'),
    (np.array([[0, 1], [1, 1]]), r'coords must be \(3, 2\) integer'),
])
def test_scatter_to_bev_invalid_coords(coords, message) -> None:
    features = np.ones((3, 4), np.float32)
    for scatter in (scatter_to_bev, scatter_to_bev_reference, scatter_to_bev_baseline):
        with pytest.raises(GeometryError, match=message):
            scatter(features, coords, (2, 3))


def test_scatter_to_bev_rejects_a_wrong_out_buffer() -> None:
    with pytest.raises(GeometryError, match=r'out must be a C-contiguous float32 array of shape \(4, 2, 3\)'):
        scatter_to_bev(np.ones((1, 4), np.float32), np.array([[0, 0]]), (2, 3), out=np.zeros((4, 3, 2), np.float32))
