"""3D detection metrics as nuScenes defines them: AP per centre-distance threshold, TP errors, NDS.

The algorithm is the nuScenes detection benchmark's, reproduced to within floating point:

1. **Filter.** Boxes whose label is not one of ``config.classes`` are not evaluated. A box is kept
   when its BEV distance from the ego origin, ``hypot(x, y)`` in the frame's ``base_link``, is below
   its class's range (strictly, as nuScenes does). This applies to ground truth and predictions.
2. **Match.** Per class and per distance threshold, all predictions of all frames are taken in order
   of descending score (ties: the later box first). Each is matched to the nearest ground-truth box
   of its class in its frame (BEV centre distance) not yet taken; it is a true positive when that
   distance is below the threshold, else a false positive. Each ground-truth box is matched once.
3. **Precision-recall.** Cumulative precision and recall over that order are interpolated at 101
   recall points 0, 0.01, ..., 1 (zero precision past the highest recall reached).
   ``AP = mean(max(0, p - min_precision)) / (1 - min_precision)`` over the recall points strictly above
   ``min_recall``. A class without ground truth, or without a single match, has AP 0.
4. **TP errors,** from the matches at ``dist_th_tp``: per match the BEV centre distance (ATE, m),
   ``1 - IoU`` of the boxes aligned on one centre and heading (ASE), the smallest heading difference
   with period 2 pi (AOE, rad), and the L2 difference of BEV velocity (AVE, m/s; a match where either
   velocity is NaN is left out). Each is a cumulative mean over matches in score order, resampled on
   the recall points by confidence, and averaged over the recall points above ``min_recall`` up to
   the highest recall reached. A class with no match there gets error 1 for all four.
5. **Summary.** mAP is the mean AP over classes and thresholds; a TP error over classes is their mean.

**NDS.** We have no attributes, so there is no AAE. ``nds`` weighs mAP by ``mean_ap_weight`` and adds
the four TP scores ``1 - min(1, err)``: ``(5 mAP + sum of 4 TP scores) / 9``. ``nds_nuscenes`` is what
the nuScenes devkit reports for the same boxes, whose AAE is 1 when no box has an attribute:
``(5 mAP + sum of 4 TP scores + 0) / 10``. Use ``nds`` to compare our models; ``nds_nuscenes`` only
to put a number beside a nuScenes leaderboard figure (it can never exceed 0.9).

Differences from the nuScenes benchmark, all from our data rather than the algorithm: five classes
(``cyclist`` stands for nuScenes' ``bicycle``; no motorcycle, trailer, construction vehicle, barrier or
traffic cone), no filtering by lidar points in a box or by bicycle racks, no attribute error, and
boxes come in ``base_link`` rather than global coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ..errors import ConfigError, EvalError
from ..types import Detections3D

__all__ = [
    'DETECTION_CLASSES',
    'RECALL_POINTS',
    'TP_METRICS',
    'ClassMetrics',
    'DetectionEvalConfig',
    'DetectionMetrics',
    'evaluate_detections',
]

DETECTION_CLASSES: tuple[str, ...] = ('car', 'truck', 'bus', 'pedestrian', 'cyclist')
TP_METRICS: tuple[str, ...] = ('ATE', 'ASE', 'AOE', 'AVE')
RECALL_POINTS = 101  # precision and errors are sampled at recall 0, 0.01, ..., 1


def _default_class_range() -> dict[str, float]:
    return {'car': 50.0, 'truck': 50.0, 'bus': 50.0, 'pedestrian': 40.0, 'cyclist': 40.0}


@dataclass(frozen=True)
class DetectionEvalConfig:
    """Settings of the detection evaluation; the defaults are nuScenes' ``detection_cvpr_2019``."""

    classes: tuple[str, ...] = DETECTION_CLASSES
    class_range: Mapping[str, float] = field(default_factory=_default_class_range)  # m, BEV from ego
    dist_ths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # m, BEV centre distance for a match
    dist_th_tp: float = 2.0  # m, the threshold whose matches give the TP errors; one of dist_ths
    min_recall: float = 0.1  # recall at or below which AP and TP errors are not measured
    min_precision: float = 0.1  # precision at or below which AP counts nothing
    max_boxes_per_frame: int = 500  # a frame with more predictions is an error, as in nuScenes
    mean_ap_weight: float = 5.0  # weight of mAP against each TP score in NDS

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        if not classes or len(set(classes)) != len(classes):
            raise ConfigError(f'classes: need distinct class names, got {list(classes)}')
        class_range = {str(name): float(value) for name, value in dict(self.class_range).items()}
        if set(class_range) != set(classes):
            raise ConfigError(f'class_range: needs exactly the classes {list(classes)}, '
                              f'got {sorted(class_range)}')
        for name, value in class_range.items():
            if not value > 0:
                raise ConfigError(f'class_range.{name}: must be positive, got {value}')
        dist_ths = tuple(float(t) for t in self.dist_ths)
        if not dist_ths or any(not t > 0 for t in dist_ths):
            raise ConfigError(f'dist_ths: need positive distances, got {list(dist_ths)}')
        if float(self.dist_th_tp) not in dist_ths:
            raise ConfigError(f'dist_th_tp: {self.dist_th_tp} is not one of dist_ths {list(dist_ths)}')
        if not 0 <= self.min_recall <= 1:
            raise ConfigError(f'min_recall: must be in [0, 1], got {self.min_recall}')
        if not 0 <= self.min_precision < 1:
            raise ConfigError(f'min_precision: must be in [0, 1), got {self.min_precision}')
        if self.max_boxes_per_frame < 1:
            raise ConfigError(f'max_boxes_per_frame: must be positive, got {self.max_boxes_per_frame}')
        if not self.mean_ap_weight >= 0:
            raise ConfigError(f'mean_ap_weight: must not be negative, got {self.mean_ap_weight}')
        object.__setattr__(self, 'classes', classes)
        object.__setattr__(self, 'class_range', MappingProxyType(class_range))
        object.__setattr__(self, 'dist_ths', dist_ths)
        object.__setattr__(self, 'dist_th_tp', float(self.dist_th_tp))

    def to_json(self) -> dict[str, Any]:
        return {'classes': list(self.classes), 'class_range': dict(self.class_range),
                'dist_ths': list(self.dist_ths), 'dist_th_tp': self.dist_th_tp,
                'min_recall': self.min_recall, 'min_precision': self.min_precision,
                'max_boxes_per_frame': self.max_boxes_per_frame, 'mean_ap_weight': self.mean_ap_weight}


