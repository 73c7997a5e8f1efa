"""``bev_pool`` on a CUDA device: BEVFusion's interval reduction, one thread per (interval, channel).

The geometry (``geometry.bev_pool.bev_pool_geometry``) is built on the host once per calibration;
``bev_pool_geometry_to_device`` copies it to the device once, and ``bev_pool_cuda`` accepts either
form (a host geometry is copied on every call). Each thread sums its interval's products for one
channel in the same order as the CPU, and consecutive threads take consecutive channels of one
interval, so the reads of a feature row are coalesced. Intervals own disjoint cells: no atomics.
The device may fuse the multiply and add (FMA), so results match the CPU to float32 rounding
(rtol 1e-5), not bit for bit.

numba.cuda is imported only when a kernel is first needed.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from ...errors import GeometryError
from ..bev_pool import BevPoolGeometry, checked_frame
from .launch import THREADS, blocks, device_zeros

__all__ = ['DeviceBevPoolGeometry', 'bev_pool_cuda', 'bev_pool_geometry_to_device']


class DeviceBevPoolGeometry(NamedTuple):
    """A ``BevPoolGeometry`` whose index arrays live on the device."""

    host: BevPoolGeometry
    depth_index: Any  # device (M,) int32
    feature_index: Any  # device (M,) int32
    interval_start: Any  # device (I,) int32
    interval_length: Any  # device (I,) int32
    interval_cell: Any  # device (I,) int32


# The kernels are plain functions until ``_kernels`` compiles them; they read ``cuda`` as a module
# global (set there) so that numba's CUDA simulator can substitute its own module.
cuda: Any = None


def _pool_intervals_kernel(depth_flat, feature_rows, depth_index, feature_index, interval_start,
                           interval_length, interval_cell, pooled):
    t = cuda.grid(1)
    C = feature_rows.shape[1]
    if t >= interval_cell.shape[0] * C:
        return
    i = t // C
    c = t - i * C
    acc = np.float32(0.0)
    start = interval_start[i]
    for k in range(start, start + interval_length[i]):
        acc += depth_flat[depth_index[k]] * feature_rows[feature_index[k], c]
    pooled[c, interval_cell[i]] = acc


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernels on first use; numba.cuda is imported here and nowhere at import time."""
    global cuda
    from numba import cuda

    return SimpleNamespace(
        cuda=cuda,
        pool_intervals=cuda.jit(_pool_intervals_kernel),
    )


def bev_pool_geometry_to_device(geometry: BevPoolGeometry) -> DeviceBevPoolGeometry:
    """Copy the geometry's index arrays to the device once (call when calibration changes)."""
    if not isinstance(geometry, BevPoolGeometry):
        raise GeometryError(f'bev_pool_geometry_to_device: expected a BevPoolGeometry, got '
                            f'{type(geometry).__name__}')
    cuda = _kernels().cuda

    def put(array: np.ndarray) -> Any:  # a zero-length device array cannot be launched on; pad to one
        return cuda.to_device(array if len(array) else np.zeros(1, array.dtype))

    return DeviceBevPoolGeometry(geometry, put(geometry.depth_index), put(geometry.feature_index),
                                 put(geometry.interval_start), put(geometry.interval_length),
                                 put(geometry.interval_cell))


def bev_pool_cuda(depth: np.ndarray, features: np.ndarray,
                  geometry: BevPoolGeometry | DeviceBevPoolGeometry) -> np.ndarray:
    """(C, ny, nx) float32 like ``bev_pool``: depth (Ncam, D, H, W), features (Ncam, H, W, C)."""
    device = geometry if isinstance(geometry, DeviceBevPoolGeometry) else bev_pool_geometry_to_device(geometry)
    host = device.host
    depth_flat, feature_rows, C = checked_frame(depth, features, host)
    ny, nx = host.grid_shape
    if C == 0:
        return np.zeros((C, ny, nx), np.float32)
    k = _kernels()
    cuda = k.cuda
    d_pooled = device_zeros((C, ny * nx))
    I = host.num_intervals
    if I:
        k.pool_intervals[blocks(I * C), THREADS](
            cuda.to_device(depth_flat), cuda.to_device(feature_rows), device.depth_index, device.feature_index,
            device.interval_start, device.interval_length, device.interval_cell, d_pooled)
    return d_pooled.copy_to_host().reshape(C, ny, nx)
