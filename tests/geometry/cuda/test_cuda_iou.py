"""CUDA rotated IoU and NMS == the CPU kernels (tiny inputs: also runs in numba's CUDA simulator).

Run without a GPU as ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/geometry/cuda -m cuda``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import cuda

from mmfusion_ros.geometry.iou import nms_rotated, rotated_iou_bev

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda.is_available(),
                       reason='no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)'),
]


def awkward_boxes() -> np.ndarray:
    """Boxes covering the special cases: identical, turned by pi/2, contained, touching, degenerate, NaN."""
    return np.array([
        [0.0, 0.0, 4.0, 2.0, 0.3],
        [0.0, 0.0, 4.0, 2.0, 0.3],  # identical
        [0.0, 0.0, 2.0, 4.0, 0.3 + math.pi / 2],  # the same box, turned and swapped
        [0.2, 0.1, 1.0, 0.5, 1.1],  # inside box 0
        [4.0, 0.0, 4.0, 2.0, 0.0],  # partial overlap
        [8.0, 0.0, 4.0, 2.0, 0.0],  # touches box 4
        [1.0, 1.0, 0.0, 2.0, 0.0],  # zero length
        [np.nan, 0.0, 1.0, 1.0, 0.0],  # NaN centre
    ])


def test_iou_matrix_matches_cpu():
    from mmfusion_ros.geometry.cuda.iou import rotated_iou_bev_cuda

    rng = np.random.default_rng(0)
    a = awkward_boxes()
    b = np.vstack([a[:3], np.column_stack([rng.uniform(-3, 3, (3, 2)), rng.uniform(0.5, 4, (3, 2)),
                                           rng.uniform(-4, 4, 3)])])
    got = rotated_iou_bev_cuda(a, b)
    assert got.dtype == np.float32 and got.shape == (8, 6)
    np.testing.assert_allclose(got, rotated_iou_bev(a, b), atol=1e-5)
    assert not np.isnan(got).any()


def test_empty_inputs_need_no_launch():
    from mmfusion_ros.geometry.cuda.iou import nms_rotated_cuda, rotated_iou_bev_cuda

    assert rotated_iou_bev_cuda(np.zeros((0, 5)), np.zeros((3, 5))).shape == (0, 3)
    kept = nms_rotated_cuda(np.zeros((0, 5)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64


def test_nms_matches_cpu_with_duplicates_labels_and_nan():
    from mmfusion_ros.geometry.cuda.iou import nms_rotated_cuda

    boxes = awkward_boxes()
    scores = np.array([0.5, 0.9, 0.7, 0.6, 0.4, 0.3, 0.2, 0.99])
    labels = np.array([0, 0, 1, 0, 0, 0, 0, 0])
    for threshold, max_out in ((0.3, None), (0.05, None), (0.3, 2)):
        expected = nms_rotated(boxes, scores, labels, threshold, max_out)
        got = nms_rotated_cuda(boxes, scores, labels, threshold, max_out)
        assert got.dtype == np.int64
        assert got.tolist() == expected.tolist()


def test_nms_mask_spans_several_words():
    from mmfusion_ros.geometry.cuda.iou import nms_rotated_cuda

    # 70 boxes: 35 pairs of near-duplicates, so suppression crosses the 64-bit word boundary
    rng = np.random.default_rng(4)
    centres = np.column_stack([np.arange(35) * 5.0, np.zeros(35)])
    boxes = np.repeat(np.column_stack([centres, np.full((35, 2), 2.0), np.zeros(35)]), 2, axis=0)
    boxes[:, :2] += rng.normal(0, 0.05, (70, 2))
    scores = rng.permutation(70) / 70.0
    labels = np.zeros(70, np.int64)
    expected = nms_rotated(boxes, scores, labels, 0.5)
    assert expected.shape == (35,)
    assert nms_rotated_cuda(boxes, scores, labels, 0.5).tolist() == expected.tolist()