@dataclass(frozen=True)
class ClassMetrics:
    """The metrics of one class."""

    ap: Mapping[float, float]  # distance threshold (m) -> AP
    mean_ap: float  # mean of `ap` over the thresholds
    ate: float  # m, BEV centre distance
    ase: float  # 1 - IoU of the aligned boxes
    aoe: float  # rad, smallest heading difference
    ave: float  # m/s, BEV velocity difference
    num_gt: int  # ground-truth boxes evaluated (after the range filter)
    num_pred: int  # predictions evaluated (after the range filter)

    @property
    def tp_errors(self) -> dict[str, float]:
        return {'ATE': self.ate, 'ASE': self.ase, 'AOE': self.aoe, 'AVE': self.ave}

    def to_json(self) -> dict[str, Any]:
        return {'AP': {str(th): ap for th, ap in self.ap.items()}, 'AP_mean': self.mean_ap,
                **self.tp_errors, 'num_gt': self.num_gt, 'num_pred': self.num_pred}


@dataclass(frozen=True)
class DetectionMetrics:
    """The result of `evaluate_detections`."""

    mean_ap: float  # mAP over classes and distance thresholds
    nds: float  # (w mAP + sum of the 4 TP scores) / (w + 4); see the module docstring
    nds_nuscenes: float  # (w mAP + sum of the 4 TP scores + 0 for AAE) / (w + 5), as the devkit reports
    per_class: Mapping[str, ClassMetrics]
    tp_errors: Mapping[str, float]  # TP metric -> mean over classes
    config: DetectionEvalConfig

    def to_json(self) -> dict[str, Any]:
        """Plain types only (``json.dumps`` takes it); thresholds become string keys."""
        return {'mAP': self.mean_ap, 'NDS': self.nds, 'NDS_nuscenes': self.nds_nuscenes,
                'per_class': {name: m.to_json() for name, m in self.per_class.items()},
                'tp_errors': dict(self.tp_errors), 'config': self.config.to_json()}


