"""nuScenes detection metrics: limiting cases, hand-computed cases, properties, the devkit itself."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import ConfigError, EvalError
from mmfusion_ros.eval import DETECTION_CLASSES, TP_METRICS, DetectionEvalConfig, evaluate_detections
from mmfusion_ros.types import Detections3D

CAR_SIZE = (4.5, 1.9, 1.6)


def boxes(xy, labels=None, scores=None, sizes=None, yaws=None, velocities=None, frame_id='base_link',
          z=0.0) -> Detections3D:
    """Detections3D from BEV centres, with plain defaults for everything else (cars, score 1)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(xy)
    return Detections3D(
        stamp_ns=0, frame_id=frame_id,
        centers=np.column_stack([xy, np.full(n, z)]),
        sizes=np.tile(CAR_SIZE, (n, 1)) if sizes is None else np.asarray(sizes, np.float64).reshape(n, 3),
        yaws=np.zeros(n) if yaws is None else np.asarray(yaws, np.float64),
        velocities=np.zeros((n, 2)) if velocities is None else np.asarray(velocities, np.float64),
        labels=tuple(labels) if labels is not None else ('car',) * n,
        scores=np.ones(n) if scores is None else np.asarray(scores, np.float64))


def scene(rng: np.random.Generator, num_frames: int, per_frame: int) -> list[Detections3D]:
    """Ground truth of every class on a 10 m lattice (so no box is near another), within 38 m."""
    lattice = np.array([(x, y) for x in range(-30, 31, 10) for y in range(-20, 21, 10)], np.float64)
    frames = []
    for _ in range(num_frames):
        xy = lattice[rng.choice(len(lattice), per_frame, replace=False)]
        frames.append(boxes(xy, labels=rng.choice(DETECTION_CLASSES, per_frame),
                            sizes=rng.uniform(0.5, 5.0, (per_frame, 3)),
                            yaws=rng.uniform(-math.pi, math.pi, per_frame),
                            velocities=rng.normal(0, 3, (per_frame, 2))))
    return frames


def as_predictions(gt: Detections3D, rng: np.random.Generator, shift=(0.0, 0.0)) -> Detections3D:
    """The ground truth as predictions with distinct scores, every centre moved by `shift`."""
    return boxes(gt.centers[:, :2] + np.asarray(shift), labels=gt.labels, sizes=gt.sizes, yaws=gt.yaws,
                 velocities=gt.velocities, scores=rng.uniform(0.05, 1.0, len(gt)))


# Limiting cases -----------------------------------------------------------------------------------

def test_perfect_predictions_score_one() -> None:
    rng = np.random.default_rng(0)
    gts = scene(rng, num_frames=10, per_frame=12)
    metrics = evaluate_detections([(gt, as_predictions(gt, rng)) for gt in gts])
    assert metrics.mean_ap == pytest.approx(1.0)
    assert metrics.nds == pytest.approx(1.0)
    assert metrics.nds_nuscenes == pytest.approx(0.9)  # AAE counted as 1: 5 + 4 scores out of 10
    for name, per_class in metrics.per_class.items():
        assert per_class.num_gt == per_class.num_pred > 0, name
        assert all(ap == pytest.approx(1.0) for ap in per_class.ap.values()), name
        assert per_class.tp_errors == pytest.approx(dict.fromkeys(TP_METRICS, 0.0), abs=1e-12), name


def test_no_predictions_score_zero() -> None:
    gts = scene(np.random.default_rng(1), num_frames=4, per_frame=10)
    metrics = evaluate_detections([(gt, Detections3D.empty(0, 'base_link')) for gt in gts])
    assert metrics.mean_ap == 0.0
    assert metrics.nds == 0.0
    assert dict(metrics.tp_errors) == dict.fromkeys(TP_METRICS, 1.0)


