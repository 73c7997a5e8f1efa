"""CUDA version of :func:`mmfusion_ros.geometry.boxes.points_in_boxes`.

Same box convention, inclusive faces and output as the CPU version. One thread per point tests
every box (after a bounding-circle reject) in ascending order, so the first hit is the lowest box
index; the per-box counts are integer atomic adds, whose sum does not depend on the order.

Numerics: the CPU kernel's operations in the same order; exact in Numba's CUDA simulator. A real
GPU fuses multiply-adds in the rotation, so a point within float64 rounding (about 1e-15 m) of a
rotated box's face can fall on the other side of it.

``numba.cuda`` is imported on first use only, so importing this module needs no GPU.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np

from mmfusion_ros.geometry.boxes import (
    _COS, _CX, _CY, _CZ, _HALF_H, _HALF_L, _HALF_W, _RADIUS, _SIN, _box_table, checked_xyz)

__all__ = ['points_in_boxes_cuda']

_THREADS_PER_BLOCK = 256
cuda: Any = None  # numba.cuda, bound by _kernels() on first use


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernel once per process (lazily: this is where numba.cuda is imported)."""
    global cuda  # the kernels read it as a module global: Numba's CUDA simulator swaps it there
    from numba import cuda

    @cuda.jit
    def points_in_boxes_kernel(points, table, box_of_point, counts):
        # points: (N, 3) float32; table: (B, C) float64; box_of_point: (N,) int32; counts: (B,) int32
        i = cuda.grid(1)
        if i >= points.shape[0]:
            return
        px = numba.float64(points[i, 0])
        py = numba.float64(points[i, 1])
        pz = numba.float64(points[i, 2])
        first_box = -1
        for box in range(table.shape[0]):
            c = table[box]
            dx = px - c[_CX]
            dy = py - c[_CY]
            # Conservative reject (the radius is widened); a NaN point fails it and every box.
            if not dx * dx + dy * dy <= c[_RADIUS] * c[_RADIUS]:
                continue
            dz = pz - c[_CZ]
            local_x = dx * c[_COS] + dy * c[_SIN]
            local_y = dy * c[_COS] - dx * c[_SIN]
            if abs(local_x) <= c[_HALF_L] and abs(local_y) <= c[_HALF_W] and abs(dz) <= c[_HALF_H]:
                cuda.atomic.add(counts, box, 1)
                if first_box < 0:
                    first_box = box
        box_of_point[i] = first_box

    return SimpleNamespace(cuda=cuda, points_in_boxes=points_in_boxes_kernel)


def points_in_boxes_cuda(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~mmfusion_ros.geometry.boxes.points_in_boxes` on the GPU; numpy in, numpy out."""
    points = checked_xyz(points)
    table = _box_table(boxes)
    num_points, num_boxes = len(points), len(table)
    if num_points == 0 or num_boxes == 0:
        return np.full(num_points, -1, np.int32), np.zeros(num_boxes, np.int32)
    kernels = _kernels()
    cuda = kernels.cuda
    box_of_point_d = cuda.device_array(num_points, np.int32)
    counts_d = cuda.to_device(np.zeros(num_boxes, np.int32))
    blocks = (num_points + _THREADS_PER_BLOCK - 1) // _THREADS_PER_BLOCK
    kernels.points_in_boxes[blocks, _THREADS_PER_BLOCK](cuda.to_device(points), cuda.to_device(table),
                                                        box_of_point_d, counts_d)
    return box_of_point_d.copy_to_host(), counts_d.copy_to_host()
