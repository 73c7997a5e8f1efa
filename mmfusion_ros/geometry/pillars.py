"""Pillarization: group a point cloud into bird's-eye-view cells ("pillars") without padding.

``pillarize`` turns an (N, F) cloud into the kept points grouped by pillar, each decorated as
PointPillars does, plus the pillars' grid coordinates. The output is padding-free: the pillar feature
net runs on the Nk real points and ``scatter.scatter_max`` pools them per pillar, so a (P, K, F+5)
tensor that is mostly zeros never exists. ``pillars_padded`` builds that classic tensor for code
that wants it.

Conventions (shared by the reference, the numba kernel and the CUDA kernel):

- A point is **invalid** when x, y or z is not finite; it is dropped and counted in
  ``dropped_invalid``. Other channels are copied as they are (a radar's unmeasured rcs is NaN, and
  that is for the encoder to handle, not a reason to lose the point).
- A point is **in range** when ``x_min <= x < x_max``, ``y_min <= y < y_max`` and
  ``z_min <= z < z_max``: half-open, so a point exactly on a max edge is out. The bounds are compared
  at float32 precision (the precision of the points), so ``np.float32(-51.2)`` is in a grid whose
  ``x_range`` starts at -51.2 and ``np.float32(51.2)`` is out of one that ends there. Points out of
  range are counted in ``dropped_out_of_range``.
- Cell of an in-range point: ``col = floor((x - x_min) / cell_size)``, ``row = floor((y - y_min) /
  cell_size)``, in float64 with ``x_min`` as compared above, clamped to the last column / row (a
  float32 point just below ``x_max`` can round onto it). Pillars span the whole z range.
- Pillars are ordered by their linear cell index ``row * nx + col``; ``coords`` is (row, col).
- Within a pillar at most ``max_points_per_pillar`` points are kept: the first ones in input order,
  so the result is deterministic. The rest are counted in ``dropped_over_cap``. Kept points are
  grouped by pillar, in pillar order, and in input order within a pillar (``point_pillar`` is
  non-decreasing).
- Features of a kept point: its F input channels, then x, y, z minus the mean x, y, z of the
  pillar's **kept** points, then x, y minus the centre of its cell
  (``x_min + (col + 0.5) * cell_size``). The means are float64 sums in kept-point order divided by
  the count; offsets are computed in float64 and rounded once to float32, so every implementation
  gives bit-identical features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from ..config import GridConfig
from ..errors import GeometryError

__all__ = [
    'DECORATIONS',
    'Pillars',
    'pillarize',
    'pillarize_baseline',
    'pillarize_reference',
    'pillars_padded',
]

DECORATIONS = 5  # channels appended to each point: 3 offsets from the pillar mean, 2 from the cell centre

# Cell codes for points that are not in a pillar (cells themselves are >= 0).
OUT_OF_RANGE = -1
INVALID = -2


class Pillars(NamedTuple):
    """Kept points grouped by pillar, their decorated features and what was dropped."""

    coords: np.ndarray  # (P, 2) int32 (row, col), sorted by row * nx + col
    num_points: np.ndarray  # (P,) int32 kept points per pillar, 1..max_points_per_pillar
    point_pillar: np.ndarray  # (Nk,) int32 pillar of each kept point, non-decreasing
    point_index: np.ndarray  # (Nk,) int32 row of each kept point in the input
    features: np.ndarray  # (Nk, F + 5) float32 input channels + decorations
    dropped_out_of_range: int
    dropped_over_cap: int
    dropped_invalid: int

    @property
    def num_pillars(self) -> int:
        return int(self.coords.shape[0])

    @property
    def pillar_start(self) -> np.ndarray:
        """(P + 1,) int64 offsets: pillar p's points are rows ``start[p]:start[p + 1]``."""
        start = np.zeros(len(self.num_points) + 1, np.int64)
        np.cumsum(self.num_points, out=start[1:])
        return start


# ---------------------------------------------------------------------------------------------------
# Shared input checks and grid constants


