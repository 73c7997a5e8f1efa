"""Rotated BEV IoU and class-aware rotated NMS on a CUDA device; same results as ``geometry.iou``.

Conventions (box rows, degenerate boxes, ordering, NaN handling) are those of ``geometry.iou``;
inputs and outputs are numpy arrays, moved to and from the device here.

rotated_iou_bev_cuda: one thread per (a, b) pair, x over b so consecutive threads write consecutive
entries of a row. The per-pair routine is ``geometry.iou._pair_iou``, the very source the CPU kernel
compiles, here compiled as a device function (float64 throughout, as on the CPU).

nms_rotated_cuda: the usable rows are put in greedy order on the host (descending score, ties by
lower index, NaN rows dropped). On the device, one thread per (row i, 64-column word w) writes a
bitmask word: bit k is set when row ``64 w + k`` comes after i, has i's label and IoU > threshold.
The host then walks the rows once in order, keeping a row unless a kept row's mask has removed it,
and OR-ing each kept row's mask into the removed set (the bitmask scheme of torchvision's CUDA NMS).
The mask is (M, ceil(M / 64)) uint64: 0.5 MB for 2,000 boxes.

numba.cuda is imported only when a kernel is first needed, never at import time.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import numpy as np
from numba import float64, njit, uint64

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.iou import _CLIP_CAPACITY, _as_boxes, _box_params, _nms_inputs, _pair_iou

__all__ = ['nms_rotated_cuda', 'rotated_iou_bev_cuda']

_BLOCK = (32, 8)  # threads per block: x along the fast axis (columns / mask words), y along rows
_WORD_BITS = 64


# The kernels are plain functions until ``_kernels`` compiles them. They read ``cuda`` and
# ``_pair_iou_device`` as module globals (set there), so that numba's CUDA simulator can substitute
# its own module and the device function exists only once a device is wanted.
cuda: Any = None
_pair_iou_device: Any = None


def _iou_matrix_kernel(params_a, params_b, out):
    # params_a (A, 8), params_b (B, 8) -> out (A, B) float32
    j, i = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        xs = cuda.local.array((2, _CLIP_CAPACITY), float64)
        ys = cuda.local.array((2, _CLIP_CAPACITY), float64)
        out[i, j] = _pair_iou_device(params_a, i, params_b, j, xs, ys)


def _suppression_mask_kernel(params, labels, iou_threshold, mask):
    # params (M, 8) and labels (M,) in greedy order -> mask (M, W) uint64
    w, i = cuda.grid(2)
    n_rows = params.shape[0]
    if i < n_rows and w < mask.shape[1]:
        xs = cuda.local.array((2, _CLIP_CAPACITY), float64)
        ys = cuda.local.array((2, _CLIP_CAPACITY), float64)
        bits = uint64(0)
        first = w * _WORD_BITS
        for k in range(_WORD_BITS):
            j = first + k
            if j > i and j < n_rows and labels[j] == labels[i]:
                if _pair_iou_device(params, i, params, j, xs, ys) > iou_threshold:
                    bits |= uint64(1) << uint64(k)
        mask[i, w] = bits


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compile the kernels on first use; numba.cuda is imported here and nowhere at import time."""
    global cuda, _pair_iou_device
    from numba import cuda

    _pair_iou_device = cuda.jit(device=True)(_pair_iou)
    return SimpleNamespace(
        cuda=cuda,
        iou_matrix=cuda.jit(_iou_matrix_kernel),
        suppression_mask=cuda.jit(_suppression_mask_kernel),
    )


def _require_device():
    kernels = _kernels()
    if not kernels.cuda.is_available():
        raise GeometryError('CUDA: no usable device (numba.cuda.is_available() is False)')
    return kernels


def _grid(columns: int, rows: int) -> tuple[int, int]:
    return (-(-columns // _BLOCK[0]), -(-rows // _BLOCK[1]))


def rotated_iou_bev_cuda(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``geometry.iou.rotated_iou_bev`` on the GPU: (A, 5), (B, 5) -> (A, B) float32 (host arrays)."""
    a = _as_boxes(boxes_a, 'boxes_a')  # (A, 5)
    b = _as_boxes(boxes_b, 'boxes_b')  # (B, 5)
    n_a, n_b = a.shape[0], b.shape[0]
    if n_a == 0 or n_b == 0:
        return np.zeros((n_a, n_b), np.float32)
    kernels = _require_device()
    cuda = kernels.cuda
    params_a = cuda.to_device(_box_params(a))  # (A, 8)
    params_b = cuda.to_device(_box_params(b))  # (B, 8)
    out = cuda.device_array((n_a, n_b), np.float32)
    kernels.iou_matrix[_grid(n_b, n_a), _BLOCK](params_a, params_b, out)
    return out.copy_to_host()


@njit(cache=True)
def _greedy_from_mask(mask, limit):
    """Rows kept by greedy NMS, given mask (M, W) uint64 over rows in greedy order -> (K,) int64."""
    n_rows, n_words = mask.shape
    removed = np.zeros(n_words, np.uint64)
    kept = np.empty(min(n_rows, limit), np.int64)
    count = 0
    one = np.uint64(1)
    for i in range(n_rows):
        if count >= limit:
            break
        word = i // 64
        if (removed[word] >> np.uint64(i - 64 * word)) & one:
            continue
        kept[count] = i
        count += 1
        for w in range(word, n_words):
            removed[w] |= mask[i, w]
    return kept[:count]


def nms_rotated_cuda(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                     max_out: int | None = None) -> np.ndarray:
    """``geometry.iou.nms_rotated`` with the suppression bitmask built on the GPU.

    Same arguments, checks and result: (K,) int64 input indices, descending score, ties by lower
    index, class-aware, NaN rows dropped, at most ``max_out``.
    """
    rows, _, label, threshold, limit, order = _nms_inputs(
        boxes, scores, labels, iou_threshold, 'iou_threshold', 1.0, max_out, 5)
    n_rows = order.shape[0]
    if n_rows == 0 or limit == 0:
        return np.zeros(0, np.int64)
    kernels = _require_device()
    cuda = kernels.cuda
    n_words = -(-n_rows // _WORD_BITS)
    params = cuda.to_device(_box_params(rows[order]))  # (M, 8) in greedy order
    ordered_labels = cuda.to_device(np.ascontiguousarray(label[order]))  # (M,)
    mask = cuda.device_array((n_rows, n_words), np.uint64)
    kernels.suppression_mask[_grid(n_words, n_rows), _BLOCK](params, ordered_labels, threshold, mask)
    kept = _greedy_from_mask(mask.copy_to_host(), limit)  # positions in the greedy order
    return order[kept]  # already by descending score, ties by lower index
