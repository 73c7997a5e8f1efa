"""Pillar pooling without padding, and pillars onto the dense bird's-eye-view map.

``scatter_max`` is the pooling step of a PointPillars pillar feature net run on the real points
only: the per-point features (after the shared linear layer) are reduced by max into their pillar.
``scatter_to_bev`` then writes each pillar's feature vector into a (C, ny, nx) canvas at its cell.

Conventions:

- ``scatter_max``: a pillar that receives no point gets 0 (``pillarize`` never makes one; 0 rather
  than -inf so a stray empty pillar cannot poison the convolutions after it). A NaN among a
  pillar's values makes that channel NaN, as ``np.maximum`` and ``torch.amax`` do. Max does not
  depend on the order of the points, so every implementation gives identical results.
- ``point_pillar`` in [0, num_pillars); when it is non-decreasing (as ``pillarize`` returns it) each
  pillar's points are one contiguous run and the kernel reduces the runs in parallel with no
  atomics; otherwise it falls back to a serial scatter.
- ``scatter_to_bev``: coords are (row, col) in the grid's ``shape`` (ny, nx); a coordinate outside
  the grid or a cell given twice is a ``GeometryError`` (two pillars in one cell would silently
  overwrite each other). Cells without a pillar are 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import GeometryError

__all__ = [
    'scatter_max',
    'scatter_max_baseline',
    'scatter_max_reference',
    'scatter_to_bev',
    'scatter_to_bev_baseline',
    'scatter_to_bev_reference',
]


# ---------------------------------------------------------------------------------------------------
# Input checks shared by every implementation (the CUDA wrappers use them too)


def checked_scatter_max_inputs(point_features: np.ndarray, point_pillar: np.ndarray,
                               num_pillars: int) -> tuple[np.ndarray, np.ndarray, int]:
    if not isinstance(point_features, np.ndarray) or point_features.ndim != 2:
        raise GeometryError(f'scatter_max: point_features must be a (Nk, C) array, got '
                            f'{getattr(point_features, "shape", type(point_features).__name__)}')
    if point_features.dtype != np.float32:
        raise GeometryError(f'scatter_max: point_features must be float32, got {point_features.dtype}')
    Nk = point_features.shape[0]
    point_pillar = np.asarray(point_pillar)
    if point_pillar.shape != (Nk,) or not np.issubdtype(point_pillar.dtype, np.integer):
        raise GeometryError(f'scatter_max: point_pillar must be ({Nk},) integers, got '
                            f'{point_pillar.shape} {point_pillar.dtype}')
    P = int(num_pillars)
    if P != num_pillars or P < 0:
        raise GeometryError(f'scatter_max: num_pillars must be a non-negative integer, got {num_pillars!r}')
    if Nk and (int(point_pillar.min()) < 0 or int(point_pillar.max()) >= P):
        raise GeometryError(f'scatter_max: point_pillar spans [{int(point_pillar.min())}, '
                            f'{int(point_pillar.max())}], outside [0, {P}) pillars')
    return (np.ascontiguousarray(point_features), np.ascontiguousarray(point_pillar, dtype=np.int32), P)


def checked_bev_inputs(pillar_features: np.ndarray, coords: np.ndarray,
                       shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validated (P, C) float32 features, (P,) int64 linear cells, ny and nx; duplicates rejected."""
    if not isinstance(pillar_features, np.ndarray) or pillar_features.ndim != 2:
        raise GeometryError(f'scatter_to_bev: pillar_features must be a (P, C) array, got '
                            f'{getattr(pillar_features, "shape", type(pillar_features).__name__)}')
    if pillar_features.dtype != np.float32:
        raise GeometryError(f'scatter_to_bev: pillar_features must be float32, got {pillar_features.dtype}')
    P = pillar_features.shape[0]
    coords = np.asarray(coords)
    if coords.shape != (P, 2) or not np.issubdtype(coords.dtype, np.integer):
        raise GeometryError(f'scatter_to_bev: coords must be ({P}, 2) integer (row, col), got '
                            f'{coords.shape} {coords.dtype}')
    ny, nx = (int(v) for v in shape)
    if ny < 1 or nx < 1:
        raise GeometryError(f'scatter_to_bev: shape must be positive (ny, nx), got {tuple(shape)}')
    coords = np.ascontiguousarray(coords, dtype=np.int64)
    bad = _first_bad_cell(coords, ny, nx)
    if bad >= 0:
        raise GeometryError(f'scatter_to_bev: pillar {bad} at (row, col) = {tuple(coords[bad].tolist())} '
                            f'is outside the {ny}x{nx} grid')
    linear = coords[:, 0] * nx + coords[:, 1]  # (P,)
    duplicate = _first_duplicate(linear, ny * nx)
    if duplicate >= 0:
        raise GeometryError(f'scatter_to_bev: cell (row, col) = {tuple(coords[duplicate].tolist())} is given '
                            f'twice (pillar {duplicate} and an earlier one)')
    return np.ascontiguousarray(pillar_features), linear, ny, nx