def test_class_without_ground_truth_counts_as_zero_ap() -> None:
    """As in nuScenes: every configured class enters mAP, present in the data or not."""
    metrics = evaluate_detections([(boxes([(10, 0)]), boxes([(10, 0)]))])
    assert metrics.per_class['car'].mean_ap == pytest.approx(1.0)
    assert metrics.per_class['bus'].mean_ap == 0.0 and metrics.per_class['bus'].ate == 1.0
    assert metrics.mean_ap == pytest.approx(1 / 5)


# Hand-computed ------------------------------------------------------------------------------------

def test_hand_computed_two_hits_one_false_positive_one_miss() -> None:
    """Three cars; predictions A (0.3 m off, score 0.9), B (nowhere near, 0.8), C (1.5 m off, 0.7).

    Thresholds 0.5 and 1 m: only A matches. Cumulative tp = 1, 1, 1 and fp = 0, 1, 2, so recall is
    1/3 throughout and precision 1, 1/2, 1/3. Interpolated at recall r = i / 100 (np.interp: below the
    first recall the first precision, above the last recall 0): precision 1 for i = 0..33, 0 after.
    AP averages max(0, p - 0.1) over i = 11..100 (90 points) and divides by 0.9:
    23 * 0.9 / 90 / 0.9 = 23 / 90.

    Thresholds 2 and 4 m: A and C match. tp = 1, 1, 2, fp = 0, 1, 1: recall 1/3, 1/3, 2/3, precision
    1, 1/2, 2/3. Precision is 1 for i = 0..33; for i = 34..66 it runs linearly from (1/3, 1/2) to
    (2/3, 2/3): p = 1/2 + (r - 1/3) / 2; 0 for i >= 67. Sum of p - 0.1 over i = 11..100:
    23 * 0.9 + [33 * 0.4 + 0.5 * (sum(i / 100 for i = 34..66) - 33 / 3)] = 20.7 + 13.2 + 0.5 * 5.5
    = 36.65, so AP = 36.65 / 90 / 0.9 = 36.65 / 81.

    ATE at 2 m: the running mean over matches A, C is 0.3, 0.9 at scores 0.9, 0.7. The confidence at
    recall r is the score interpolated the same way: 0.9 for i <= 33, 0.8 - 0.3 (r - 1/3) for
    i = 34..66, 0 after (so the highest recall reached is i = 66). The error at confidence c is the
    running mean interpolated on score: 0.3 at 0.9, 0.9 - 3 (c - 0.7) between 0.7 and 0.9, which on
    i = 34..66 is 0.6 + 0.9 (r - 1/3). ATE is the mean over i = 11..66 (56 points):
    (23 * 0.3 + 33 * 0.6 + 0.9 * 5.5) / 56 = (6.9 + 19.8 + 4.95) / 56 = 31.65 / 56.
    (The miss, at (-15, 5), only caps the recall.)
    """
    gt = boxes([(10, 0), (20, 0), (-15, 5)])
    pred = boxes([(10.3, 0), (30, 0), (21.5, 0)], scores=[0.9, 0.8, 0.7])
    car = evaluate_detections([(gt, pred)]).per_class['car']
    assert dict(car.ap) == pytest.approx({0.5: 23 / 90, 1.0: 23 / 90, 2.0: 36.65 / 81, 4.0: 36.65 / 81})
    assert car.mean_ap == pytest.approx((2 * 23 / 90 + 2 * 36.65 / 81) / 4)
    assert car.ate == pytest.approx(31.65 / 56)
    assert (car.ase, car.aoe, car.ave) == pytest.approx((0.0, 0.0, 0.0))
    assert (car.num_gt, car.num_pred) == (3, 3)


def test_score_order_decides_precision() -> None:
    """One car, a hit and a miss. Hit first: recall 1, 1 at precision 1, 1/2 (np.interp gives the
    last, 1/2, at r = 1 exactly), so AP = (89 * 0.9 + 0.4) / 81 = 80.5 / 81. Miss first: recall 0, 1
    at precision 0, 1/2, so p = r / 2 and AP = sum(r / 2 - 0.1 for i = 21..100) / 81 = 16.2 / 81."""
    gt = boxes([(10, 0)])
    hit_first = boxes([(10, 0), (30, 0)], scores=[0.9, 0.1])
    miss_first = boxes([(10, 0), (30, 0)], scores=[0.1, 0.9])
    assert evaluate_detections([(gt, hit_first)]).per_class['car'].ap[1.0] == pytest.approx(80.5 / 81)
    assert evaluate_detections([(gt, miss_first)]).per_class['car'].ap[1.0] == pytest.approx(16.2 / 81)