class _Boxes(NamedTuple):
    """All boxes of one side (ground truth or predictions) of every frame, flattened, after filtering."""

    frame: np.ndarray  # (N,) int64 index of the frame
    xy: np.ndarray  # (N, 2) float64 BEV centre
    sizes: np.ndarray  # (N, 3) float64
    yaws: np.ndarray  # (N,) float64
    velocities: np.ndarray  # (N, 2) float64, may be NaN
    label: np.ndarray  # (N,) int64 index into config.classes
    scores: np.ndarray  # (N,) float64


class _Curves(NamedTuple):
    """Precision, confidence and TP errors of one class at one threshold, on the recall points."""

    precision: np.ndarray  # (RECALL_POINTS,)
    confidence: np.ndarray  # (RECALL_POINTS,) 0 past the highest recall reached
    errors: Mapping[str, np.ndarray]  # TP metric -> (RECALL_POINTS,)


def _no_match_curves() -> _Curves:
    ones = np.ones(RECALL_POINTS)
    return _Curves(np.zeros(RECALL_POINTS), np.zeros(RECALL_POINTS), {m: ones for m in TP_METRICS})


def _flatten(detections: Sequence[Detections3D], side: str, config: DetectionEvalConfig) -> _Boxes:
    """Concatenate one side of all frames, checking it and keeping evaluated classes within range."""
    class_index = {name: i for i, name in enumerate(config.classes)}
    ranges = np.array([config.class_range[name] for name in config.classes])
    is_pred = side == 'predictions'
    for i, det in enumerate(detections):
        what = f'frame {i} {side}'
        if is_pred and len(det) > config.max_boxes_per_frame:
            raise EvalError(f'{what}: {len(det)} boxes, more than max_boxes_per_frame '
                            f'{config.max_boxes_per_frame}; keep the highest-scoring ones')
        finite = [('centers', det.centers), ('sizes', det.sizes), ('yaws', det.yaws)]
        if is_pred:
            finite.append(('scores', det.scores))
        for name, values in finite:
            if not np.all(np.isfinite(values)):
                raise EvalError(f'{what} ({det.frame_id!r}): {name} are not all finite')
        if not np.all(det.sizes > 0):
            raise EvalError(f'{what} ({det.frame_id!r}): box sizes must be positive')
    frame = np.concatenate([np.full(len(det), i, np.int64) for i, det in enumerate(detections)])
    label = np.array([class_index.get(name, -1) for det in detections for name in det.labels], np.int64)
    centers = np.concatenate([det.centers for det in detections])  # (N, 3)
    xy = centers[:, :2]
    keep = label >= 0
    keep[keep] = np.hypot(xy[keep, 0], xy[keep, 1]) < ranges[label[keep]]
    return _Boxes(frame[keep], xy[keep],
                  np.concatenate([det.sizes for det in detections])[keep],
                  np.concatenate([det.yaws for det in detections])[keep],
                  np.concatenate([det.velocities for det in detections])[keep],
                  label[keep],
                  np.concatenate([det.scores for det in detections])[keep])


