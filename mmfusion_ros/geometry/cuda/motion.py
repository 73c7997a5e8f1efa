"""CUDA version of :func:`mmfusion_ros.geometry.motion.compensate_ego_motion`.

Same interpolation (linear translation, slerp rotation), the same out-of-range policy
(GeometryError naming the pose table's range) and the same output as the CPU version. One thread
per point: binary search for the bracketing samples, slerp, compose with the inverse target pose,
apply. Quaternions, slerp angles and the target pose come from the CPU module's preparation.

Numerics: the CPU kernel's operations in the same order. In Numba's CUDA simulator the result
matches the reference exactly or to an ulp of the slerp ``sin``; a real GPU also fuses
multiply-adds. Either way the result agrees with the reference to well under a micrometre.

``numba.cuda`` is imported on first use only, so importing this module needs no GPU.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np

from mmfusion_ros.geometry.motion import _check_point_times, _checked_points, _pose_table, interpolated_motion

__all__ = ['compensate_ego_motion_cuda']

_THREADS_PER_BLOCK = 256
cuda: Any = None  # numba.cuda, bound by _kernels() on first use


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernel once per process (lazily: this is where numba.cuda is imported)."""
    global cuda  # the kernels read it as a module global: Numba's CUDA simulator swaps it there
    from numba import cuda

    interpolated_motion_device = cuda.jit(device=True)(interpolated_motion)

    @cuda.jit
    def compensate_kernel(points, point_times_ns, times_ns, quaternions, translations, interval,
                          target_rotation_t, target_translation, out):
        # points: (N, 3) float32; point_times_ns: (N,) int64; times_ns: (T,) int64; quaternions: (T, 4)
        # translations: (T, 3); interval: (T - 1, 3); target_rotation_t: (3, 3); out: (N, 3) float32
        i = cuda.grid(1)
        if i >= points.shape[0]:
            return
        time_ns = point_times_ns[i]
        num_samples = times_ns.shape[0]
        # k = (number of samples <= time) - 1, clamped to [0, T - 2]: numpy's searchsorted(side='right').
        low = 0
        high = num_samples
        while low < high:
            middle = (low + high) // 2
            if times_ns[middle] <= time_ns:
                low = middle + 1
            else:
                high = middle
        k = min(max(low - 1, 0), num_samples - 2)
        alpha = numba.float64(time_ns - times_ns[k]) / numba.float64(times_ns[k + 1] - times_ns[k])
        motion = cuda.local.array((3, 4), numba.float64)
        interpolated_motion_device(k, alpha, quaternions, translations, interval, target_rotation_t,
                                   target_translation, motion)
        px = numba.float64(points[i, 0])
        py = numba.float64(points[i, 1])
        pz = numba.float64(points[i, 2])
        for row in range(3):
            out[i, row] = numba.float32(motion[row, 0] * px + motion[row, 1] * py + motion[row, 2] * pz
                                        + motion[row, 3])

    return SimpleNamespace(cuda=cuda, compensate=compensate_kernel)


def compensate_ego_motion_cuda(points: np.ndarray, point_times_ns: np.ndarray, pose_times_ns: np.ndarray,
                               sensor_to_fixed: np.ndarray, target_time_ns: int) -> np.ndarray:
    """:func:`~mmfusion_ros.geometry.motion.compensate_ego_motion` on the GPU; numpy in, numpy out."""
    points, point_times = _checked_points(points, point_times_ns)
    table = _pose_table(pose_times_ns, sensor_to_fixed, target_time_ns)
    _check_point_times(table, point_times)
    num_points = len(points)
    if num_points == 0:
        return np.zeros((0, 3), np.float32)
    kernels = _kernels()
    cuda = kernels.cuda
    out_d = cuda.device_array((num_points, 3), np.float32)
    blocks = (num_points + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
    kernels.compensate[blocks, _THREADS_PER_BLOCK](
        cuda.to_device(points), cuda.to_device(point_times), cuda.to_device(table.times_ns),
        cuda.to_device(table.quaternions), cuda.to_device(table.translations), cuda.to_device(table.interval),
        cuda.to_device(table.target_rotation_t), cuda.to_device(table.target_translation), out_d)
    return out_d.copy_to_host()
