"""``pillarize`` on a CUDA device, with the same output, bit for bit, as ``geometry.pillars``.

Steps, and where they run:

1. device: the cell of every point (one thread per point, the same float64 arithmetic as the CPU);
2. host: a stable sort of the in-range points by cell (``np.argsort(kind='stable')``; a device
   radix sort would need more machinery than this step is worth at 200k points, and stability is
   what makes the kept points the first ones in input order);
3. device: each sorted point's rank within its cell by binary search, hence kept (rank < cap) and
   pillar-head flags; host: compaction of the kept positions (``np.flatnonzero``);
4. device: per-pillar float64 means in kept-point order (one thread per pillar), then the decorated
   features (one thread per kept point).

numba.cuda is imported only when a kernel is first needed, so importing this module needs no GPU.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...config import GridConfig
from ..pillars import (INVALID, OUT_OF_RANGE, Pillars, checked_cap, checked_points, empty_pillars,
                       grid_constants)
from .launch import THREADS, blocks

__all__ = ['pillarize_cuda']


# The kernels are plain functions until ``_kernels`` compiles them; they read ``cuda`` as a module
# global (set there) so that numba's CUDA simulator can substitute its own module.
cuda: Any = None


def _cell_of_points_kernel(points, lower, upper, cell_size, ny, nx, cell):
    i = cuda.grid(1)
    if i >= points.shape[0]:
        return
    x = float(points[i, 0])
    y = float(points[i, 1])
    z = float(points[i, 2])
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        cell[i] = INVALID
    elif (x < lower[0] or x >= upper[0] or y < lower[1] or y >= upper[1]
          or z < lower[2] or z >= upper[2]):
        cell[i] = OUT_OF_RANGE
    else:
        col = min(math.floor((x - lower[0]) / cell_size), nx - 1)
        row = min(math.floor((y - lower[1]) / cell_size), ny - 1)
        cell[i] = row * nx + col


def _rank_in_cell_kernel(sorted_cell, cap, keep, head):
    j = cuda.grid(1)
    if j >= sorted_cell.shape[0]:
        return
    value = sorted_cell[j]
    low = 0
    high = j  # lower bound of value in sorted_cell[0:j + 1]
    while low < high:
        mid = (low + high) // 2
        if sorted_cell[mid] < value:
            low = mid + 1
        else:
            high = mid
    keep[j] = 1 if j - low < cap else 0
    head[j] = 1 if j == low else 0


def _pillar_means_kernel(points, point_index, pillar_start, mean):
    p = cuda.grid(1)
    if p >= mean.shape[0]:
        return
    sx = 0.0
    sy = 0.0
    sz = 0.0
    for j in range(pillar_start[p], pillar_start[p + 1]):  # kept-point order, as the CPU
        i = point_index[j]
        sx += float(points[i, 0])
        sy += float(points[i, 1])
        sz += float(points[i, 2])
    n = pillar_start[p + 1] - pillar_start[p]
    mean[p, 0] = sx / n
    mean[p, 1] = sy / n
    mean[p, 2] = sz / n


def _decorate_kernel(points, point_index, point_pillar, pillar_cell, mean, nx, centre_x, centre_y, features):
    j = cuda.grid(1)
    if j >= point_index.shape[0]:
        return
    F = points.shape[1]
    i = point_index[j]
    p = point_pillar[j]
    for f in range(F):
        features[j, f] = points[i, f]
    x = float(points[i, 0])
    y = float(points[i, 1])
    row = pillar_cell[p] // nx
    col = pillar_cell[p] - row * nx
    features[j, F] = np.float32(x - mean[p, 0])
    features[j, F + 1] = np.float32(y - mean[p, 1])
    features[j, F + 2] = np.float32(float(points[i, 2]) - mean[p, 2])
    features[j, F + 3] = np.float32(x - centre_x[col])
    features[j, F + 4] = np.float32(y - centre_y[row])


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernels on first use; numba.cuda is imported here and nowhere at import time."""
    global cuda
    from numba import cuda

    return SimpleNamespace(
        cuda=cuda,
        cell_of_points=cuda.jit(_cell_of_points_kernel),
        rank_in_cell=cuda.jit(_rank_in_cell_kernel),
        pillar_means=cuda.jit(_pillar_means_kernel),
        decorate=cuda.jit(_decorate_kernel),
    )


def pillarize_cuda(points: np.ndarray, grid: GridConfig, max_points_per_pillar: int) -> Pillars:
    """``pillars.pillarize`` on the default CUDA device; numpy in, numpy out, identical results."""
    points = checked_points(points)
    cap = checked_cap(max_points_per_pillar)
    N, F = points.shape
    g = grid_constants(grid)
    k = _kernels()
    cuda = k.cuda
    if N == 0:
        return empty_pillars(F, 0, 0)

    d_points = cuda.to_device(points)
    d_cell = cuda.device_array(N, np.int32)
    k.cell_of_points[blocks(N), THREADS](d_points, cuda.to_device(g.lower), cuda.to_device(g.upper),
                                          g.cell_size, g.ny, g.nx, d_cell)
    cell = d_cell.copy_to_host()  # (N,)
    invalid = int(np.count_nonzero(cell == INVALID))
    out_of_range = int(np.count_nonzero(cell == OUT_OF_RANGE))
    inside = np.flatnonzero(cell >= 0)
    M = len(inside)
    if M == 0:
        return empty_pillars(F, out_of_range, invalid)

    sorted_index = inside[np.argsort(cell[inside], kind='stable')].astype(np.int32)  # (M,) host sort
    sorted_cell = np.ascontiguousarray(cell[sorted_index])  # (M,) non-decreasing
    d_keep = cuda.device_array(M, np.uint8)
    d_head = cuda.device_array(M, np.uint8)
    k.rank_in_cell[blocks(M), THREADS](cuda.to_device(sorted_cell), cap, d_keep, d_head)
    kept_position = np.flatnonzero(d_keep.copy_to_host())  # (Nk,) host compaction
    head = d_head.copy_to_host()[kept_position].astype(bool)  # (Nk,) first kept point of each pillar
    point_index = np.ascontiguousarray(sorted_index[kept_position])
    first = np.flatnonzero(head)  # (P,)
    Nk, P = len(kept_position), len(first)
    pillar_start = np.append(first, Nk).astype(np.int64)  # (P + 1,)
    pillar_cell = np.ascontiguousarray(sorted_cell[kept_position[first]])  # (P,)
    point_pillar = (np.cumsum(head) - 1).astype(np.int32)  # (Nk,)

    d_point_index = cuda.to_device(point_index)
    d_pillar_cell = cuda.to_device(pillar_cell)
    d_mean = cuda.device_array((P, 3), np.float64)
    k.pillar_means[blocks(P), THREADS](d_points, d_point_index, cuda.to_device(pillar_start), d_mean)
    d_features = cuda.device_array((Nk, F + 5), np.float32)
    k.decorate[blocks(Nk), THREADS](d_points, d_point_index, cuda.to_device(point_pillar), d_pillar_cell, d_mean,
                                     g.nx, cuda.to_device(g.centre_x), cuda.to_device(g.centre_y), d_features)
    coords = np.stack([pillar_cell // g.nx, pillar_cell % g.nx], axis=1).astype(np.int32)
    assert invalid + out_of_range + (M - Nk) + Nk == N, 'every point is kept or counted'
    return Pillars(coords, np.diff(pillar_start).astype(np.int32), point_pillar, point_index,
                   d_features.copy_to_host(), out_of_range, M - Nk, invalid)