def _greedy_match(gt: _Boxes, pred: _Boxes, order: np.ndarray, dist_ths: np.ndarray) -> np.ndarray:
    """Index into `gt` of the box each prediction matched, -1 for none: (T, P) in the order `order`.

    `gt` and `pred` hold one class. Frames are independent, so each is matched on its own, taking its
    predictions in the global order; all thresholds are matched together, one taken-mask per threshold.
    """
    T, P = len(dist_ths), len(order)
    matched = np.full((T, P), -1, np.int64)
    rows = np.arange(T)
    max_th = dist_ths.max()
    pred_frame = pred.frame[order]  # (P,) frame of each prediction in score order
    by_frame = np.argsort(pred_frame, kind='stable')  # positions in score order, grouped by frame
    gt_by_frame = np.argsort(gt.frame, kind='stable')  # gt rows grouped by frame, in row order
    gt_frames = gt.frame[gt_by_frame]
    frames, starts = np.unique(pred_frame[by_frame], return_index=True)
    ends = np.append(starts[1:], P)
    gt_lo = np.searchsorted(gt_frames, frames, 'left')
    gt_hi = np.searchsorted(gt_frames, frames, 'right')
    for start, end, lo, hi in zip(starts, ends, gt_lo, gt_hi):
        if lo == hi:
            continue  # no ground truth of this class in the frame: all false positives
        positions = by_frame[start:end]  # (p,) this frame's predictions, in score order
        gt_rows = gt_by_frame[lo:hi]  # (g,)
        delta = pred.xy[order[positions], None, :] - gt.xy[None, gt_rows, :]  # (p, g, 2)
        dist = np.sqrt(delta[..., 0] ** 2 + delta[..., 1] ** 2)  # (p, g)
        taken = np.zeros((T, len(gt_rows)), bool)
        for k, position in enumerate(positions):
            if dist[k].min() >= max_th:
                continue
            candidates = np.where(taken, np.inf, dist[k])  # (T, g)
            nearest = candidates.argmin(axis=1)  # (T,) first of equals, as a scan with `<` finds
            hit = candidates[rows, nearest] < dist_ths
            taken[rows[hit], nearest[hit]] = True
            matched[hit, position] = gt_rows[nearest[hit]]
    return matched


def _cumulative_mean(values: np.ndarray) -> np.ndarray:
    """Running mean that skips NaN; all NaN gives ones (the error counts as worst)."""
    valid = ~np.isnan(values)
    if not valid.any():
        return np.ones(len(values))
    sums = np.cumsum(np.where(valid, values, 0.0))
    counts = np.cumsum(valid)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts != 0)


