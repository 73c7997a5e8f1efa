"""CUDA version of :func:`mmfusion_ros.geometry.projection.project_points`.

Same conventions and the same output layout as the CPU version (see that module): hits point-major,
``0 <= u < width`` and ``0 <= v < height`` on the float32 ``uv``, non-finite points dropped and
counted. Two kernels, one thread per point: the first flags the cameras each point hits, the host
turns the per-point hit counts into output offsets, the second writes the hits at those offsets.

Numerics: the operations are the CPU kernel's, in the same order. Numba's CUDA simulator runs them
as written, so there the result equals the reference exactly. A real GPU compiles with fused
multiply-add, so ``uv`` and ``depth`` can differ from the reference in the last float64 bit before
rounding to float32 (in practice identical, or off by one float32 ulp), and a point within that
distance of an image border can land on the other side of it.

``numba.cuda`` is imported on first use only, so importing this module needs no GPU.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np

from mmfusion_ros.geometry.projection import (
    Projection,
    _camera_table,
    _checked_min_depth,
    _empty_projection,
)
from mmfusion_ros.geometry.boxes import checked_xyz
from mmfusion_ros.geometry.projection import project_one as project_one_shared

__all__ = ['project_points_cuda']

_THREADS_PER_BLOCK = 256
cuda: Any = None  # numba.cuda, bound by _kernels() on first use


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernels once per process (lazily: this is where numba.cuda is imported)."""
    global cuda  # the kernels read it as a module global: Numba's CUDA simulator swaps it there
    from numba import cuda

    project_one = cuda.jit(device=True, inline=True)(project_one_shared)

    @cuda.jit
    def flag_hits(points, table, image_wh, min_depth, hit_flags):
        # points: (N, 3) float32; table: (M, C) float64; image_wh: (M, 2) float32; hit_flags: (M, N) uint8
        i = cuda.grid(1)
        if i >= points.shape[0]:
            return
        px = numba.float64(points[i, 0])
        py = numba.float64(points[i, 1])
        pz = numba.float64(points[i, 2])
        finite = math.isfinite(px) and math.isfinite(py) and math.isfinite(pz)
        for camera in range(table.shape[0]):
            inside = False
            if finite:
                inside, _, _, _ = project_one(table, camera, px, py, pz, min_depth,
                                              image_wh[camera, 0], image_wh[camera, 1])
            hit_flags[camera, i] = 1 if inside else 0

    @cuda.jit
    def write_hits(points, table, image_wh, min_depth, hit_flags, offsets, point_index, camera_index, uv, depth):
        # offsets: (N + 1,) int64 where point i's hits start; outputs (P,), (P,), (P, 2), (P,)
        i = cuda.grid(1)
        if i >= points.shape[0]:
            return
        out = offsets[i]
        for camera in range(table.shape[0]):
            if hit_flags[camera, i] != 0:
                _, u, v, d = project_one(table, camera, numba.float64(points[i, 0]), numba.float64(points[i, 1]),
                                         numba.float64(points[i, 2]), min_depth,
                                         image_wh[camera, 0], image_wh[camera, 1])
                point_index[out] = i
                camera_index[out] = camera
                uv[out, 0] = u
                uv[out, 1] = v
                depth[out] = d
                out += 1

    return SimpleNamespace(cuda=cuda, flag_hits=flag_hits, write_hits=write_hits)


def project_points_cuda(points: np.ndarray, points_to_camera: np.ndarray, intrinsics: np.ndarray,
                        distortion: np.ndarray, image_size: np.ndarray, min_depth: float = 0.1) -> Projection:
    """:func:`~mmfusion_ros.geometry.projection.project_points` on the GPU; numpy in, numpy out."""
    points = checked_xyz(points)
    cameras = _camera_table(points_to_camera, intrinsics, distortion, image_size)
    min_depth = _checked_min_depth(min_depth)
    dropped_invalid = int(np.count_nonzero(~np.all(np.isfinite(points), axis=1)))
    num_points, num_cameras = len(points), len(cameras.table)
    if num_points == 0 or num_cameras == 0:
        return _empty_projection(dropped_invalid)

    kernels = _kernels()
    cuda = kernels.cuda
    blocks = (num_points + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
    points_d = cuda.to_device(points)
    table_d = cuda.to_device(cameras.table)
    image_wh_d = cuda.to_device(cameras.image_wh)
    hit_flags_d = cuda.device_array((num_cameras, num_points), np.uint8)
    kernels.flag_hits[blocks, _THREADS_PER_BLOCK](points_d, table_d, image_wh_d, min_depth, hit_flags_d)

    hits_per_point = hit_flags_d.copy_to_host().sum(axis=0, dtype=np.int64)  # (N,)
    offsets = np.zeros(num_points + 1, np.int64)
    np.cumsum(hits_per_point, out=offsets[1:])
    num_hits = int(offsets[-1])
    if num_hits == 0:
        return _empty_projection(dropped_invalid)
    point_index_d = cuda.device_array(num_hits, np.int32)
    camera_index_d = cuda.device_array(num_hits, np.int32)
    uv_d = cuda.device_array((num_hits, 2), np.float32)
    depth_d = cuda.device_array(num_hits, np.float32)
    kernels.write_hits[blocks, _THREADS_PER_BLOCK](points_d, table_d, image_wh_d, min_depth, hit_flags_d,
                                                   cuda.to_device(offsets), point_index_d, camera_index_d, uv_d,
                                                   depth_d)
    return Projection(point_index_d.copy_to_host(), camera_index_d.copy_to_host(), uv_d.copy_to_host(),
                      depth_d.copy_to_host(), dropped_invalid)