def test_size_orientation_and_velocity_errors() -> None:
    """Half the volume is ASE 0.5; headings either side of +-pi are 0.1 rad apart; AVE leaves out a
    ground-truth velocity that is NaN (the second car), so it is the first car's 0.5 m/s."""
    gt = boxes([(10, 0), (20, 0)], sizes=[(4, 2, 1.5)] * 2, yaws=[math.pi - 0.05] * 2,
               velocities=[(1.0, 0.0), (np.nan, np.nan)])
    pred = boxes([(10, 0), (20, 0)], sizes=[(2, 2, 1.5)] * 2, yaws=[-math.pi + 0.05] * 2,
                 velocities=[(1.0, 0.5), (9.0, 9.0)], scores=[0.9, 0.5])
    car = evaluate_detections([(gt, pred)]).per_class['car']
    assert (car.ate, car.ase, car.aoe, car.ave) == pytest.approx((0.0, 0.5, 0.1, 0.5))


def test_all_velocities_unknown_is_worst_ave() -> None:
    gt = boxes([(10, 0)], velocities=[(np.nan, np.nan)])
    assert evaluate_detections([(gt, boxes([(10, 0)]))]).per_class['car'].ave == 1.0


# Filtering and separation -------------------------------------------------------------------------

def test_class_range_filters_ground_truth_and_predictions() -> None:
    """Cars count within 50 m, pedestrians within 40 m (BEV, strictly); unknown labels not at all."""
    gt = boxes([(30, 40), (0, 45), (44.0, 0), (0, 39.9), (5, 5)],
               labels=['car', 'car', 'pedestrian', 'pedestrian', 'traffic_cone'])
    pred = boxes([(30, 40), (0, 45), (44.0, 0), (0, 39.9), (5, 5), (60, 0)],
                 labels=['car', 'car', 'pedestrian', 'pedestrian', 'traffic_cone', 'car'])
    metrics = evaluate_detections([(gt, pred)])
    car, pedestrian = metrics.per_class['car'], metrics.per_class['pedestrian']
    assert (car.num_gt, car.num_pred) == (1, 1)  # (30, 40) is exactly 50 m away; (60, 0) beyond
    assert (pedestrian.num_gt, pedestrian.num_pred) == (1, 1)
    assert car.mean_ap == pytest.approx(1.0) and pedestrian.mean_ap == pytest.approx(1.0)
    assert 'traffic_cone' not in metrics.per_class


def test_missed_box_beyond_range_does_not_count() -> None:
    gt = boxes([(10, 0), (70, 0)])
    assert evaluate_detections([(gt, boxes([(10, 0)]))]).per_class['car'].mean_ap == pytest.approx(1.0)


def test_right_box_wrong_label_is_a_false_positive() -> None:
    gt = boxes([(10, 0)], labels=['car'])
    metrics = evaluate_detections([(gt, boxes([(10, 0)], labels=['truck']))])
    assert metrics.per_class['car'].mean_ap == 0.0 and metrics.per_class['car'].ate == 1.0
    assert metrics.per_class['truck'].num_pred == 1 and metrics.per_class['truck'].mean_ap == 0.0


def test_each_ground_truth_box_matches_once_and_only_in_its_frame() -> None:
    gt = boxes([(10, 0)])
    twice = evaluate_detections([(gt, boxes([(10, 0), (10.1, 0)], scores=[0.9, 0.8]))])
    assert twice.per_class['car'].ap[4.0] == pytest.approx(80.5 / 81)  # the second is a FP
    other_frame = evaluate_detections([(gt, Detections3D.empty(0, 'base_link')),
                                       (Detections3D.empty(0, 'base_link'), boxes([(10, 0)]))])
    assert other_frame.per_class['car'].mean_ap == 0.0