@njit(cache=True)
def _first_bad_cell(coords, ny, nx):
    for p in range(coords.shape[0]):
        if coords[p, 0] < 0 or coords[p, 0] >= ny or coords[p, 1] < 0 or coords[p, 1] >= nx:
            return p
    return -1


@njit(cache=True)
def _first_duplicate(linear, num_cells):
    """Index of the first cell seen before, or -1. Strictly increasing input needs no table."""
    P = linear.shape[0]
    increasing = True
    for p in range(1, P):
        if linear[p] <= linear[p - 1]:
            increasing = False
            break
    if increasing:
        return -1
    seen = np.zeros(num_cells, np.bool_)
    for p in range(P):
        if seen[linear[p]]:
            return p
        seen[linear[p]] = True
    return -1


def _checked_out(out: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.float32)
    if (not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32
            or not out.flags.c_contiguous):
        raise GeometryError(f'{what}: out must be a C-contiguous float32 array of shape {shape}, got '
                            f'{getattr(out, "shape", None)} {getattr(out, "dtype", type(out).__name__)}')
    return out


# ---------------------------------------------------------------------------------------------------
# scatter_max


def scatter_max_reference(point_features: np.ndarray, point_pillar: np.ndarray, num_pillars: int) -> np.ndarray:
    """(P, C) float32 max over each pillar's points; np.maximum.at, empty pillars 0."""
    point_features, point_pillar, P = checked_scatter_max_inputs(point_features, point_pillar, num_pillars)
    Nk, C = point_features.shape
    out = np.full((P, C), -np.inf, np.float32)
    np.maximum.at(out, point_pillar, point_features)
    out[np.bincount(point_pillar, minlength=P) == 0] = 0.0
    return out


@njit(cache=True)
def run_starts(point_pillar, num_pillars):
    """(P + 1,) int64 run offsets if point_pillar is non-decreasing, else an empty array."""
    Nk = point_pillar.shape[0]
    starts = np.empty(num_pillars + 1, np.int64)
    p = 0
    for j in range(Nk):
        q = point_pillar[j]
        if q < p - 1:
            return np.empty(0, np.int64)
        while p <= q:
            starts[p] = j
            p += 1
    while p <= num_pillars:
        starts[p] = Nk
        p += 1
    return starts


@njit(parallel=True, cache=True)
def _segment_max(point_features, starts):
    """(P, C) max over contiguous runs; parallel over pillars, each owns its output row."""
    P = starts.shape[0] - 1
    C = point_features.shape[1]
    out = np.empty((P, C), np.float32)
    for p in prange(P):
        start, stop = starts[p], starts[p + 1]
        if stop == start:
            for c in range(C):
                out[p, c] = 0.0
            continue
        for c in range(C):
            out[p, c] = point_features[start, c]
        for j in range(start + 1, stop):
            for c in range(C):
                v = point_features[j, c]
                if v > out[p, c] or v != v:
                    out[p, c] = v
    return out


@njit(cache=True)
def _scatter_max_serial(point_features, point_pillar, num_pillars):
    """Any order of points: one serial pass, then empty pillars to 0."""
    Nk, C = point_features.shape
    out = np.empty((num_pillars, C), np.float32)
    filled = np.zeros(num_pillars, np.bool_)
    for j in range(Nk):
        p = point_pillar[j]
        if not filled[p]:
            filled[p] = True
            for c in range(C):
                out[p, c] = point_features[j, c]
        else:
            for c in range(C):
                v = point_features[j, c]
                if v > out[p, c] or v != v:
                    out[p, c] = v
    for p in range(num_pillars):
        if not filled[p]:
            for c in range(C):
                out[p, c] = 0.0
    return out


