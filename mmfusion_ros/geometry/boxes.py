"""Which points lie inside which 3D boxes.

Boxes are ``[x, y, z, l, w, h, yaw]`` in the points' frame: ``(x, y, z)`` is the box centre, ``l``
runs along the box's heading (yaw about +z, radians), ``w`` across it, ``h`` along z.

A point is inside a box when, in the box's own axes,

    |local x| <= l / 2   and   |local y| <= w / 2   and   |local z| <= h / 2

with ``local x = dx cos(yaw) + dy sin(yaw)``, ``local y = dy cos(yaw) - dx sin(yaw)``, ``local z = dz``
and ``d = point - centre``, all in float64. The faces are inclusive: for an axis-aligned box
(yaw 0) a point exactly on a face is inside; for a rotated box "exactly on the face" holds only to
float64 rounding (about 1e-15 m). Points with a non-finite coordinate are in no box.

Results: ``box_of_point[i]`` is the lowest-indexed box containing point ``i`` (-1 for none), and
``counts[b]`` counts every point inside box ``b``, so overlapping boxes each count a shared point.

The Numba kernel bins the boxes into a uniform grid over xy by their bounding circles (a box enters
every cell its circle's square touches) and tests each point only against its cell's boxes, in
ascending box order. The binning is conservative, so the grid changes the speed, never the result:
the kernel and the reference agree exactly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from mmfusion_ros.errors import GeometryError

__all__ = ['points_in_boxes', 'points_in_boxes_baseline', 'points_in_boxes_reference']

# Columns of the float64 per-box table the kernels read (see _box_table).
_CX, _CY, _CZ, _HALF_L, _HALF_W, _HALF_H, _COS, _SIN, _RADIUS = range(9)
BOX_TABLE_COLUMNS = 9

_CHUNK_POINTS = 4096  # points per parallel work item; the output does not depend on it
_MAX_GRID_CELLS = 1 << 16  # the grid's cell size grows until it has at most this many cells
# The bounding circle is widened by this much (relative and absolute, metres) so that float64
# rounding of the rotation can never put an inside point outside its box's cells.
_RADIUS_SLACK_RELATIVE = 1e-6
_RADIUS_SLACK_M = 1e-6


def checked_xyz(points: np.ndarray) -> np.ndarray:
    """(N, 3) float32 points, contiguous; any other shape or dtype is a GeometryError."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise GeometryError(f'points: expected shape (N, 3), got {points.shape}')
    if points.dtype != np.float32:
        raise GeometryError(f'points: expected float32, got {points.dtype}')
    return np.ascontiguousarray(points)


def _box_table(boxes: np.ndarray) -> np.ndarray:
    """(B, BOX_TABLE_COLUMNS) float64: centre, half sizes, cos and sin of yaw, widened xy radius."""
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise GeometryError(f'boxes: expected shape (B, 7) [x, y, z, l, w, h, yaw], got {boxes.shape}')
    if not np.issubdtype(boxes.dtype, np.floating):
        raise GeometryError(f'boxes: expected floats, got {boxes.dtype}')
    boxes = boxes.astype(np.float64)
    if not np.all(np.isfinite(boxes)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(boxes), axis=1))[0])
        raise GeometryError(f'boxes[{bad}]: non-finite value in {boxes[bad].tolist()}')
    if np.any(boxes[:, 3:6] < 0):
        bad = int(np.flatnonzero(np.any(boxes[:, 3:6] < 0, axis=1))[0])
        raise GeometryError(f'boxes[{bad}]: negative size {boxes[bad, 3:6].tolist()}')
    table = np.empty((len(boxes), BOX_TABLE_COLUMNS), np.float64)
    table[:, _CX:_CZ + 1] = boxes[:, 0:3]
    table[:, _HALF_L:_HALF_H + 1] = boxes[:, 3:6] * 0.5
    table[:, _COS] = np.cos(boxes[:, 6])
    table[:, _SIN] = np.sin(boxes[:, 6])
    radius = np.hypot(table[:, _HALF_L], table[:, _HALF_W])
    table[:, _RADIUS] = radius * (1.0 + _RADIUS_SLACK_RELATIVE) + _RADIUS_SLACK_M
    return table


# ---------------------------------------------------------------------------------------------------
# Reference: numpy, one box at a time, vectorised over points.