def test_max_boxes_per_frame() -> None:
    gt = boxes([(10, 0)])
    config = DetectionEvalConfig(max_boxes_per_frame=3)
    evaluate_detections([(gt, boxes([(10, 0)] * 3))], config)
    with pytest.raises(EvalError, match=r'frame 0 predictions: 4 boxes, more than max_boxes_per_frame 3'):
        evaluate_detections([(gt, boxes([(10, 0)] * 4))], config)
    with pytest.raises(EvalError, match='max_boxes_per_frame 500'):
        evaluate_detections([(gt, boxes(np.zeros((501, 2)) + (10, 0)))])


# Properties ---------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(distance=st.floats(0.02, 3.95), heading=st.floats(-math.pi, math.pi), seed=st.integers(0, 2**16))
def test_shifted_predictions(distance: float, heading: float, seed: int) -> None:
    """Every prediction `distance` metres off: AP 0 below that threshold, 1 above; ATE = distance."""
    config = DetectionEvalConfig()
    assume(all(abs(distance - th) > 1e-6 for th in config.dist_ths))
    rng = np.random.default_rng(seed)
    shift = distance * np.array([math.cos(heading), math.sin(heading)])
    gts = scene(rng, num_frames=3, per_frame=8)
    metrics = evaluate_detections([(gt, as_predictions(gt, rng, shift)) for gt in gts], config)
    for name, per_class in metrics.per_class.items():
        if per_class.num_gt == 0:
            continue
        for th, ap in per_class.ap.items():
            assert ap == pytest.approx(1.0 if th > distance else 0.0), (name, th)
        assert per_class.ate == pytest.approx(distance if distance < config.dist_th_tp else 1.0), name


def test_many_frames_with_clutter_give_bounded_consistent_metrics() -> None:
    # A run at evaluation scale (2000 frames): metrics stay in range and match the per-class means.
    rng = np.random.default_rng(3)
    gts = scene(rng, num_frames=2000, per_frame=25)
    frames = [(gt, as_predictions(gt, rng, rng.normal(0, 1.0, 2))) for gt in gts]
    frames = [(gt, boxes(np.vstack([p.centers[:, :2], rng.uniform(-40, 40, (25, 2))]),
                         labels=p.labels + tuple(rng.choice(DETECTION_CLASSES, 25)),
                         scores=rng.uniform(0, 1, 50)))
              for gt, p in frames]  # 25 ground truth and 50 predictions per frame
    metrics = evaluate_detections(frames)
    assert 0.0 < metrics.mean_ap < 1.0 and 0.0 < metrics.nds < 1.0
    assert metrics.mean_ap == pytest.approx(np.mean([c.mean_ap for c in metrics.per_class.values()]))


def test_to_json() -> None:
    gt = boxes([(10, 0)])
    document = evaluate_detections([(gt, boxes([(10.2, 0)]))]).to_json()
    assert {'mAP', 'NDS', 'per_class', 'tp_errors', 'config'} <= set(document)
    assert set(document['per_class']['car']) == {'AP', 'AP_mean', 'ATE', 'ASE', 'AOE', 'AVE',
                                                 'num_gt', 'num_pred'}
    assert set(document['per_class']['car']['AP']) == {'0.5', '1.0', '2.0', '4.0'}
    assert json.loads(json.dumps(document)) == document


# Errors -------------------------------------------------------------------------------------------