def scatter_max(point_features: np.ndarray, point_pillar: np.ndarray, num_pillars: int) -> np.ndarray:
    """(P, C) float32: for each pillar the channel-wise max of its points' (Nk, C) features."""
    point_features, point_pillar, P = checked_scatter_max_inputs(point_features, point_pillar, num_pillars)
    starts = run_starts(point_pillar, P)
    if len(starts) == P + 1:
        return _segment_max(point_features, starts)
    return _scatter_max_serial(point_features, point_pillar, P)


def scatter_max_baseline(point_features: np.ndarray, point_pillar: np.ndarray, num_pillars: int) -> np.ndarray:
    """torch ``scatter_reduce_(..., 'amax', include_self=False)`` into zeros."""
    import torch

    point_features, point_pillar, P = checked_scatter_max_inputs(point_features, point_pillar, num_pillars)
    Nk, C = point_features.shape
    source = torch.from_numpy(point_features)
    index = torch.from_numpy(point_pillar).long().unsqueeze(1).expand(Nk, C)
    out = torch.zeros(P, C, dtype=torch.float32)
    out.scatter_reduce_(0, index, source, 'amax', include_self=False)
    return out.numpy()


# ---------------------------------------------------------------------------------------------------
# scatter_to_bev


def scatter_to_bev_reference(pillar_features: np.ndarray, coords: np.ndarray,
                             shape: tuple[int, int]) -> np.ndarray:
    """(C, ny, nx) float32 canvas, zeros except each pillar's features at its (row, col)."""
    pillar_features, linear, ny, nx = checked_bev_inputs(pillar_features, coords, shape)
    P, C = pillar_features.shape
    canvas = np.zeros((C, ny, nx), np.float32)
    rows, cols = np.divmod(linear, nx)
    canvas[:, rows, cols] = pillar_features.T
    return canvas


TRANSPOSE_BLOCK = 1024  # pillars per task when turning (P, C) features into (C, P)


@njit(parallel=True, cache=True)
def _scatter_to_bev(pillar_features, linear, canvas):
    """canvas (C, ny * nx) zeroed and written; parallel over channels.

    Each task owns one channel plane (256 KB at 256 x 256, so it stays in cache while it is zeroed
    and scattered into). The features are first turned channel-major in blocks of pillars, so each
    task then reads its channel contiguously: reading a column of the (P, C) array directly pulls a
    whole cache line per 4-byte value and was twice as slow. Walking pillars outermost instead
    writes C planes 256 KB apart per pillar, which alias in the cache, and was slower still.
    """
    P, C = pillar_features.shape
    num_cells = canvas.shape[1]
    by_channel = np.empty((C, P), np.float32)
    for block in prange((P + TRANSPOSE_BLOCK - 1) // TRANSPOSE_BLOCK):
        for p in range(block * TRANSPOSE_BLOCK, min(P, (block + 1) * TRANSPOSE_BLOCK)):
            for c in range(C):
                by_channel[c, p] = pillar_features[p, c]
    for c in prange(C):
        plane = canvas[c]
        for cell in range(num_cells):
            plane[cell] = 0.0
        values = by_channel[c]
        for p in range(P):
            plane[linear[p]] = values[p]


def scatter_to_bev(pillar_features: np.ndarray, coords: np.ndarray, shape: tuple[int, int],
                   out: np.ndarray | None = None) -> np.ndarray:
    """(C, ny, nx) float32 BEV map: pillar p's (C,) features at ``coords[p]`` = (row, col), zeros elsewhere.

    ``out``, when given, is a (C, ny, nx) float32 buffer that is overwritten and returned (a node
    that reuses it skips the page faults of a fresh 16 MB allocation every frame).
    """
    pillar_features, linear, ny, nx = checked_bev_inputs(pillar_features, coords, shape)
    P, C = pillar_features.shape
    canvas = _checked_out(out, (C, ny, nx), 'scatter_to_bev')
    _scatter_to_bev(pillar_features, linear, canvas.reshape(C, ny * nx))
    return canvas


def scatter_to_bev_baseline(pillar_features: np.ndarray, coords: np.ndarray,
                            shape: tuple[int, int]) -> np.ndarray:
    """torch: zeros (C, ny * nx), then ``index_copy_`` of the transposed features along the cells."""
    import torch

    pillar_features, linear, ny, nx = checked_bev_inputs(pillar_features, coords, shape)
    P, C = pillar_features.shape
    canvas = torch.zeros(C, ny * nx, dtype=torch.float32)
    canvas.index_copy_(1, torch.from_numpy(linear), torch.from_numpy(pillar_features).t())
    return canvas.view(C, ny, nx).numpy()