def checked_points(points: np.ndarray) -> np.ndarray:
    if not isinstance(points, np.ndarray):
        raise GeometryError(f'pillarize: points must be a numpy array, got {type(points).__name__}')
    if points.ndim != 2 or points.shape[1] < 3:
        raise GeometryError(f'pillarize: points must be (N, F) with F >= 3 (x, y, z first), '
                            f'got shape {points.shape}')
    if points.dtype != np.float32:
        raise GeometryError(f'pillarize: points must be float32, got {points.dtype}')
    if points.shape[0] >= 2**31:
        raise GeometryError(f'pillarize: {points.shape[0]} points do not fit int32 indices')
    return np.ascontiguousarray(points)


def checked_cap(max_points_per_pillar: int) -> int:
    cap = int(max_points_per_pillar)
    if cap != max_points_per_pillar or cap < 1:
        raise GeometryError(f'pillarize: max_points_per_pillar must be a positive integer, '
                            f'got {max_points_per_pillar!r}')
    return cap


class GridConstants(NamedTuple):
    ny: int
    nx: int
    lower: np.ndarray  # (3,) float64 x_min, y_min, z_min rounded to float32
    upper: np.ndarray  # (3,) float64 x_max, y_max, z_max rounded to float32
    cell_size: float
    centre_x: np.ndarray  # (nx,) float64 x of each column's centre
    centre_y: np.ndarray  # (ny,) float64 y of each row's centre


def grid_constants(grid: GridConfig) -> GridConstants:
    """The numbers every pillarize implementation uses, computed once, identically."""
    ny, nx = grid.shape
    if ny * nx >= 2**31:
        raise GeometryError(f'pillarize: grid of {ny}x{nx} cells does not fit int32 cell indices')
    ranges = (grid.x_range, grid.y_range, grid.z_range)
    lower = np.array([np.float32(r[0]) for r in ranges], np.float64)
    upper = np.array([np.float32(r[1]) for r in ranges], np.float64)
    cell = float(grid.cell_size)
    centre_x = grid.x_range[0] + (np.arange(nx, dtype=np.float64) + 0.5) * cell
    centre_y = grid.y_range[0] + (np.arange(ny, dtype=np.float64) + 0.5) * cell
    return GridConstants(ny, nx, lower, upper, cell, centre_x, centre_y)


def empty_pillars(num_features: int, out_of_range: int, invalid: int, over_cap: int = 0) -> Pillars:
    return Pillars(np.zeros((0, 2), np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32),
                   np.zeros(0, np.int32), np.zeros((0, num_features + DECORATIONS), np.float32),
                   int(out_of_range), int(over_cap), int(invalid))


def linear_cells(xyz: np.ndarray, g: GridConstants) -> np.ndarray:
    """(N,) int64 linear cell of each point, or OUT_OF_RANGE / INVALID; xyz (N, 3) float64 (numpy)."""
    finite = np.isfinite(xyz).all(axis=1)
    with np.errstate(invalid='ignore'):
        inside = finite & np.all((xyz >= g.lower) & (xyz < g.upper), axis=1)
        col = np.minimum(np.floor((xyz[:, 0] - g.lower[0]) / g.cell_size), g.nx - 1)
        row = np.minimum(np.floor((xyz[:, 1] - g.lower[1]) / g.cell_size), g.ny - 1)
    cell = np.where(finite, OUT_OF_RANGE, INVALID).astype(np.int64)
    cell[inside] = row[inside].astype(np.int64) * g.nx + col[inside].astype(np.int64)
    return cell


# ---------------------------------------------------------------------------------------------------
# Reference: plain numpy, written to be obviously right