def test_input_errors() -> None:
    gt = boxes([(10, 0)])
    with pytest.raises(EvalError, match='no frames to evaluate'):
        evaluate_detections([])
    with pytest.raises(EvalError, match=r"frame 1 predictions: boxes are in 'map' but frame 0 ground "
                                        r"truth is in 'base_link'"):
        evaluate_detections([(gt, gt), (gt, boxes([(10, 0)], frame_id='map'))])
    with pytest.raises(EvalError, match=r"frame 0 ground truth \('base_link'\): centers are not all finite"):
        evaluate_detections([(boxes([(np.nan, 0)]), gt)])
    with pytest.raises(EvalError, match=r'frame 0 predictions .*: scores are not all finite'):
        evaluate_detections([(gt, boxes([(10, 0)], scores=[np.nan]))])
    with pytest.raises(EvalError, match=r'frame 0 predictions .*: box sizes must be positive'):
        evaluate_detections([(gt, boxes([(10, 0)], sizes=[(4, 0, 1)]))])
    with pytest.raises(EvalError, match='frame 0: expected a .ground truth, predictions. pair'):
        evaluate_detections([(gt,)])


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r'dist_th_tp: 3.0 is not one of dist_ths'):
        DetectionEvalConfig(dist_th_tp=3.0)
    with pytest.raises(ConfigError, match=r'class_range: needs exactly the classes'):
        DetectionEvalConfig(classes=('car',))
    with pytest.raises(ConfigError, match=r'class_range.car: must be positive'):
        DetectionEvalConfig(classes=('car',), class_range={'car': 0})
    with pytest.raises(ConfigError, match=r'min_precision: must be in \[0, 1\)'):
        DetectionEvalConfig(min_precision=1.0)
    with pytest.raises(ConfigError, match='max_boxes_per_frame: must be positive'):
        DetectionEvalConfig(max_boxes_per_frame=0)


# The nuScenes devkit ------------------------------------------------------------------------------

DEVKIT_MISSING = ('nuscenes-devkit is not importable (pip install --no-deps nuscenes-devkit==1.2.0, then '
                  'pip install pyquaternion matplotlib scikit-learn cachetools)')
NUSCENES_NAME = {'car': 'car', 'truck': 'truck', 'bus': 'bus', 'pedestrian': 'pedestrian',
                 'cyclist': 'bicycle'}


