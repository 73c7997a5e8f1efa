"""``scatter_max`` and ``scatter_to_bev`` on a CUDA device; same results as ``geometry.scatter``.

scatter_max: one thread per (pillar, channel), consecutive threads on consecutive channels of one
pillar, so every read of a point's row is coalesced. Each pillar's points must be one contiguous
run; when ``point_pillar`` is not non-decreasing the host sorts it first (stable argsort), so no
atomics are needed and the result does not depend on scheduling.

scatter_to_bev: the canvas is zeroed on the device, then one thread per (pillar, channel) writes
its value. Coordinates are validated on the host (outside the grid or duplicated is an error).

numba.cuda is imported only when a kernel is first needed.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..scatter import checked_bev_inputs, checked_scatter_max_inputs, run_starts
from .launch import THREADS, blocks, device_zeros

__all__ = ['scatter_max_cuda', 'scatter_to_bev_cuda']


# The kernels are plain functions until ``_kernels`` compiles them; they read ``cuda`` as a module
# global (set there) so that numba's CUDA simulator can substitute its own module.
cuda: Any = None


def _segment_max_kernel(point_features, order, starts, out):
    t = cuda.grid(1)
    P, C = out.shape
    if t >= P * C:
        return
    p = t // C
    c = t - p * C
    start = starts[p]
    stop = starts[p + 1]
    if stop == start:
        out[p, c] = 0.0
        return
    m = point_features[order[start], c]
    for j in range(start + 1, stop):
        v = point_features[order[j], c]
        if v > m or v != v:
            m = v
    out[p, c] = m


def _scatter_to_bev_kernel(pillar_features, linear, canvas):
    t = cuda.grid(1)
    P, C = pillar_features.shape
    if t >= P * C:
        return
    p = t // C
    c = t - p * C
    canvas[c, linear[p]] = pillar_features[p, c]


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernels on first use; numba.cuda is imported here and nowhere at import time."""
    global cuda
    from numba import cuda

    return SimpleNamespace(
        cuda=cuda,
        segment_max=cuda.jit(_segment_max_kernel),
        scatter_to_bev=cuda.jit(_scatter_to_bev_kernel),
    )


def scatter_max_cuda(point_features: np.ndarray, point_pillar: np.ndarray, num_pillars: int) -> np.ndarray:
    """(P, C) float32 max over each pillar's points, on the device; empty pillars 0."""
    point_features, point_pillar, P = checked_scatter_max_inputs(point_features, point_pillar, num_pillars)
    Nk, C = point_features.shape
    if P == 0 or C == 0:
        return np.zeros((P, C), np.float32)
    starts = run_starts(point_pillar, P)
    order = np.arange(Nk, dtype=np.int32)
    if len(starts) != P + 1:  # not grouped: sort on the host, stably
        order = np.argsort(point_pillar, kind='stable').astype(np.int32)
        starts = np.searchsorted(point_pillar[order], np.arange(P + 1)).astype(np.int64)
    k = _kernels()
    cuda = k.cuda
    d_out = cuda.device_array((P, C), np.float32)
    if Nk == 0:
        d_features = cuda.to_device(np.zeros((1, C), np.float32))  # never read: every run is empty
        d_order = cuda.to_device(np.zeros(1, np.int32))
    else:
        d_features = cuda.to_device(point_features)
        d_order = cuda.to_device(order)
    k.segment_max[blocks(P * C), THREADS](d_features, d_order, cuda.to_device(starts), d_out)
    return d_out.copy_to_host()


def scatter_to_bev_cuda(pillar_features: np.ndarray, coords: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, ny, nx) float32 canvas on the device, copied back; zeros except each pillar's cell."""
    pillar_features, linear, ny, nx = checked_bev_inputs(pillar_features, coords, shape)
    P, C = pillar_features.shape
    if C == 0:
        return np.zeros((C, ny, nx), np.float32)
    k = _kernels()
    cuda = k.cuda
    d_canvas = device_zeros((C, ny * nx))
    if P:
        k.scatter_to_bev[blocks(P * C), THREADS](cuda.to_device(pillar_features), cuda.to_device(linear), d_canvas)
    return d_canvas.copy_to_host().reshape(C, ny, nx)