def pillarize_reference(points: np.ndarray, grid: GridConfig, max_points_per_pillar: int) -> Pillars:
    """``pillarize`` with np.lexsort and np.unique; the definition the kernels are tested against."""
    points = checked_points(points)
    cap = checked_cap(max_points_per_pillar)
    N, F = points.shape
    g = grid_constants(grid)
    xyz = points[:, :3].astype(np.float64)  # (N, 3)
    cell = linear_cells(xyz, g)  # (N,)
    invalid = int(np.count_nonzero(cell == INVALID))
    out_of_range = int(np.count_nonzero(cell == OUT_OF_RANGE))

    index = np.flatnonzero(cell >= 0)  # (M,) in-range points, input order
    if len(index) == 0:
        return empty_pillars(F, out_of_range, invalid)
    row, col = cell[index] // g.nx, cell[index] % g.nx
    order = np.lexsort((index, col, row))  # by row, then col, then input order
    index, row, col = index[order], row[order], col[order]
    linear = row * g.nx + col
    cells, first, counts = np.unique(linear, return_index=True, return_counts=True)
    rank = np.arange(len(linear)) - np.repeat(first, counts)  # position within its pillar
    keep = rank < cap
    pillar = np.repeat(np.arange(len(cells)), counts)[keep]  # (Nk,)
    index, row, col = index[keep], row[keep], col[keep]
    kept = np.minimum(counts, cap)
    assert np.all(np.diff(pillar) >= 0), 'kept points must be grouped by pillar'

    kept_xyz = xyz[index]  # (Nk, 3) float64
    mean = np.stack([np.bincount(pillar, weights=kept_xyz[:, k], minlength=len(cells)) for k in range(3)],
                    axis=1) / kept[:, None]  # (P, 3), sums in kept-point order
    features = np.empty((len(index), F + DECORATIONS), np.float32)
    features[:, :F] = points[index]
    features[:, F:F + 3] = (kept_xyz - mean[pillar]).astype(np.float32)
    features[:, F + 3] = (kept_xyz[:, 0] - g.centre_x[col]).astype(np.float32)
    features[:, F + 4] = (kept_xyz[:, 1] - g.centre_y[row]).astype(np.float32)
    coords = np.stack([cells // g.nx, cells % g.nx], axis=1).astype(np.int32)
    return Pillars(coords, kept.astype(np.int32), pillar.astype(np.int32), index.astype(np.int32), features,
                   out_of_range, int(np.sum(counts - kept)), invalid)


# ---------------------------------------------------------------------------------------------------
# Numba kernel: counting sort by cell (count, prefix sum, stable fill), then parallel decoration


@njit(parallel=True, cache=True)
def cell_of_points(points, lower, upper, cell_size, ny, nx):
    """(N,) int32 cell of each point (row * nx + col, or OUT_OF_RANGE / INVALID) and the drop counts."""
    N = points.shape[0]
    cell = np.empty(N, np.int32)
    invalid = 0
    out_of_range = 0
    for i in prange(N):
        x = np.float64(points[i, 0])
        y = np.float64(points[i, 1])
        z = np.float64(points[i, 2])
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
            cell[i] = INVALID
            invalid += 1
        elif (x < lower[0] or x >= upper[0] or y < lower[1] or y >= upper[1]
              or z < lower[2] or z >= upper[2]):
            cell[i] = OUT_OF_RANGE
            out_of_range += 1
        else:
            col = min(np.int64(np.floor((x - lower[0]) / cell_size)), nx - 1)
            row = min(np.int64(np.floor((y - lower[1]) / cell_size)), ny - 1)
            cell[i] = np.int32(row * nx + col)
    return cell, invalid, out_of_range


@njit(cache=True)
def group_by_cell(cell, num_cells, cap):
    """Counting sort of the in-range points by cell, keeping the first ``cap`` of each, stably.

    cell (N,) int32 from ``cell_of_points`` (negative: not in a cell). Returns pillar_cell (P,) int32
    (the non-empty cells, increasing), pillar_start (P + 1,) int64, point_index (Nk,) int32 (kept
    points grouped by cell, input order within) and the number of points over the cap. Serial: the
    fill must visit points in input order. ``bev_pool_geometry`` uses it with no cap.
    """
    N = cell.shape[0]
    counts = np.zeros(num_cells, np.int32)  # (num_cells,) points per cell
    for i in range(N):
        if cell[i] >= 0:
            counts[cell[i]] += 1
    num_pillars = 0
    for c in range(num_cells):
        if counts[c] > 0:
            num_pillars += 1
    pillar_cell = np.empty(num_pillars, np.int32)
    pillar_start = np.empty(num_pillars + 1, np.int64)
    pillar_start[0] = 0
    p = 0
    over_cap = 0
    for c in range(num_cells):  # prefix sum over kept counts; counts[c] becomes the pillar id
        n = counts[c]
        if n > 0:
            kept = min(n, cap)
            over_cap += n - kept
            pillar_cell[p] = c
            pillar_start[p + 1] = pillar_start[p] + kept
            counts[c] = p
            p += 1
    cursor = pillar_start[:-1].copy()  # (P,) next free slot of each pillar
    point_index = np.empty(pillar_start[num_pillars], np.int32)
    for i in range(N):  # stable fill: input order within each pillar
        c = cell[i]
        if c >= 0:
            p = counts[c]
            slot = cursor[p]
            if slot < pillar_start[p + 1]:
                point_index[slot] = i
                cursor[p] = slot + 1
    return pillar_cell, pillar_start, point_index, over_cap


@njit(parallel=True, cache=True)
def _decorate(points, pillar_cell, pillar_start, point_index, nx, centre_x, centre_y):
    """(Nk, F + 5) float32 features and (Nk,) int32 pillar of each kept point; parallel over pillars."""
    F = points.shape[1]
    P = pillar_cell.shape[0]
    Nk = point_index.shape[0]
    features = np.empty((Nk, F + 5), np.float32)
    point_pillar = np.empty(Nk, np.int32)
    for p in prange(P):
        start, stop = pillar_start[p], pillar_start[p + 1]
        sx = 0.0
        sy = 0.0
        sz = 0.0
        for j in range(start, stop):  # float64 sums in kept-point order, as the reference
            i = point_index[j]
            sx += np.float64(points[i, 0])
            sy += np.float64(points[i, 1])
            sz += np.float64(points[i, 2])
        n = stop - start
        mx = sx / n
        my = sy / n
        mz = sz / n
        row = pillar_cell[p] // nx
        col = pillar_cell[p] - row * nx
        cx = centre_x[col]
        cy = centre_y[row]
        for j in range(start, stop):
            i = point_index[j]
            for f in range(F):
                features[j, f] = points[i, f]
            x = np.float64(points[i, 0])
            y = np.float64(points[i, 1])
            features[j, F] = np.float32(x - mx)
            features[j, F + 1] = np.float32(y - my)
            features[j, F + 2] = np.float32(np.float64(points[i, 2]) - mz)
            features[j, F + 3] = np.float32(x - cx)
            features[j, F + 4] = np.float32(y - cy)
            point_pillar[j] = p
    return features, point_pillar


def pillarize(points: np.ndarray, grid: GridConfig, max_points_per_pillar: int) -> Pillars:
    """Group (N, F) float32 points (x, y, z first) into pillars of ``grid``; see the module doc.

    Counting sort by cell: a parallel pass computes each point's cell, a serial pass counts points
    per cell, a prefix sum over cells gives each pillar its slots, a serial stable pass fills them in
    input order (so the first ``max_points_per_pillar`` are kept), and a parallel pass over pillars
    computes the means and writes the decorated features. Linear in N plus the number of cells.
    """
    points = checked_points(points)
    cap = checked_cap(max_points_per_pillar)
    N, F = points.shape
    g = grid_constants(grid)
    cell, invalid, out_of_range = cell_of_points(points, g.lower, g.upper, g.cell_size, g.ny, g.nx)
    pillar_cell, pillar_start, point_index, over_cap = group_by_cell(cell, g.ny * g.nx, cap)
    if len(pillar_cell) == 0:
        return empty_pillars(F, out_of_range, invalid)
    assert pillar_start[-1] == len(point_index), 'pillar slots cover the kept points exactly'
    features, point_pillar = _decorate(points, pillar_cell, pillar_start, point_index, g.nx,
                                       g.centre_x, g.centre_y)
    coords = np.empty((len(pillar_cell), 2), np.int32)  # (P, 2) row, col
    np.floor_divide(pillar_cell, g.nx, out=coords[:, 0])
    np.remainder(pillar_cell, g.nx, out=coords[:, 1])
    num_points = np.diff(pillar_start).astype(np.int32)
    assert invalid + out_of_range + over_cap + len(point_index) == N, 'every point is kept or counted'
    return Pillars(coords, num_points, point_pillar, point_index, features, int(out_of_range), int(over_cap),
                   int(invalid))


# ---------------------------------------------------------------------------------------------------
# Baseline: the fastest straightforward vectorised version (torch: its stable sort is a radix sort,
# 15x faster here than numpy's stable argsort of int32 cells)


def pillarize_baseline(points: np.ndarray, grid: GridConfig, max_points_per_pillar: int) -> Pillars:
    """``pillarize`` vectorised in torch: one stable sort of the in-range points' cells, bincount means."""
    import torch

    points = checked_points(points)
    cap = checked_cap(max_points_per_pillar)
    N, F = points.shape
    g = grid_constants(grid)
    source = torch.from_numpy(points)  # (N, F)
    xyz = source[:, :3].double()  # (N, 3)
    lower, upper = torch.from_numpy(g.lower), torch.from_numpy(g.upper)
    finite = torch.isfinite(xyz).all(dim=1)
    index = torch.nonzero(finite & ((xyz >= lower) & (xyz < upper)).all(dim=1)).squeeze(1)  # (M,)
    invalid = N - int(finite.sum())
    out_of_range = N - invalid - len(index)
    if len(index) == 0:
        return empty_pillars(F, out_of_range, invalid)
    inside = xyz[index]  # (M, 3)
    col = torch.floor((inside[:, 0] - g.lower[0]) / g.cell_size).clamp_(max=g.nx - 1).long()
    row = torch.floor((inside[:, 1] - g.lower[1]) / g.cell_size).clamp_(max=g.ny - 1).long()
    linear, order = torch.sort(row * g.nx + col, stable=True)  # (M,) by cell, input order within
    index = index[order]
    head = torch.ones(len(linear), dtype=torch.bool)
    torch.ne(linear[1:], linear[:-1], out=head[1:])
    first = torch.nonzero(head).squeeze(1)  # (P,)
    pillar_all = torch.cumsum(head, 0) - 1  # (M,)
    keep = torch.arange(len(linear)) - first[pillar_all] < cap
    index, pillar = index[keep], pillar_all[keep]  # (Nk,)
    counts = torch.diff(first, append=torch.tensor([len(linear)]))
    kept = counts.clamp(max=cap)
    cells = linear[first]
    kept_xyz = xyz[index]  # (Nk, 3) float64
    mean = torch.stack([torch.bincount(pillar, weights=kept_xyz[:, k], minlength=len(cells)) for k in range(3)],
                       dim=1) / kept[:, None]  # (P, 3), sums in kept-point order
    prow, pcol = cells // g.nx, cells % g.nx
    features = torch.empty((len(index), F + DECORATIONS), dtype=torch.float32)
    features[:, :F] = source[index]
    features[:, F:F + 3] = kept_xyz - mean[pillar]
    features[:, F + 3] = kept_xyz[:, 0] - torch.from_numpy(g.centre_x)[pcol[pillar]]
    features[:, F + 4] = kept_xyz[:, 1] - torch.from_numpy(g.centre_y)[prow[pillar]]
    coords = torch.stack([prow, pcol], dim=1).int()
    return Pillars(coords.numpy(), kept.int().numpy(), pillar.int().numpy(), index.int().numpy(),
                   features.numpy(), out_of_range, int((counts - kept).sum()), invalid)


# ---------------------------------------------------------------------------------------------------
# The classic padded tensor


@njit(parallel=True, cache=True)
def _pad(features, pillar_start, max_points):
    P = pillar_start.shape[0] - 1
    C = features.shape[1]
    padded = np.zeros((P, max_points, C), np.float32)
    for p in prange(P):
        start = pillar_start[p]
        for k in range(pillar_start[p + 1] - start):
            for c in range(C):
                padded[p, k, c] = features[start + k, c]
    return padded


def pillars_padded(pillars: Pillars, max_points: int) -> np.ndarray:
    """(P, max_points, F + 5) float32: each pillar's kept points first, zeros after.

    Nothing is cut: a ``max_points`` below the fullest pillar is a ``GeometryError``.
    """
    P = pillars.num_pillars
    fullest = int(pillars.num_points.max()) if P else 0
    if int(max_points) != max_points or max_points < 1:
        raise GeometryError(f'pillars_padded: max_points must be a positive integer, got {max_points!r}')
    if fullest > max_points:
        raise GeometryError(f'pillars_padded: a pillar holds {fullest} points, more than '
                            f'max_points={max_points}; pillarize with that cap instead of cutting here')
    return _pad(pillars.features, pillars.pillar_start, int(max_points))