def random_frames(seed: int, num_frames: int = 20) -> list[tuple[Detections3D, Detections3D]]:
    """Ground truth anywhere out to 60 m (some beyond range); predictions: noisy copies of most of it,
    some relabelled, plus clutter; a few NaN velocities on either side."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(num_frames):
        n = int(rng.integers(12, 30))
        xy = rng.uniform(-60, 60, (n, 2))
        gt = boxes(xy, labels=rng.choice(DETECTION_CLASSES, n), sizes=rng.uniform(0.4, 6.0, (n, 3)),
                   yaws=rng.uniform(-4, 4, n), velocities=rng.normal(0, 4, (n, 2)), z=1.0)
        gt_velocities = gt.velocities.copy()
        gt_velocities[rng.random(n) < 0.1] = np.nan
        gt = boxes(xy, labels=gt.labels, sizes=gt.sizes, yaws=gt.yaws, velocities=gt_velocities, z=1.0)
        kept = np.flatnonzero(rng.random(n) < 0.85)
        labels = [gt.labels[i] if rng.random() < 0.9 else str(rng.choice(DETECTION_CLASSES)) for i in kept]
        clutter = int(rng.integers(0, 8))
        m = len(kept) + clutter
        velocities = np.vstack([gt.velocities[kept] + rng.normal(0, 1, (len(kept), 2)),
                                rng.normal(0, 4, (clutter, 2))])
        velocities[rng.random(m) < 0.05] = np.nan
        offsets = rng.normal(0, 1, (len(kept), 2)) * rng.uniform(0.05, 1.5, (len(kept), 1))  # m
        pred = boxes(np.vstack([xy[kept] + offsets, rng.uniform(-60, 60, (clutter, 2))]),
                     labels=labels + list(rng.choice(DETECTION_CLASSES, clutter)),
                     sizes=np.vstack([gt.sizes[kept] * rng.uniform(0.7, 1.3, (len(kept), 3)),
                                      rng.uniform(0.4, 6.0, (clutter, 3))]),
                     yaws=np.concatenate([gt.yaws[kept] + rng.normal(0, 0.5, len(kept)),
                                          rng.uniform(-4, 4, clutter)]),
                     velocities=velocities, scores=rng.uniform(0, 1, m), z=1.0)
        frames.append((gt, pred))
    return frames


def devkit_metrics(frames: list[tuple[Detections3D, Detections3D]], config: DetectionEvalConfig) -> dict:
    """Per class: AP per threshold and the TP errors, from nuScenes' accumulate, calc_ap and calc_tp."""
    import pyquaternion
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
    from nuscenes.eval.detection.data_classes import DetectionBox

    def eval_boxes(side: int) -> EvalBoxes:
        out = EvalBoxes()
        for i, pair in enumerate(frames):
            det, token, kept = pair[side], f'frame{i}', []
            for k in range(len(det)):
                length, width, height = det.sizes[k]
                box = DetectionBox(
                    sample_token=token, translation=tuple(det.centers[k]), size=(width, length, height),
                    rotation=tuple(pyquaternion.Quaternion(axis=[0, 0, 1], angle=det.yaws[k]).elements),
                    velocity=tuple(det.velocities[k]), ego_translation=tuple(det.centers[k]),
                    detection_name=NUSCENES_NAME[det.labels[k]], detection_score=float(det.scores[k]))
                if box.ego_dist < config.class_range[det.labels[k]]:  # the devkit's filter_eval_boxes
                    kept.append(box)
            out.add_boxes(token, kept)
        return out

    gt_boxes, pred_boxes = eval_boxes(0), eval_boxes(1)
    result = {}
    for name in config.classes:
        data = {th: accumulate(gt_boxes, pred_boxes, NUSCENES_NAME[name], center_distance, th)
                for th in config.dist_ths}
        tp_data = data[config.dist_th_tp]
        result[name] = {
            'ap': {th: calc_ap(md, config.min_recall, config.min_precision) for th, md in data.items()},
            'ATE': calc_tp(tp_data, config.min_recall, 'trans_err'),
            'ASE': calc_tp(tp_data, config.min_recall, 'scale_err'),
            'AOE': calc_tp(tp_data, config.min_recall, 'orient_err'),
            'AVE': calc_tp(tp_data, config.min_recall, 'vel_err'),
            'AAE': calc_tp(tp_data, config.min_recall, 'attr_err'),
        }
    return result


@pytest.mark.parametrize('seed', [0, 1])
def test_agrees_with_nuscenes_devkit(seed: int) -> None:
    pytest.importorskip('nuscenes.eval.detection.algo', reason=DEVKIT_MISSING)
    config = DetectionEvalConfig()
    frames = random_frames(seed)
    ours = evaluate_detections(frames, config)
    theirs = devkit_metrics(frames, config)
    assert sum(m.num_gt for m in ours.per_class.values()) > 150
    for name in config.classes:
        mine, devkit = ours.per_class[name], theirs[name]
        assert all(0 < ap < 1 for ap in mine.ap.values()), name  # no limiting case: a real comparison
        for th in config.dist_ths:
            assert mine.ap[th] == pytest.approx(devkit['ap'][th], abs=1e-6), (name, th)
        for metric in TP_METRICS:
            assert mine.tp_errors[metric] == pytest.approx(devkit[metric], abs=1e-6), (name, metric)
        assert devkit['AAE'] == 1.0  # no attributes: the devkit's worst case, which nds_nuscenes uses
    # NDS as the devkit's DetectionMetrics sums it, with its AAE.
    mean_ap = np.mean([np.mean(list(theirs[name]['ap'].values())) for name in config.classes])
    scores = [max(0.0, 1 - np.mean([theirs[name][metric] for name in config.classes]))
              for metric in (*TP_METRICS, 'AAE')]
    assert ours.nds_nuscenes == pytest.approx((5 * mean_ap + sum(scores)) / 10, abs=1e-9)
    assert ours.nds == pytest.approx((5 * mean_ap + sum(scores)) / 9, abs=1e-9)
