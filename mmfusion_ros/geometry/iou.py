"""Overlap of rotated boxes in bird's-eye view, and the non-maximum suppression built on it.

Conventions
-----------
- A BEV box is one row ``[x, y, length, width, yaw]`` in metres and radians: centre ``(x, y)``,
  ``length`` along the heading, ``width`` across it, ``yaw`` the heading counter-clockwise from +x.
  Any yaw is accepted (no wrapping needed); a box and the same box turned by pi are the same set.
- A box with a non-positive or non-finite length or width, or a non-finite centre or yaw, is
  *degenerate*: its IoU with every box, itself included, is 0 (never NaN).
- Intersections are exact up to rounding: box ``a`` is clipped by the four half-planes of box ``b``
  (Sutherland-Hodgman, in ``b``'s own frame, where the half-planes are axis-aligned) and the clipped
  polygon's area comes from the shoelace formula. Cheaper tests go first: circumscribed circles,
  separating axes, and containment of one box in the other. Edges that only touch give 0.
  Arithmetic is float64; IoU matrices are returned as float32.
- NMS is greedy and class-aware: candidates are taken in descending score, ties broken by the lower
  input index, and a kept box suppresses the later boxes *of its own label* whose IoU with it is
  greater than ``iou_threshold`` (as torchvision's ``nms``). Rows with a NaN score or a non-finite
  box value are dropped before anything else: they are neither kept nor suppress anything. Kept
  boxes are returned as int64 indices into the input, in descending score (ties: lower index first).
  A degenerate (zero-size) but finite box overlaps nothing, so it is kept and suppresses nothing.
- ``nms_center_distance`` is CenterPoint's circle NMS: the same greedy order, a kept box suppresses
  later boxes of its label whose centre lies within ``radius`` metres (``distance <= radius``).

Each numba kernel sits beside its reference (plain numpy / Python loops, slow but obviously right),
and ``*_baseline`` are the fastest straightforward vectorised torch versions (float32, batched
clipping of the pairs whose circles overlap; NMS greedy over a precomputed matrix), for the
benchmark only. The IoU kernel runs rows of the matrix in parallel; the NMS kernels run labels in
parallel and compute IoU lazily, only between a kept box and the later live boxes of its label. The per-pair routine ``_pair_iou`` is plain Python over scalars and array indexing,
so the same source compiles for the CPU here and for CUDA in ``geometry/cuda/iou.py``.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from mmfusion_ros.errors import GeometryError

__all__ = [
    'nms_center_distance',
    'nms_center_distance_baseline',
    'nms_center_distance_reference',
    'nms_rotated',
    'nms_rotated_baseline',
    'nms_rotated_reference',
    'rotated_iou_bev',
    'rotated_iou_bev_baseline',
    'rotated_iou_bev_reference',
]

# Columns of the per-box parameter table the kernels read (one row per box).
_X, _Y, _COS, _SIN, _HALF_L, _HALF_W, _AREA, _RADIUS = range(8)
_N_PARAMS = 8
# Sutherland-Hodgman scratch: clipping an n-gon by one half-plane gives at most n + n // 2 vertices
# even when rounding makes the polygon slightly non-convex, so 4 -> 6 -> 9 -> 13 -> 19 <= 24.
_CLIP_CAPACITY = 24


# --------------------------------------------------------------------------------------------------
# Input validation (shared with geometry/cuda/iou.py)
# --------------------------------------------------------------------------------------------------

def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    """``boxes`` as a C-contiguous float64 (N, 5) array, or a GeometryError naming the argument."""
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise GeometryError(f'{name}: expected a numeric (N, 5) array [x, y, length, width, yaw]') from err
    if array.ndim != 2 or array.shape[1] != 5:
        raise GeometryError(f'{name}: expected shape (N, 5) [x, y, length, width, yaw], got {array.shape}')
    return np.ascontiguousarray(array)


def _as_scores(scores: np.ndarray, n: int) -> np.ndarray:
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise GeometryError('scores: expected a numeric (N,) array') from err
    if array.shape != (n,):
        raise GeometryError(f'scores: expected shape ({n},) to match the boxes, got {array.shape}')
    return array


def _as_labels(labels: np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,):
        raise GeometryError(f'labels: expected shape ({n},) to match the boxes, got {array.shape}')
    if array.dtype.kind not in 'iu':
        raise GeometryError(f'labels: expected an integer array, got dtype {array.dtype}')
    return array.astype(np.int64, copy=False)


def _check_threshold(value: float, name: str, upper: float | None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise GeometryError(f'{name}: expected a number, got {value!r}') from err
    if not math.isfinite(number) or number < 0.0 or (upper is not None and number > upper):
        bound = f'[0, {upper:g}]' if upper is not None else '>= 0'
        raise GeometryError(f'{name}: expected a finite value {bound}, got {value!r}')
    return number


def _check_max_out(max_out: int | None, n: int) -> int:
    """The most boxes NMS may return: ``max_out`` or, for None, all ``n``."""
    if max_out is None:
        return n
    if isinstance(max_out, bool) or not isinstance(max_out, (int, np.integer)) or max_out < 0:
        raise GeometryError(f'max_out: expected None or an integer >= 0, got {max_out!r}')
    return min(int(max_out), n)


def _greedy_order(scores: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Indices of the usable rows, by descending score and then ascending index: (M,) int64."""
    index = np.flatnonzero(usable)
    return index[np.lexsort((index, -scores[index]))]