def points_in_boxes_reference(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy version of :func:`points_in_boxes`."""
    points = checked_xyz(points)
    table = _box_table(boxes)
    num_points = len(points)
    px, py, pz = (points[:, axis].astype(np.float64) for axis in range(3))  # (N,) each
    box_of_point = np.full(num_points, -1, np.int32)  # (N,)
    counts = np.zeros(len(table), np.int32)  # (B,)
    for box, c in enumerate(table):
        dx = px - c[_CX]
        dy = py - c[_CY]
        dz = pz - c[_CZ]
        local_x = dx * c[_COS] + dy * c[_SIN]
        local_y = dy * c[_COS] - dx * c[_SIN]
        inside = (np.abs(local_x) <= c[_HALF_L]) & (np.abs(local_y) <= c[_HALF_W]) & (np.abs(dz) <= c[_HALF_H])
        counts[box] = np.count_nonzero(inside)
        box_of_point[inside & (box_of_point < 0)] = box
    return box_of_point, counts


# ---------------------------------------------------------------------------------------------------
# Numba: boxes binned into an xy grid, then prange over chunks of points with per-chunk counts.


@njit(cache=True, fastmath=False, inline='always')
def _inside(table: np.ndarray, box: int, px: float, py: float, pz: float) -> bool:
    """The exact test; same operations as the reference. Branch-free: cheaper than early exits."""
    c = table[box]
    dx = px - c[_CX]
    dy = py - c[_CY]
    dz = pz - c[_CZ]
    local_x = dx * c[_COS] + dy * c[_SIN]
    local_y = dy * c[_COS] - dx * c[_SIN]
    return (abs(local_x) <= c[_HALF_L]) & (abs(local_y) <= c[_HALF_W]) & (abs(dz) <= c[_HALF_H])


@njit(cache=True, fastmath=False)
def _box_grid(table: np.ndarray, max_cells: int) -> tuple:
    """Bin boxes by their bounding squares: (origin_x, origin_y, cell, nx, ny, cell_start, cell_boxes).

    ``cell_boxes[cell_start[k]:cell_start[k + 1]]`` are the boxes whose square touches cell ``k``
    (``k = iy * nx + ix``), in ascending order.
    """
    num_boxes = table.shape[0]  # table: (B, BOX_TABLE_COLUMNS) float64
    assert num_boxes > 0, 'no boxes to bin'
    x_min, x_max = np.inf, -np.inf
    y_min, y_max = np.inf, -np.inf
    radii = np.empty(num_boxes, np.float64)
    for box in range(num_boxes):
        r = table[box, _RADIUS]
        radii[box] = r
        x_min = min(x_min, table[box, _CX] - r)
        x_max = max(x_max, table[box, _CX] + r)
        y_min = min(y_min, table[box, _CY] - r)
        y_max = max(y_max, table[box, _CY] + r)
    # About one typical box per cell; coarser where the boxes spread too far for max_cells.
    cell = max(2.0 * np.median(radii), 1e-3)
    while True:
        nx = int((x_max - x_min) / cell) + 1
        ny = int((y_max - y_min) / cell) + 1
        if nx * ny <= max_cells:
            break
        cell *= 2.0

    cell_start = np.zeros(nx * ny + 1, np.int64)  # (cells + 1,) CSR offsets
    cell_ranges = np.empty((num_boxes, 4), np.int64)  # (B, 4) ix0, ix1, iy0, iy1 of each box's square
    for box in range(num_boxes):
        r = table[box, _RADIUS]
        cell_ranges[box, 0] = int((table[box, _CX] - r - x_min) / cell)
        cell_ranges[box, 1] = int((table[box, _CX] + r - x_min) / cell)
        cell_ranges[box, 2] = int((table[box, _CY] - r - y_min) / cell)
        cell_ranges[box, 3] = int((table[box, _CY] + r - y_min) / cell)
        for iy in range(cell_ranges[box, 2], cell_ranges[box, 3] + 1):
            for ix in range(cell_ranges[box, 0], cell_ranges[box, 1] + 1):
                cell_start[iy * nx + ix + 1] += 1
    for k in range(nx * ny):
        cell_start[k + 1] += cell_start[k]
    cell_boxes = np.empty(cell_start[nx * ny], np.int32)  # (entries,) box indices, ascending per cell
    cursor = cell_start[:nx * ny].copy()
    for box in range(num_boxes):  # ascending, so every cell's list is ascending
        for iy in range(cell_ranges[box, 2], cell_ranges[box, 3] + 1):
            for ix in range(cell_ranges[box, 0], cell_ranges[box, 1] + 1):
                cell_boxes[cursor[iy * nx + ix]] = box
                cursor[iy * nx + ix] += 1
    return x_min, y_min, cell, nx, ny, cell_start, cell_boxes


@njit(parallel=True, cache=True, fastmath=False)
def _points_in_boxes_kernel(points: np.ndarray, table: np.ndarray, chunk_points: int) -> tuple:
    num_points = points.shape[0]  # points: (N, 3) float32
    num_boxes = table.shape[0]  # table: (B, BOX_TABLE_COLUMNS) float64
    assert table.shape[1] == BOX_TABLE_COLUMNS, 'box table has the wrong number of columns'
    assert num_boxes > 0, 'the wrapper handles zero boxes'
    x_min, y_min, cell, nx, ny, cell_start, cell_boxes = _box_grid(table, _MAX_GRID_CELLS)
    num_chunks = (num_points + chunk_points - 1) // chunk_points
    box_of_point = np.empty(num_points, np.int32)  # (N,)
    chunk_counts = np.zeros((num_chunks, num_boxes), np.int32)  # (chunks, B): no shared writes
    for chunk in prange(num_chunks):
        counts = chunk_counts[chunk]
        for i in range(chunk * chunk_points, min((chunk + 1) * chunk_points, num_points)):
            first_box = -1
            px = np.float64(points[i, 0])
            py = np.float64(points[i, 1])
            pz = np.float64(points[i, 2])
            # Cell coordinates as floats first: a NaN or a far point never reaches int(). A NaN z
            # fails every box's z test.
            fx = (px - x_min) / cell
            fy = (py - y_min) / cell
            if fx >= 0.0 and fx < nx and fy >= 0.0 and fy < ny:
                k = int(fy) * nx + int(fx)
                for slot in range(cell_start[k], cell_start[k + 1]):
                    box = cell_boxes[slot]
                    if _inside(table, box, px, py, pz):
                        counts[box] += 1
                        if first_box < 0:  # boxes come in ascending order: the first is the lowest
                            first_box = box
            box_of_point[i] = first_box
    counts = np.zeros(num_boxes, np.int32)  # (B,)
    for chunk in range(num_chunks):
        counts += chunk_counts[chunk]
    return box_of_point, counts


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(box_of_point (N,) int32, counts (B,) int32)`` for ``points`` (N, 3) float32 and ``boxes`` (B, 7).

    See the module's docstring for the box convention and the inclusive faces.
    """
    points = checked_xyz(points)
    table = _box_table(boxes)
    if len(table) == 0:
        return np.full(len(points), -1, np.int32), np.zeros(0, np.int32)
    return _points_in_boxes_kernel(points, table, _CHUNK_POINTS)


def points_in_boxes_baseline(points: np.ndarray, boxes: np.ndarray,
                             chunk_points: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Benchmark baseline: torch float32, every point against every box, (chunk, B) at a time.

    Same as :func:`points_in_boxes` except for points within float32 rounding of a face.
    """
    import torch

    points = checked_xyz(points)
    table = torch.from_numpy(_box_table(boxes).astype(np.float32))  # (B, C)
    num_points, num_boxes = len(points), table.shape[0]
    box_of_point = torch.full((num_points,), -1, dtype=torch.int32)
    counts = torch.zeros(num_boxes, dtype=torch.int64)
    if num_boxes == 0:
        return box_of_point.numpy(), counts.to(torch.int32).numpy()
    xyz = torch.from_numpy(points)
    for start in range(0, num_points, chunk_points):
        chunk = xyz[start:start + chunk_points]  # (n, 3)
        dx = chunk[:, 0, None] - table[:, _CX]  # (n, B)
        dy = chunk[:, 1, None] - table[:, _CY]
        dz = chunk[:, 2, None] - table[:, _CZ]
        local_x = dx * table[:, _COS] + dy * table[:, _SIN]
        local_y = dy * table[:, _COS] - dx * table[:, _SIN]
        inside = ((local_x.abs() <= table[:, _HALF_L]) & (local_y.abs() <= table[:, _HALF_W])
                  & (dz.abs() <= table[:, _HALF_H]))  # (n, B)
        counts += inside.sum(dim=0)
        any_box = inside.any(dim=1)
        first = inside.to(torch.uint8).argmax(dim=1).to(torch.int32)
        box_of_point[start:start + chunk_points] = torch.where(any_box, first, -1)
    return box_of_point.numpy(), counts.to(torch.int32).numpy()