def _match_errors(gt: _Boxes, pred: _Boxes, pred_rows: np.ndarray,
                  gt_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The four TP errors of each matched pair: (M,) each."""
    delta = pred.xy[pred_rows] - gt.xy[gt_rows]
    gt_size, pred_size = gt.sizes[gt_rows], pred.sizes[pred_rows]
    intersection = np.prod(np.minimum(gt_size, pred_size), axis=1)
    union = np.prod(gt_size, axis=1) + np.prod(pred_size, axis=1) - intersection
    yaw_delta = (gt.yaws[gt_rows] - pred.yaws[pred_rows] + math.pi) % (2 * math.pi) - math.pi
    velocity_delta = pred.velocities[pred_rows] - gt.velocities[gt_rows]  # NaN stays NaN
    return {'ATE': np.sqrt(delta[:, 0] ** 2 + delta[:, 1] ** 2),
            'ASE': 1.0 - intersection / union,
            'AOE': np.abs(yaw_delta),
            'AVE': np.sqrt(velocity_delta[:, 0] ** 2 + velocity_delta[:, 1] ** 2)}


def _curves(gt: _Boxes, pred: _Boxes, order: np.ndarray, matched: np.ndarray,
            with_errors: bool) -> _Curves:
    """Interpolated precision (and TP errors) of one class at one threshold; `matched` is (P,)."""
    is_tp = matched >= 0
    if not is_tp.any():
        return _no_match_curves()
    tp = np.cumsum(is_tp).astype(np.float64)
    fp = np.cumsum(~is_tp).astype(np.float64)
    precision = tp / (tp + fp)
    recall = tp / len(gt.frame)
    confidence = pred.scores[order]  # (P,) descending
    recall_points = np.linspace(0.0, 1.0, RECALL_POINTS)
    precision_at = np.interp(recall_points, recall, precision, right=0)
    confidence_at = np.interp(recall_points, recall, confidence, right=0)
    errors: dict[str, np.ndarray] = {}
    if with_errors:
        match_confidence = confidence[is_tp]  # (M,) descending
        per_match = _match_errors(gt, pred, order[is_tp], matched[is_tp])
        for metric, values in per_match.items():
            running = _cumulative_mean(values)
            # np.interp needs increasing x: resample on confidence from low to high, then flip back.
            errors[metric] = np.interp(confidence_at[::-1], match_confidence[::-1], running[::-1])[::-1]
    return _Curves(precision_at, confidence_at, errors)


def _average_precision(curves: _Curves, config: DetectionEvalConfig) -> float:
    first = round(100 * config.min_recall) + 1  # the recall point at min_recall is excluded
    above = np.maximum(curves.precision[first:] - config.min_precision, 0.0)
    return float(np.mean(above)) / (1.0 - config.min_precision)


def _tp_error(curves: _Curves, metric: str, config: DetectionEvalConfig) -> float:
    first = round(100 * config.min_recall) + 1
    reached = np.nonzero(curves.confidence)[0]
    last = int(reached[-1]) if len(reached) else 0  # recall point of the highest recall reached
    if last < first:
        return 1.0
    return float(np.mean(curves.errors[metric][first:last + 1]))


def _check_frames(frames: Sequence[tuple[Detections3D, Detections3D]]) -> None:
    if not frames:
        raise EvalError('no frames to evaluate')
    frame_id = None
    for i, pair in enumerate(frames):
        if len(pair) != 2 or not all(isinstance(d, Detections3D) for d in pair):
            raise EvalError(f'frame {i}: expected a (ground truth, predictions) pair of Detections3D')
        for side, det in zip(('ground truth', 'predictions'), pair):
            frame_id = det.frame_id if frame_id is None else frame_id
            if det.frame_id != frame_id:
                raise EvalError(f'frame {i} {side}: boxes are in {det.frame_id!r} but frame 0 ground '
                                f'truth is in {frame_id!r}; all boxes must share one ego frame')


def evaluate_detections(frames: Sequence[tuple[Detections3D, Detections3D]],
                        config: DetectionEvalConfig | None = None) -> DetectionMetrics:
    """nuScenes detection metrics of ``(ground_truth, predictions)`` pairs, one pair per frame.

    Boxes are in the ego frame (``base_link``), the same for every frame. Ground-truth scores are
    ignored; ground-truth velocities may be NaN (left out of AVE). Raises `EvalError` for boxes in
    different frames, non-finite or non-positive geometry, non-finite scores, or too many predictions.
    """
    config = config or DetectionEvalConfig()
    frames = list(frames)
    _check_frames(frames)
    gt_all = _flatten([pair[0] for pair in frames], 'ground truth', config)
    pred_all = _flatten([pair[1] for pair in frames], 'predictions', config)
    dist_ths = np.array(config.dist_ths)
    tp_index = config.dist_ths.index(config.dist_th_tp)

    per_class: dict[str, ClassMetrics] = {}
    for c, name in enumerate(config.classes):
        gt = _Boxes(*(a[gt_all.label == c] for a in gt_all))
        pred = _Boxes(*(a[pred_all.label == c] for a in pred_all))
        if len(gt.frame) == 0:
            curves = [_no_match_curves() for _ in dist_ths]
        else:
            # Descending score; among equal scores the later box first.
            order = np.lexsort((np.arange(len(pred.scores)), pred.scores))[::-1]
            matched = _greedy_match(gt, pred, order, dist_ths)
            curves = [_curves(gt, pred, order, matched[t], with_errors=t == tp_index)
                      for t in range(len(dist_ths))]
        ap = {th: _average_precision(curve, config) for th, curve in zip(config.dist_ths, curves)}
        errors = {m: _tp_error(curves[tp_index], m, config) for m in TP_METRICS}
        per_class[name] = ClassMetrics(MappingProxyType(ap), float(np.mean(list(ap.values()))),
                                       errors['ATE'], errors['ASE'], errors['AOE'], errors['AVE'],
                                       len(gt.frame), len(pred.frame))

    mean_ap = float(np.mean([m.mean_ap for m in per_class.values()]))
    tp_errors = {metric: float(np.mean([m.tp_errors[metric] for m in per_class.values()]))
                 for metric in TP_METRICS}
    tp_score_sum = sum(1.0 - min(1.0, err) for err in tp_errors.values())
    weighted_ap = config.mean_ap_weight * mean_ap
    nds = (weighted_ap + tp_score_sum) / (config.mean_ap_weight + len(TP_METRICS))
    nds_nuscenes = (weighted_ap + tp_score_sum) / (config.mean_ap_weight + len(TP_METRICS) + 1)
    return DetectionMetrics(mean_ap, nds, nds_nuscenes, MappingProxyType(per_class),
                            MappingProxyType(tp_errors), config)