# --------------------------------------------------------------------------------------------------
# Per-box parameters and the per-pair routine (compiled for CPU here, for CUDA in cuda/iou.py)
# --------------------------------------------------------------------------------------------------

@njit(cache=True)
def _box_params(boxes):
    """(N, 5) boxes -> (N, 8) [x, y, cos, sin, half_length, half_width, area, radius]; all 0 if degenerate."""
    n = boxes.shape[0]
    params = np.zeros((n, _N_PARAMS), np.float64)
    for i in range(n):
        x, y, length, width, yaw = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], boxes[i, 4]
        finite = (math.isfinite(x) and math.isfinite(y) and math.isfinite(length)
                  and math.isfinite(width) and math.isfinite(yaw))
        if not finite or length <= 0.0 or width <= 0.0:
            continue  # degenerate: area 0 marks it, every IoU with it is 0
        params[i, _X] = x
        params[i, _Y] = y
        params[i, _COS] = math.cos(yaw)
        params[i, _SIN] = math.sin(yaw)
        params[i, _HALF_L] = 0.5 * length
        params[i, _HALF_W] = 0.5 * width
        params[i, _AREA] = length * width
        params[i, _RADIUS] = 0.5 * math.sqrt(length * length + width * width)  # circumscribed circle
    return params


def _pair_iou(pa, i, pb, j, xs, ys):
    """IoU of box ``pa[i]`` with box ``pb[j]`` (rows of ``_box_params``); xs, ys (2, >= 24) scratch.

    Plain Python on purpose: compiled by numba for the CPU (``_pair_iou_cpu``) and as a CUDA device
    function, from this one source. Steps, cheapest first:

    1. separating axes: the four edge normals of the two rectangles (exact for convex polygons;
       touching counts as separated, area 0);
    2. containment of one rectangle in the other, read off the same projections;
    3. otherwise box a's corners, written in b's frame where b is ``|u| <= l_b / 2, |v| <= w_b / 2``,
       are clipped by those four axis-aligned half-planes in turn (Sutherland-Hodgman, ping-pong
       between the two rows of the scratch), and the shoelace formula gives the area.
    """
    area_a = pa[i, _AREA]
    area_b = pb[j, _AREA]
    if area_a <= 0.0 or area_b <= 0.0:
        return 0.0
    dx = pa[i, _X] - pb[j, _X]
    dy = pa[i, _Y] - pb[j, _Y]
    cos_a = pa[i, _COS]
    sin_a = pa[i, _SIN]
    cos_b = pb[j, _COS]
    sin_b = pb[j, _SIN]
    hl_a = pa[i, _HALF_L]
    hw_a = pa[i, _HALF_W]
    hl_b = pb[j, _HALF_L]
    hw_b = pb[j, _HALF_W]
    # a's heading relative to b's
    cos_r = cos_a * cos_b + sin_a * sin_b
    sin_r = sin_a * cos_b - cos_a * sin_b
    abs_c = abs(cos_r)
    abs_s = abs(sin_r)
    # a's centre in b's frame, and a's half extents along b's axes
    u = cos_b * dx + sin_b * dy
    v = -sin_b * dx + cos_b * dy
    reach_au = abs_c * hl_a + abs_s * hw_a
    reach_av = abs_s * hl_a + abs_c * hw_a
    if abs(u) >= hl_b + reach_au or abs(v) >= hw_b + reach_av:
        return 0.0
    # b's centre in a's frame, and b's half extents along a's axes
    u_ba = -(cos_a * dx + sin_a * dy)
    v_ba = sin_a * dx - cos_a * dy
    reach_bu = abs_c * hl_b + abs_s * hw_b
    reach_bv = abs_s * hl_b + abs_c * hw_b
    if abs(u_ba) >= hl_a + reach_bu or abs(v_ba) >= hw_a + reach_bv:
        return 0.0
    if abs(u) + reach_au <= hl_b and abs(v) + reach_av <= hw_b:
        inter = area_a  # a inside b
    elif abs(u_ba) + reach_bu <= hl_a and abs(v_ba) + reach_bv <= hw_a:
        inter = area_b  # b inside a
    else:
        # a's corners in b's frame, counter-clockwise: (+l, +w), (-l, +w), (-l, -w), (+l, -w)
        lx = cos_r * hl_a
        ly = sin_r * hl_a
        wx = -sin_r * hw_a
        wy = cos_r * hw_a
        xs[0, 0] = u + lx + wx
        ys[0, 0] = v + ly + wy
        xs[0, 1] = u - lx + wx
        ys[0, 1] = v - ly + wy
        xs[0, 2] = u - lx - wx
        ys[0, 2] = v - ly - wy
        xs[0, 3] = u + lx - wx
        ys[0, 3] = v + ly - wy
        n = 4
        src = 0
        for plane in range(4):
            # plane 0: u <= hl_b, 1: -u <= hl_b, 2: v <= hw_b, 3: -v <= hw_b
            sign = 1.0 if plane % 2 == 0 else -1.0
            bound = hl_b if plane < 2 else hw_b
            dst = 1 - src
            m = 0
            # signed margin of the last vertex, then walk the edges (k_prev -> k)
            if plane < 2:
                d_prev = bound - sign * xs[src, n - 1]
            else:
                d_prev = bound - sign * ys[src, n - 1]
            k_prev = n - 1
            for k in range(n):
                if plane < 2:
                    d_here = bound - sign * xs[src, k]
                else:
                    d_here = bound - sign * ys[src, k]
                if (d_prev >= 0.0) != (d_here >= 0.0):  # the edge crosses: d_prev - d_here != 0
                    t = d_prev / (d_prev - d_here)
                    xs[dst, m] = xs[src, k_prev] + t * (xs[src, k] - xs[src, k_prev])
                    ys[dst, m] = ys[src, k_prev] + t * (ys[src, k] - ys[src, k_prev])
                    m += 1
                if d_here >= 0.0:
                    xs[dst, m] = xs[src, k]
                    ys[dst, m] = ys[src, k]
                    m += 1
                d_prev = d_here
                k_prev = k
            if m < 3:
                return 0.0
            n = m
            src = dst
        # shoelace about the first vertex (counter-clockwise in, counter-clockwise out)
        x0 = xs[src, 0]
        y0 = ys[src, 0]
        twice_area = 0.0
        for k in range(1, n - 1):
            twice_area += ((xs[src, k] - x0) * (ys[src, k + 1] - y0)
                           - (xs[src, k + 1] - x0) * (ys[src, k] - y0))
        inter = 0.5 * twice_area
        if inter <= 0.0:
            return 0.0
        smaller = area_a if area_a < area_b else area_b
        if inter > smaller:
            inter = smaller
    return inter / (area_a + area_b - inter)


