"""Rotated BEV IoU and NMS: geometric properties, kernel == reference, reference == OpenCV, errors."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import GeometryError
from mmfusion_ros.geometry.iou import (
    nms_center_distance,
    nms_center_distance_baseline,
    nms_center_distance_reference,
    nms_rotated,
    nms_rotated_baseline,
    nms_rotated_reference,
    rotated_iou_bev,
    rotated_iou_bev_baseline,
    rotated_iou_bev_reference,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coordinate = st.floats(-60.0, 60.0, allow_nan=False)
size = st.floats(0.05, 12.0, allow_nan=False)
yaw = st.floats(-7.0, 7.0, allow_nan=False)
box = st.tuples(coordinate, coordinate, size, size, yaw).map(lambda row: np.array(row, np.float64))


@st.composite
def clustered_boxes(draw, max_boxes: int = 8) -> np.ndarray:
    """(N, 5) boxes near one another, so that many pairs overlap."""
    n = draw(st.integers(1, max_boxes))
    near = st.floats(-3.0, 3.0)
    rows = draw(st.lists(st.tuples(near, near, size, size, yaw), min_size=n, max_size=n))
    return np.array(rows, np.float64).reshape(n, 5)


def one(a: np.ndarray, b: np.ndarray) -> float:
    return float(rotated_iou_bev(a[None], b[None])[0, 0])


def random_boxes(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    return np.column_stack([rng.uniform(-spread, spread, (n, 2)), rng.uniform(0.3, 6.0, (n, 2)),
                            rng.uniform(-np.pi, np.pi, n)])


# --------------------------------------------------------------------------------------------------
# IoU: geometric properties
# --------------------------------------------------------------------------------------------------

@SETTINGS
@given(box)
def test_identical_boxes_have_iou_one(a):
    assert one(a, a) == pytest.approx(1.0, abs=1e-6)


@SETTINGS
@given(box, st.integers(-3, 3))
def test_box_turned_by_a_quarter_with_sides_swapped_is_the_same_box(a, quarters):
    turned = a.copy()
    turned[4] += quarters * math.pi / 2
    if quarters % 2:
        turned[2], turned[3] = a[3], a[2]
    assert one(a, turned) == pytest.approx(1.0, abs=1e-6)
    assert one(turned, a) == pytest.approx(1.0, abs=1e-6)


def test_square_turned_by_a_quarter_is_the_same_square():
    square = np.array([[3.0, -2.0, 2.0, 2.0, 0.0]])
    turned = square + [0, 0, 0, 0, math.pi / 2]
    assert rotated_iou_bev(square, turned)[0, 0] == pytest.approx(1.0, abs=1e-7)


@SETTINGS
@given(box, box, st.floats(0.0, 2 * math.pi))
def test_boxes_beyond_their_circumscribed_circles_do_not_overlap(a, b, direction):
    reach = 0.5 * math.hypot(a[2], a[3]) + 0.5 * math.hypot(b[2], b[3])
    b = b.copy()
    b[:2] = a[:2] + 1.001 * reach * np.array([math.cos(direction), math.sin(direction)])
    assert one(a, b) == 0.0


@SETTINGS
@given(clustered_boxes(), clustered_boxes())
def test_iou_is_symmetric_and_within_zero_one(a, b):
    ab = rotated_iou_bev(a, b)
    ba = rotated_iou_bev(b, a)
    np.testing.assert_allclose(ab, ba.T, atol=1e-6)
    assert np.all((ab >= 0) & (ab <= 1))
    assert ab.dtype == np.float32 and ab.shape == (a.shape[0], b.shape[0])


@SETTINGS
@given(box, st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(-1, 1), st.floats(-1, 1))
def test_contained_box_gives_the_area_ratio(a, shrink_l, shrink_w, shift_u, shift_v):
    # same heading, smaller, shifted along a's axes but still inside
    inner = a.copy()
    inner[2], inner[3] = a[2] * shrink_l, a[3] * shrink_w
    slack_u, slack_v = 0.5 * (a[2] - inner[2]), 0.5 * (a[3] - inner[3])
    c, s = math.cos(a[4]), math.sin(a[4])
    u, v = shift_u * slack_u, shift_v * slack_v
    inner[0] += c * u - s * v
    inner[1] += s * u + c * v
    ratio = inner[2] * inner[3] / (a[2] * a[3])
    assert one(a, inner) == pytest.approx(ratio, rel=1e-5, abs=1e-6)
    assert one(inner, a) == pytest.approx(ratio, rel=1e-5, abs=1e-6)


@SETTINGS
@given(box, yaw)
def test_rotated_box_inside_the_inscribed_circle_gives_the_area_ratio(a, inner_yaw):
    inscribed = 0.5 * min(a[2], a[3])
    inner = np.array([a[0], a[1], inscribed, inscribed, inner_yaw])  # diagonal = inscribed * sqrt(2) < 2r
    ratio = inscribed * inscribed / (a[2] * a[3])
    assert one(a, inner) == pytest.approx(ratio, rel=1e-5, abs=1e-6)


@SETTINGS
@given(box, size, st.booleans())
def test_boxes_touching_along_an_edge_do_not_overlap(a, other_size, along_length):
    b = a.copy()
    c, s = math.cos(a[4]), math.sin(a[4])
    if along_length:  # b ahead of a, sharing a's front edge line
        b[2] = other_size
        gap = 0.5 * (a[2] + b[2])
        b[0], b[1] = a[0] + c * gap, a[1] + s * gap
    else:  # b beside a, sharing a's left edge line
        b[3] = other_size
        gap = 0.5 * (a[3] + b[3])
        b[0], b[1] = a[0] - s * gap, a[1] + c * gap
    assert one(a, b) < 1e-6


def test_touching_axis_aligned_boxes_and_corners():
    a = np.array([[0.0, 0.0, 2.0, 2.0, 0.0]])
    edge = np.array([[2.0, 0.0, 2.0, 2.0, 0.0]])
    corner = np.array([[2.0, 2.0, 2.0, 2.0, 0.0]])
    half = np.array([[1.0, 0.0, 2.0, 2.0, 0.0]])
    assert rotated_iou_bev(a, edge)[0, 0] == 0.0
    assert rotated_iou_bev(a, corner)[0, 0] == 0.0
    assert rotated_iou_bev(a, half)[0, 0] == pytest.approx(1.0 / 3.0)  # overlap 2 of union 6


def test_known_value_of_a_square_and_its_45_degree_turn():
    square = np.array([[0.0, 0.0, 2.0, 2.0, 0.0]])
    diamond = np.array([[0.0, 0.0, 2.0, 2.0, math.pi / 4]])
    inter = 8.0 * (math.sqrt(2.0) - 1.0)  # regular octagon of inradius 1
    expected = inter / (8.0 - inter)
    assert rotated_iou_bev(square, diamond)[0, 0] == pytest.approx(expected, rel=1e-6)


def test_degenerate_and_non_finite_boxes_have_iou_zero():
    good = np.array([0.0, 0.0, 2.0, 1.0, 0.3])
    rows = np.array([
        good,
        [0.0, 0.0, 0.0, 1.0, 0.3],  # zero length
        [0.0, 0.0, 2.0, 0.0, 0.3],  # zero width
        [0.0, 0.0, 0.0, 0.0, 0.0],  # a point
        [0.0, 0.0, -2.0, 1.0, 0.3],  # negative size
        [np.nan, 0.0, 2.0, 1.0, 0.3],
        [0.0, 0.0, 2.0, 1.0, np.inf],
        [0.0, 0.0, np.inf, 1.0, 0.0],
    ])
    iou = rotated_iou_bev(rows, rows)
    assert not np.isnan(iou).any()
    expected = np.zeros_like(iou)
    expected[0, 0] = 1.0
    np.testing.assert_array_equal(iou, expected)
    np.testing.assert_array_equal(rotated_iou_bev_reference(rows, rows), expected)


def test_empty_inputs_give_empty_matrices():
    a = random_boxes(np.random.default_rng(0), 3, 5.0)
    assert rotated_iou_bev(np.zeros((0, 5)), a).shape == (0, 3)
    assert rotated_iou_bev(a, np.zeros((0, 5))).shape == (3, 0)
    assert rotated_iou_bev(np.zeros((0, 5)), np.zeros((0, 5))).dtype == np.float32


@pytest.mark.parametrize(('boxes', 'message'), [
    (np.zeros((3, 4)), r'boxes_a: expected shape \(N, 5\).*got \(3, 4\)'),
    (np.zeros(5), r'boxes_a: expected shape \(N, 5\).*got \(5,\)'),
    ([['a', 'b', 'c', 'd', 'e']], r'boxes_a: expected a numeric'),
])
def test_iou_rejects_badly_shaped_boxes(boxes, message):
    with pytest.raises(GeometryError, match=message):
        rotated_iou_bev(boxes, np.zeros((1, 5)))


# --------------------------------------------------------------------------------------------------
# IoU: kernel == reference == OpenCV, baseline == kernel
# --------------------------------------------------------------------------------------------------

@SETTINGS
@given(clustered_boxes(), clustered_boxes())
def test_kernel_matches_reference(a, b):
    np.testing.assert_allclose(rotated_iou_bev(a, b), rotated_iou_bev_reference(a, b), atol=1e-5)


def test_reference_matches_opencv_intersection_area():
    rng = np.random.default_rng(7)
    a, b = random_boxes(rng, 25, 4.0), random_boxes(rng, 20, 4.0)
    iou = rotated_iou_bev_reference(a, b).astype(np.float64)
    checked = 0
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            rect_a = ((a[i, 0], a[i, 1]), (a[i, 2], a[i, 3]), math.degrees(a[i, 4]))
            rect_b = ((b[j, 0], b[j, 1]), (b[j, 2], b[j, 3]), math.degrees(b[j, 4]))
            _, points = cv2.rotatedRectangleIntersection(rect_a, rect_b)
            cv_area = 0.0 if points is None else cv2.contourArea(cv2.convexHull(points))
            area_a, area_b = a[i, 2] * a[i, 3], b[j, 2] * b[j, 3]
            ours = iou[i, j] * (area_a + area_b) / (1.0 + iou[i, j])  # intersection from IoU
            assert ours == pytest.approx(cv_area, abs=1e-4 * max(1.0, cv_area)), (i, j)
            checked += cv_area > 0
    assert checked > 50  # the sample has plenty of real overlaps


def test_baseline_matches_kernel():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 60, 6.0), random_boxes(rng, 50, 6.0)
    a[0, 2] = 0.0
    b[1, 0] = np.nan
    np.testing.assert_allclose(rotated_iou_bev_baseline(a, b), rotated_iou_bev(a, b), atol=1e-5)
    np.testing.assert_allclose(rotated_iou_bev_baseline(a, a), rotated_iou_bev(a, a), atol=1e-5)


# --------------------------------------------------------------------------------------------------
# NMS on rotated IoU
# --------------------------------------------------------------------------------------------------

def test_duplicates_keep_one_per_class_the_highest_score():
    boxes = np.tile([[1.0, 2.0, 4.0, 2.0, 0.5]], (6, 1))
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.7, 0.1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    kept = nms_rotated(boxes, scores, labels, 0.5)
    assert kept.tolist() == [1, 3]  # equal scores: lower index first
    assert kept.dtype == np.int64


def test_ties_in_score_keep_the_lower_index():
    boxes = np.tile([[0.0, 0.0, 2.0, 2.0, 0.0]], (4, 1))
    kept = nms_rotated(boxes, np.full(4, 0.5), np.zeros(4, np.int64), 0.3)
    assert kept.tolist() == [0]


def test_labels_never_suppress_each_other():
    boxes = np.tile([[0.0, 0.0, 2.0, 2.0, 0.0]], (3, 1))
    kept = nms_rotated(boxes, np.array([0.3, 0.2, 0.1]), np.array([4, 2, 7]), 0.0)
    assert kept.tolist() == [0, 1, 2]


def test_threshold_is_strict_and_output_sorted_by_score():
    boxes = np.array([[0.0, 0.0, 2.0, 2.0, 0.0],  # IoU with the next: 1/3
                      [1.0, 0.0, 2.0, 2.0, 0.0],
                      [10.0, 0.0, 2.0, 2.0, 0.0]])
    scores = np.array([0.5, 0.9, 0.7])
    labels = np.zeros(3, np.int64)
    assert nms_rotated(boxes, scores, labels, 1.0 / 3.0).tolist() == [1, 2, 0]  # 1/3 is not > 1/3
    assert nms_rotated(boxes, scores, labels, 0.3).tolist() == [1, 2]


def test_max_out_caps_the_result():
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 40, 30.0)
    scores, labels = rng.random(40), rng.integers(0, 3, 40)
    full = nms_rotated(boxes, scores, labels, 0.2)
    assert nms_rotated(boxes, scores, labels, 0.2, max_out=5).tolist() == full[:5].tolist()
    assert nms_rotated(boxes, scores, labels, 0.2, max_out=0).shape == (0,)
    assert nms_rotated(boxes, scores, labels, 0.2, max_out=10_000).tolist() == full.tolist()


def test_empty_input_gives_empty_int64():
    kept = nms_rotated(np.zeros((0, 5)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64
    kept = nms_center_distance(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64), 1.0)
    assert kept.shape == (0,) and kept.dtype == np.int64


def test_nan_rows_are_dropped_and_suppress_nothing():
    boxes = np.tile([[0.0, 0.0, 2.0, 2.0, 0.0]], (5, 1))
    boxes[1, 4] = np.nan  # NaN box with the best score
    boxes[3, 0] = np.inf
    scores = np.array([0.5, 0.99, np.nan, 0.98, 0.4])
    labels = np.zeros(5, np.int64)
    assert nms_rotated(boxes, scores, labels, 0.5).tolist() == [0]
    assert nms_rotated_reference(boxes, scores, labels, 0.5).tolist() == [0]
    everything_nan = nms_rotated(boxes, np.full(5, np.nan), labels, 0.5)
    assert everything_nan.shape == (0,)


def test_zero_size_boxes_are_kept_and_suppress_nothing():
    boxes = np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]])
    kept = nms_rotated(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, np.int64), 0.0)
    assert kept.tolist() == [0, 1, 2]


@SETTINGS
@given(clustered_boxes(max_boxes=14), st.data())
def test_nms_kernel_matches_reference(boxes, data):
    n = boxes.shape[0]
    score = st.sampled_from([0.1, 0.3, 0.5, 0.7, np.nan])  # few values: many ties
    scores = np.array(data.draw(st.lists(score, min_size=n, max_size=n)))
    labels = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64)
    threshold = data.draw(st.sampled_from([0.0, 0.1, 0.45, 0.8]))
    max_out = data.draw(st.none() | st.integers(0, n))
    iou = rotated_iou_bev_reference(boxes, boxes)
    assume(np.all(np.abs(iou - threshold) > 1e-6))  # no decision may hinge on rounding
    assert (nms_rotated(boxes, scores, labels, threshold, max_out).tolist()
            == nms_rotated_reference(boxes, scores, labels, threshold, max_out).tolist())


def test_nms_baseline_matches_kernel():
    rng = np.random.default_rng(5)
    centres = rng.uniform(-20, 20, (30, 2))
    objects = np.column_stack([centres, rng.uniform(1, 5, (30, 2)), rng.uniform(-3, 3, 30)])  # (30, 5)
    boxes = np.repeat(objects, 5, axis=0)  # five jittered detections of each
    boxes += rng.normal(0, [0.3, 0.3, 0.1, 0.1, 0.1], boxes.shape)
    scores, labels = rng.random(150), rng.integers(0, 4, 150)
    for threshold in (0.1, 0.5):
        expected = nms_rotated(boxes, scores, labels, threshold)
        assert nms_rotated_baseline(boxes, scores, labels, threshold).tolist() == expected.tolist()
        assert nms_rotated_reference(boxes, scores, labels, threshold).tolist() == expected.tolist()


@pytest.mark.parametrize(('kwargs', 'message'), [
    ({'scores': np.zeros(2)}, r'scores: expected shape \(3,\)'),
    ({'labels': np.zeros(3)}, r'labels: expected an integer array, got dtype float64'),
    ({'labels': np.zeros((3, 1), np.int64)}, r'labels: expected shape \(3,\)'),
    ({'iou_threshold': 1.5}, r'iou_threshold: expected a finite value \[0, 1\], got 1.5'),
    ({'iou_threshold': float('nan')}, r'iou_threshold: expected a finite value'),
    ({'max_out': -1}, r'max_out: expected None or an integer >= 0, got -1'),
    ({'max_out': 2.0}, r'max_out: expected None or an integer'),
    ({'boxes': np.zeros((3, 7))}, r'boxes: expected shape \(N, 5\)'),
])
def test_nms_rejects_bad_arguments(kwargs, message):
    arguments = {'boxes': np.zeros((3, 5)), 'scores': np.zeros(3), 'labels': np.zeros(3, np.int64),
                 'iou_threshold': 0.5, 'max_out': None}
    arguments.update(kwargs)
    with pytest.raises(GeometryError, match=message):
        nms_rotated(**arguments)


# --------------------------------------------------------------------------------------------------
# Circle NMS on centre distance
# --------------------------------------------------------------------------------------------------

def test_circle_nms_suppresses_within_radius_per_label():
    centers = np.array([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [0.2, 0.0], [5.0, 5.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1])
    labels = np.array([0, 0, 0, 1, 0])
    # 0 keeps, 1 (0.5 away) goes, 2 (exactly 1.0 away: inclusive) goes; 3 has its own label
    assert nms_center_distance(centers, scores, labels, 1.0).tolist() == [3, 0, 4]
    # 1 (0.5 from 0) goes; 2 is 1.0 from 0 and only 0.5 from 1, which, suppressed, suppresses nothing
    assert nms_center_distance(centers, scores, labels, 0.6).tolist() == [3, 0, 2, 4]
    assert nms_center_distance(centers, scores, labels, 1.0, max_out=2).tolist() == [3, 0]


def test_circle_nms_drops_nan_rows():
    centers = np.array([[0.0, 0.0], [np.nan, 0.0], [0.1, 0.0]])
    scores = np.array([0.5, 0.9, np.nan])
    assert nms_center_distance(centers, scores, np.zeros(3, np.int64), 1.0).tolist() == [0]


@SETTINGS
@given(st.data())
def test_circle_nms_kernel_matches_reference(data):
    n = data.draw(st.integers(0, 25))
    near = st.floats(-4.0, 4.0)
    rows = data.draw(st.lists(st.tuples(near, near), min_size=n, max_size=n))
    centers = np.array(rows, np.float64).reshape(n, 2)
    scores = np.array(data.draw(st.lists(st.sampled_from([0.2, 0.4, 0.6, np.nan]), min_size=n, max_size=n)))
    labels = np.array(data.draw(st.lists(st.integers(-1, 2), min_size=n, max_size=n)), np.int64)
    radius = data.draw(st.floats(0.0, 3.0))
    max_out = data.draw(st.none() | st.integers(0, 30))
    expected = nms_center_distance_reference(centers, scores, labels, radius, max_out).tolist()
    assert nms_center_distance(centers, scores, labels, radius, max_out).tolist() == expected
    assert nms_center_distance_baseline(centers, scores, labels, radius, max_out).tolist() == expected


def test_circle_nms_rejects_bad_arguments():
    with pytest.raises(GeometryError, match=r'centers: expected shape \(N, 2\)'):
        nms_center_distance(np.zeros((3, 3)), np.zeros(3), np.zeros(3, np.int64), 1.0)
    with pytest.raises(GeometryError, match=r'radius: expected a finite value >= 0, got -1.0'):
        nms_center_distance(np.zeros((3, 2)), np.zeros(3), np.zeros(3, np.int64), -1.0)