_pair_iou_cpu = njit(cache=True)(_pair_iou)


# --------------------------------------------------------------------------------------------------
# Rotated IoU matrix
# --------------------------------------------------------------------------------------------------

def _corners_reference(box: np.ndarray) -> list[tuple[float, float]]:
    """The four corners of one box in the world frame, counter-clockwise."""
    x, y, length, width, yaw = (float(v) for v in box)
    c, s = math.cos(yaw), math.sin(yaw)
    corners = []
    for el, ew in ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5)):
        ox, oy = el * length, ew * width
        corners.append((x + c * ox - s * oy, y + s * ox + c * oy))
    return corners


def _is_degenerate_reference(box: np.ndarray) -> bool:
    return not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0


def _convex_intersection_area_reference(subject: list, clip: list) -> float:
    """Area of two counter-clockwise convex polygons' intersection: Sutherland-Hodgman in world frame."""
    polygon = list(subject)
    for k in range(len(clip)):
        (ex0, ey0), (ex1, ey1) = clip[k], clip[(k + 1) % len(clip)]

        def side(p: tuple[float, float]) -> float:  # > 0: left of the clip edge, i.e. inside
            return (ex1 - ex0) * (p[1] - ey0) - (ey1 - ey0) * (p[0] - ex0)

        clipped = []
        for h in range(len(polygon)):
            p, q = polygon[h], polygon[(h + 1) % len(polygon)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                clipped.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                clipped.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        polygon = clipped
        if len(polygon) < 3:
            return 0.0
    twice = sum(polygon[h][0] * polygon[(h + 1) % len(polygon)][1]
                - polygon[(h + 1) % len(polygon)][0] * polygon[h][1] for h in range(len(polygon)))
    return max(0.0, 0.5 * twice)


def rotated_iou_bev_reference(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Reference for ``rotated_iou_bev``: a Python loop over pairs, clipping in the world frame."""
    a = _as_boxes(boxes_a, 'boxes_a')  # (A, 5)
    b = _as_boxes(boxes_b, 'boxes_b')  # (B, 5)
    out = np.zeros((a.shape[0], b.shape[0]), np.float32)  # (A, B)
    for i in range(a.shape[0]):
        if _is_degenerate_reference(a[i]):
            continue
        for j in range(b.shape[0]):
            if _is_degenerate_reference(b[j]):
                continue
            area_a, area_b = a[i, 2] * a[i, 3], b[j, 2] * b[j, 3]
            inter = _convex_intersection_area_reference(_corners_reference(a[i]), _corners_reference(b[j]))
            inter = min(inter, area_a, area_b)
            out[i, j] = inter / (area_a + area_b - inter)
    return out


@njit(parallel=True, cache=True)
def _rotated_iou_kernel(params_a, params_b):
    """(A, 8), (B, 8) box parameters -> (A, B) float32 IoU; rows in parallel."""
    n_a = params_a.shape[0]
    n_b = params_b.shape[0]
    assert params_a.shape[1] == _N_PARAMS and params_b.shape[1] == _N_PARAMS, 'expected (N, 8) box parameters'
    out = np.zeros((n_a, n_b), np.float32)
    for i in prange(n_a):
        if params_a[i, _AREA] <= 0.0:
            continue
        xs = np.empty((2, _CLIP_CAPACITY))  # Sutherland-Hodgman ping-pong buffers
        ys = np.empty((2, _CLIP_CAPACITY))
        xa = params_a[i, _X]
        ya = params_a[i, _Y]
        ra = params_a[i, _RADIUS]
        for j in range(n_b):
            # cheap circumscribed-circle reject before the call; degenerate b is rejected inside it
            dx = xa - params_b[j, _X]
            dy = ya - params_b[j, _Y]
            reach = ra + params_b[j, _RADIUS]
            if dx * dx + dy * dy >= reach * reach:
                continue
            out[i, j] = _pair_iou_cpu(params_a, i, params_b, j, xs, ys)
    return out


def rotated_iou_bev(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise BEV IoU of rotated boxes: (A, 5), (B, 5) ``[x, y, length, width, yaw]`` -> (A, B) float32.

    Degenerate boxes (non-positive or non-finite size, non-finite centre or yaw) have IoU 0 with
    everything. Raises GeometryError for arrays not shaped (N, 5).
    """
    a = _as_boxes(boxes_a, 'boxes_a')  # (A, 5)
    b = _as_boxes(boxes_b, 'boxes_b')  # (B, 5)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]), np.float32)
    return _rotated_iou_kernel(_box_params(a), _box_params(b))


# --------------------------------------------------------------------------------------------------
# Class-aware greedy NMS on rotated IoU
# --------------------------------------------------------------------------------------------------

def _nms_inputs(boxes, scores, labels, threshold, threshold_name, upper, max_out, width):
    """Validated arrays, the threshold, the output cap and the greedy order of the usable rows."""
    if width == 5:
        rows = _as_boxes(boxes, 'boxes')  # (N, 5)
    else:
        rows = _as_centers(boxes)  # (N, 2)
    n = rows.shape[0]
    score = _as_scores(scores, n)  # (N,)
    label = _as_labels(labels, n)  # (N,)
    threshold = _check_threshold(threshold, threshold_name, upper)
    limit = _check_max_out(max_out, n)
    usable = np.isfinite(rows).all(axis=1) & ~np.isnan(score)  # NaN / inf rows are dropped
    return rows, score, label, threshold, limit, _greedy_order(score, usable)


def _as_centers(centers: np.ndarray) -> np.ndarray:
    try:
        array = np.asarray(centers, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise GeometryError('centers: expected a numeric (N, 2) array [x, y]') from err
    if array.ndim != 2 or array.shape[1] != 2:
        raise GeometryError(f'centers: expected shape (N, 2) [x, y], got {array.shape}')
    return np.ascontiguousarray(array)


def _class_segments(order: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regroup the greedy order by label (stable): (M,) rows, (C + 1,) segment starts."""
    grouped = order[np.argsort(labels[order], kind='stable')]  # per label, still in greedy order
    sorted_labels = labels[grouped]
    starts = np.flatnonzero(np.diff(sorted_labels)) + 1
    bounds = np.concatenate(([0], starts, [grouped.shape[0]])).astype(np.int64)
    return grouped, bounds


def _by_score(kept: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """Kept input indices in descending score, ties by lower index, at most ``limit``: (K,) int64."""
    kept = kept.astype(np.int64, copy=False)
    return kept[np.lexsort((kept, -scores[kept]))][:limit]


def nms_rotated_reference(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                          iou_threshold: float, max_out: int | None = None) -> np.ndarray:
    """Reference for ``nms_rotated``: the textbook greedy loop with the reference IoU."""
    rows, score, label, threshold, limit, order = _nms_inputs(
        boxes, scores, labels, iou_threshold, 'iou_threshold', 1.0, max_out, 5)
    return _greedy_reference(order, label, limit, lambda i, j: rotated_iou_bev_reference(
        rows[i:i + 1], rows[j:j + 1])[0, 0] > threshold)


def _greedy_reference(order: np.ndarray, label: np.ndarray, limit: float,
                      suppresses: Callable[[int, int], bool]) -> np.ndarray:
    """The textbook greedy loop: walk ``order``; a kept box suppresses later live boxes of its label
    for which ``suppresses(kept, later)`` holds. Returns the kept indices in walking order."""
    kept: list[int] = []
    suppressed = np.zeros(label.shape[0], bool)
    for position, i in enumerate(order):
        if len(kept) == limit:
            break
        if suppressed[i]:
            continue
        kept.append(int(i))
        for j in order[position + 1:]:
            if label[j] == label[i] and not suppressed[j] and suppresses(i, j):
                suppressed[j] = True
    return np.asarray(kept, np.int64)


@njit(parallel=True, cache=True)
def _nms_rotated_kernel(params, bounds, iou_threshold, limit):
    """Greedy suppression per label segment, labels in parallel.

    params (M, 8): box parameters grouped by label, each group in greedy order; bounds (C + 1,) the
    group starts. IoU is computed lazily, only between a kept box and later live boxes of its group.
    Returns (M,) bool: kept.
    """
    n_rows = params.shape[0]
    n_groups = bounds.shape[0] - 1
    assert params.shape[1] == _N_PARAMS, 'params: expected (M, 8) box parameters'
    assert bounds[0] == 0 and bounds[n_groups] == n_rows, 'bounds: must cover the rows from 0 to M'
    keep = np.zeros(n_rows, np.bool_)
    for g in prange(n_groups):
        lo = bounds[g]
        hi = bounds[g + 1]
        suppressed = np.zeros(hi - lo, np.bool_)
        xs = np.empty((2, _CLIP_CAPACITY))  # Sutherland-Hodgman ping-pong buffers
        ys = np.empty((2, _CLIP_CAPACITY))
        kept = 0
        for i in range(lo, hi):
            if suppressed[i - lo]:
                continue
            keep[i] = True
            kept += 1
            if kept >= limit:  # no group can place more than `limit` boxes in the output
                break
            xi = params[i, _X]
            yi = params[i, _Y]
            ri = params[i, _RADIUS]
            for j in range(i + 1, hi):
                if suppressed[j - lo]:
                    continue
                dx = xi - params[j, _X]
                dy = yi - params[j, _Y]
                reach = ri + params[j, _RADIUS]
                if dx * dx + dy * dy >= reach * reach:
                    continue
                if _pair_iou_cpu(params, i, params, j, xs, ys) > iou_threshold:
                    suppressed[j - lo] = True
    return keep


def nms_rotated(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_out: int | None = None) -> np.ndarray:
    """Class-aware greedy NMS on rotated BEV IoU.

    boxes (N, 5) ``[x, y, length, width, yaw]``, scores (N,), labels (N,) integers. A kept box
    suppresses later boxes of the same label with IoU > ``iou_threshold`` (in [0, 1]). Returns (K,)
    int64 indices into the input, descending score, ties by lower index, at most ``max_out``
    (None: no cap). Rows with a NaN score or a non-finite box value are dropped (never kept, never
    suppress); finite zero-size boxes overlap nothing and are kept.
    """
    rows, score, label, threshold, limit, order = _nms_inputs(
        boxes, scores, labels, iou_threshold, 'iou_threshold', 1.0, max_out, 5)
    if order.shape[0] == 0 or limit == 0:
        return np.zeros(0, np.int64)
    grouped, bounds = _class_segments(order, label)  # (M,), (C + 1,)
    keep = _nms_rotated_kernel(_box_params(rows[grouped]), bounds, threshold, limit)
    return _by_score(grouped[keep], score, limit)


# --------------------------------------------------------------------------------------------------
# Class-aware greedy NMS on centre distance (CenterPoint's circle NMS)
# --------------------------------------------------------------------------------------------------

def nms_center_distance_reference(centers: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                                  radius: float, max_out: int | None = None) -> np.ndarray:
    """Reference for ``nms_center_distance``: the textbook greedy loop."""
    rows, score, label, radius, limit, order = _nms_inputs(
        centers, scores, labels, radius, 'radius', None, max_out, 2)

    def within_radius(i: int, j: int) -> bool:
        dx, dy = rows[i] - rows[j]
        return dx * dx + dy * dy <= radius * radius

    return _greedy_reference(order, label, limit, within_radius)


@njit(parallel=True, cache=True)
def _nms_center_kernel(centers, bounds, radius, limit):
    """centers (M, 2) grouped by label, each group in greedy order; bounds (C + 1,) -> (M,) bool kept."""
    n_rows = centers.shape[0]
    n_groups = bounds.shape[0] - 1
    assert bounds[0] == 0 and bounds[n_groups] == n_rows, 'bounds: must cover the rows from 0 to M'
    radius_sq = radius * radius
    keep = np.zeros(n_rows, np.bool_)
    for g in prange(n_groups):
        lo = bounds[g]
        hi = bounds[g + 1]
        suppressed = np.zeros(hi - lo, np.bool_)
        kept = 0
        for i in range(lo, hi):
            if suppressed[i - lo]:
                continue
            keep[i] = True
            kept += 1
            if kept >= limit:
                break
            xi = centers[i, 0]
            yi = centers[i, 1]
            for j in range(i + 1, hi):
                dx = xi - centers[j, 0]
                dy = yi - centers[j, 1]
                if dx * dx + dy * dy <= radius_sq:
                    suppressed[j - lo] = True
    return keep


def nms_center_distance(centers: np.ndarray, scores: np.ndarray, labels: np.ndarray, radius: float,
                        max_out: int | None = None) -> np.ndarray:
    """Class-aware greedy circle NMS: suppress later boxes of the same label within ``radius`` metres.

    centers (N, 2) BEV ``[x, y]``, scores (N,), labels (N,) integers, ``radius >= 0`` (inclusive:
    distance <= radius suppresses). Returns (K,) int64 input indices, descending score, ties by lower
    index, at most ``max_out``. Rows with a NaN score or a non-finite centre are dropped.
    """
    rows, score, label, radius, limit, order = _nms_inputs(
        centers, scores, labels, radius, 'radius', None, max_out, 2)
    if order.shape[0] == 0 or limit == 0:
        return np.zeros(0, np.int64)
    grouped, bounds = _class_segments(order, label)  # (M,), (C + 1,)
    keep = _nms_center_kernel(np.ascontiguousarray(rows[grouped]), bounds, radius, limit)
    return _by_score(grouped[keep], score, limit)


# --------------------------------------------------------------------------------------------------
# Baselines for the benchmark: the fastest straightforward vectorised torch versions
# --------------------------------------------------------------------------------------------------

def _iou_pairs_torch(a, b, ia, ib):
    """IoU of the box pairs (a[ia], b[ib]) by batched Sutherland-Hodgman: torch, (P,) in a's dtype.

    a (A, 5), b (B, 5) float tensors of non-degenerate boxes; ia, ib (P,) int64 pair indices.
    Every polygon lives in a fixed-capacity slot array with a vertex count per pair; each clip emits
    up to two candidates per edge and compacts them with a cumulative sum.
    """
    import torch

    n_pairs = ia.shape[0]
    pa, pb = a[ia], b[ib]  # (P, 5) each
    cos_b, sin_b = torch.cos(pb[:, 4]), torch.sin(pb[:, 4])
    dx, dy = pa[:, 0] - pb[:, 0], pa[:, 1] - pb[:, 1]
    u = cos_b * dx + sin_b * dy  # a's centre in b's frame
    v = -sin_b * dx + cos_b * dy
    rel = pa[:, 4] - pb[:, 4]
    cos_r, sin_r = torch.cos(rel), torch.sin(rel)
    signs = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=a.dtype)  # (4, 2) CCW
    ex = signs[None, :, 0] * (0.5 * pa[:, 2:3])  # (P, 4) corner offsets in a's frame
    ey = signs[None, :, 1] * (0.5 * pa[:, 3:4])
    poly = torch.stack((u[:, None] + cos_r[:, None] * ex - sin_r[:, None] * ey,
                        v[:, None] + sin_r[:, None] * ex + cos_r[:, None] * ey), dim=-1)  # (P, 4, 2)
    count = torch.full((n_pairs,), 4, dtype=torch.int64)
    bounds = (0.5 * pb[:, 2], 0.5 * pb[:, 2], 0.5 * pb[:, 3], 0.5 * pb[:, 3])
    rows = torch.arange(n_pairs)[:, None]
    for plane in range(4):
        axis, sign = plane // 2, (1.0 if plane % 2 == 0 else -1.0)
        capacity = poly.shape[1]
        live, nxt = _live_and_next_torch(poly, count)  # (P, C), (P, C, 2)
        d_here = bounds[plane][:, None] - sign * poly[..., axis]  # (P, C)
        d_next = bounds[plane][:, None] - sign * nxt[..., axis]
        inside, inside_next = d_here >= 0, d_next >= 0
        crossing = live & (inside != inside_next)
        t = torch.where(crossing, d_here / torch.where(crossing, d_here - d_next, 1.0), 0.0)
        cut = poly + t[..., None] * (nxt - poly)  # (P, C, 2)
        candidates = torch.stack((poly, cut), dim=2).reshape(n_pairs, 2 * capacity, 2)
        emitted = torch.stack((live & inside, crossing), dim=2).reshape(n_pairs, 2 * capacity)
        target = torch.cumsum(emitted, dim=1) - 1  # (P, 2C) destination slot
        count = emitted.sum(dim=1)
        width = max(int(count.max()) if n_pairs else 0, 1)
        compact = torch.zeros((n_pairs, width, 2), dtype=a.dtype)
        compact[rows.expand_as(emitted)[emitted], target[emitted]] = candidates[emitted]
        poly = compact
    live, nxt = _live_and_next_torch(poly, count)
    cross = poly[..., 0] * nxt[..., 1] - nxt[..., 0] * poly[..., 1]
    inter = (0.5 * torch.where(live, cross, 0.0).sum(dim=1)).clamp(min=0.0)
    area_a, area_b = pa[:, 2] * pa[:, 3], pb[:, 2] * pb[:, 3]
    inter = torch.minimum(inter, torch.minimum(area_a, area_b))
    return inter / (area_a + area_b - inter)


def _live_and_next_torch(poly, count):
    """Which slots of poly (P, C, 2) hold vertices (P, C), and each vertex's successor (P, C, 2)."""
    import torch

    slot = torch.arange(poly.shape[1])[None, :]  # (1, C)
    following = torch.remainder(slot + 1, count.clamp(min=1)[:, None])  # (P, C), wraps at the count
    return slot < count[:, None], torch.gather(poly, 1, following[..., None].expand(-1, -1, 2))


def _candidate_pairs_torch(a, b, same_label=None):
    """Pairs whose circumscribed circles overlap, both boxes non-degenerate: (P,), (P,) int64."""
    import torch

    ok_a = torch.isfinite(a).all(dim=1) & (a[:, 2] > 0) & (a[:, 3] > 0)
    ok_b = torch.isfinite(b).all(dim=1) & (b[:, 2] > 0) & (b[:, 3] > 0)
    radius_a = 0.5 * torch.hypot(a[:, 2], a[:, 3])
    radius_b = 0.5 * torch.hypot(b[:, 2], b[:, 3])
    distance = torch.cdist(a[:, :2], b[:, :2], compute_mode='donot_use_mm_for_euclid_dist')  # (A, B)
    near = distance < radius_a[:, None] + radius_b[None, :]
    near &= ok_a[:, None] & ok_b[None, :]
    if same_label is not None:
        near &= same_label
    return near.nonzero(as_tuple=True)


def rotated_iou_bev_baseline(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Benchmark baseline for ``rotated_iou_bev``: torch float32, batched clipping of the candidate pairs.

    Candidate pairs are those whose circumscribed circles overlap (one (A, B) distance test), and
    only those are clipped; float32 because it is torch's faster precision here (about 1e-6 off).
    """
    import torch

    a = torch.from_numpy(_as_boxes(boxes_a, 'boxes_a')).to(torch.float32)  # (A, 5)
    b = torch.from_numpy(_as_boxes(boxes_b, 'boxes_b')).to(torch.float32)  # (B, 5)
    out = torch.zeros((a.shape[0], b.shape[0]), dtype=torch.float32)
    if a.shape[0] and b.shape[0]:
        ia, ib = _candidate_pairs_torch(a, b)
        out[ia, ib] = _iou_pairs_torch(a, b, ia, ib)
    return out.numpy()


def _greedy_from_matrix(overlap: np.ndarray, limit: int) -> np.ndarray:
    """Greedy selection over rows already in greedy order; overlap (M, M) bool 'row suppresses column'."""
    suppressed = np.zeros(overlap.shape[0], bool)
    kept = []
    for i in range(overlap.shape[0]):
        if len(kept) == limit:
            break
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlap[i]
    return np.asarray(kept, np.int64)


def nms_rotated_baseline(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                         max_out: int | None = None) -> np.ndarray:
    """Benchmark baseline for ``nms_rotated``: torch IoU matrix of same-label pairs, then greedy."""
    import torch

    rows, score, label, threshold, limit, order = _nms_inputs(
        boxes, scores, labels, iou_threshold, 'iou_threshold', 1.0, max_out, 5)
    b = torch.from_numpy(rows[order]).to(torch.float32)  # (M, 5) in greedy order
    lab = torch.from_numpy(label[order])
    iou = torch.zeros((b.shape[0], b.shape[0]), dtype=torch.float32)
    if b.shape[0]:
        # only a row's later rows of its own label can be suppressed by it
        later_same_label = torch.triu(lab[:, None] == lab[None, :], diagonal=1)  # (M, M)
        ia, ib = _candidate_pairs_torch(b, b, later_same_label)
        iou[ia, ib] = _iou_pairs_torch(b, b, ia, ib)
    overlap = (iou > threshold).numpy()
    return order[_greedy_from_matrix(overlap, limit)]


def nms_center_distance_baseline(centers: np.ndarray, scores: np.ndarray, labels: np.ndarray, radius: float,
                                 max_out: int | None = None) -> np.ndarray:
    """Benchmark baseline for ``nms_center_distance``: torch distance matrix, then greedy."""
    import torch

    rows, score, label, radius, limit, order = _nms_inputs(
        centers, scores, labels, radius, 'radius', None, max_out, 2)
    c = torch.from_numpy(rows[order])  # (M, 2)
    lab = torch.from_numpy(label[order])
    distance_sq = ((c[:, None, :] - c[None, :, :]) ** 2).sum(dim=-1)  # (M, M)
    overlap = (distance_sq <= radius * radius) & (lab[:, None] == lab[None, :])
    return order[_greedy_from_matrix(overlap.numpy(), limit)]
