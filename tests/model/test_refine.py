"""Long vehicles' boxes placed by the lidar's points: heading, near end, class, length."""

import dataclasses
import math

import numpy as np
import pytest

from mmfusion_ros.config import RefineSection, config_from_dict
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.model.refine import check_refined_classes, refine_long_boxes
from mmfusion_ros.types import Detections3D


def _surface(center, length, width, yaw, faces, spacing=0.15, z=(0.8, 2.6)):
    """Points on the named vertical faces ('near', 'far', 'left', 'right') of a box on the ground;
    'near' is the end at -length/2 along the heading."""
    c, s = math.cos(yaw), math.sin(yaw)
    rows = []
    for face in faces:
        if face in ('near', 'far'):
            across = np.arange(-width / 2, width / 2 + 1e-9, spacing)
            along = np.full_like(across, -length / 2 if face == 'near' else length / 2)
        else:
            along = np.arange(-length / 2, length / 2 + 1e-9, spacing)
            across = np.full_like(along, width / 2 if face == 'left' else -width / 2)
        for height in np.arange(z[0], z[1], 0.4):
            x = center[0] + c * along - s * across
            y = center[1] + s * along + c * across
            rows.append(np.column_stack([x, y, np.full_like(x, height), np.zeros_like(x), np.zeros_like(x)]))
    return np.concatenate(rows).astype(np.float32)


def _boxes(centers, lengths, yaws, labels, width=2.5, height=3.2):
    n = len(labels)
    return Detections3D(0, 'base_link', np.column_stack([np.asarray(centers, float), np.full(n, height / 2)]),
                        np.column_stack([lengths, np.full(n, width), np.full(n, height)]).astype(float),
                        np.asarray(yaws, float), np.zeros((n, 2)), tuple(labels), np.full(n, 0.8))


def test_a_bus_seen_from_behind_is_placed_by_its_near_end_and_a_bus_length():
    # A 12 m bus driving away 20 m ahead: the lidar sees its rear and its left side's first 5 m.
    truth_center, yaw = np.array([26.0, 3.0]), math.radians(4.0)
    points = _surface(truth_center, 12.0, 2.5, yaw, ['near'])
    side = _surface(truth_center, 12.0, 2.5, yaw, ['right'])
    heading = np.array([math.cos(yaw), math.sin(yaw)])
    along = (side[:, :2] - truth_center) @ heading
    points = np.concatenate([points, side[along < 5.0]])
    # What the network gives: 10 m long, centre 1 m toward the sensor and 0.4 m aside, heading off by
    # 5 degrees, truck.
    guess = truth_center - 1.0 * heading + 0.4 * np.array([-heading[1], heading[0]])
    refined = refine_long_boxes(_boxes([guess], [10.0], [yaw + math.radians(5)], ['truck']), points)
    assert refined.labels == ('bus',)  # 11 m of points along its side: no truck is that long
    assert abs(math.degrees(refined.yaws[0] - yaw)) <= 1.0
    assert refined.sizes[0, 0] == pytest.approx(12.0)
    assert np.linalg.norm(refined.centers[0, :2] - truth_center) < 0.25


def test_a_truck_seen_from_the_side_spans_both_ends():
    truth_center, yaw = np.array([-6.0, -14.0]), math.radians(-20.0)
    points = _surface(truth_center, 9.6, 2.5, yaw, ['left'])
    heading = np.array([math.cos(yaw), math.sin(yaw)])
    # The network's box 0.6 m ahead and 0.35 m to the left: the seen side places it across, too.
    boxes = _boxes([truth_center + 0.6 * heading + 0.35 * np.array([-heading[1], heading[0]])], [9.8], [yaw], ['truck'])
    refined = refine_long_boxes(boxes, points)
    assert refined.labels == ('truck',)
    assert refined.sizes[0, 0] == pytest.approx(9.6, abs=0.15)
    assert np.linalg.norm(refined.centers[0, :2] - truth_center) < 0.15
    # Width, height, z, velocity and score stay the network's.
    np.testing.assert_array_equal(refined.sizes[0, 1:], boxes.sizes[0, 1:])
    np.testing.assert_array_equal(refined.centers[0, 2], boxes.centers[0, 2])
    assert refined.scores[0] == boxes.scores[0]


def test_a_short_extent_never_demotes_a_bus():
    # Only the rear of a bus is seen (2.5 m wide, nothing along it): still a bus, 12 m from its rear.
    truth_center, yaw = np.array([0.0, 30.0]), math.radians(90.0)
    points = _surface(truth_center, 12.0, 2.5, yaw, ['near'])
    refined = refine_long_boxes(_boxes([[0.0, 29.0]], [10.5], [yaw], ['bus']), points)
    assert refined.labels == ('bus',)
    assert refined.centers[0, 1] == pytest.approx(30.0, abs=0.2)
    # Heading west across the +-pi seam: the fitted heading stays within [-pi, pi] (as decoded headings).
    back, yaw = np.array([-30.0, 0.0]), math.radians(179.0)
    points = _surface(back, 12.0, 2.5, yaw, ['near', 'left'])
    refined = refine_long_boxes(_boxes([[-29.0, 0.0]], [10.5], [math.radians(-178.0)], ['bus']), points)
    assert -math.pi <= refined.yaws[0] <= math.pi
    assert abs(math.remainder(refined.yaws[0] - yaw, 2 * math.pi)) < math.radians(1.5)


def test_what_is_not_refined_is_left_as_it_was():
    truth_center, yaw = np.array([15.0, 0.0]), 0.0
    points = _surface(truth_center, 12.0, 2.5, yaw, ['near', 'left'])
    boxes = _boxes([[15.5, 0.0], [15.5, 0.0]], [4.5, 10.0], [0.2, 0.2], ['car', 'bus'])
    out = refine_long_boxes(boxes, points)
    np.testing.assert_array_equal(out.centers[0], boxes.centers[0])  # cars are not refined
    assert out.yaws[0] == boxes.yaws[0] and out.labels[0] == 'car'
    assert out.centers[1, 0] != boxes.centers[1, 0]
    for lidar in (None, np.zeros((0, 5), np.float32), points[:5]):  # no points, too few points
        same = refine_long_boxes(boxes, lidar)
        np.testing.assert_array_equal(same.centers, boxes.centers)
    off = refine_long_boxes(boxes, points, RefineSection(enabled=False))
    np.testing.assert_array_equal(off.centers, boxes.centers)
    assert boxes.centers[1, 0] == 15.5  # the input is never changed


def test_old_sweeps_and_broken_points_are_ignored():
    truth_center, yaw = np.array([20.0, 0.0]), 0.0
    points = _surface(truth_center, 12.0, 2.5, yaw, ['near', 'right'])
    smeared = points.copy()
    smeared[:, 0] -= 3.0  # the vehicle 3 m further back, one sweep ago
    smeared[:, 4] = 0.05
    broken = points[:50].copy()
    broken[:, 0] = np.nan
    refined = refine_long_boxes(_boxes([[19.0, 0.0]], [10.0], [0.0], ['bus']),
                                np.concatenate([points, smeared, broken]))
    assert np.isfinite(refined.centers).all()
    assert np.linalg.norm(refined.centers[0, :2] - truth_center) < 0.15


def test_refine_config_is_checked():
    section = config_from_dict(RefineSection, {'lengths': {'truck': 8.0, 'bus': 13.0, 'trailer': 14.0}})
    assert dict(section.lengths) == {'truck': 8.0, 'bus': 13.0, 'trailer': 14.0}
    for bad in ({'lengths': {'bus': -1.0}}, {'yaw_step_deg': 0.0}, {'min_points': 1}, {'margin_m': -1.0},
                {'lengths': {'bus': 'long'}}):
        with pytest.raises(ConfigError):
            config_from_dict(RefineSection, bad)


def test_a_refined_class_the_network_does_not_know_is_a_config_error():
    from mmfusion_ros.config import load_config
    from mmfusion_ros.pipeline import FusionPipeline

    classes = ('car', 'truck', 'bus', 'pedestrian', 'cyclist')
    check_refined_classes(RefineSection(), classes)
    misspelt = RefineSection(lengths={'truck': 9.0, 'buss': 12.0})
    with pytest.raises(ConfigError, match="refine.lengths: 'buss' not among the network's classes"):
        check_refined_classes(misspelt, classes)
    check_refined_classes(RefineSection(enabled=False, lengths={'buss': 12.0}), classes)  # off: nothing to check
    config = dataclasses.replace(load_config(), refine=misspelt)
    with pytest.raises(ConfigError, match='buss'):
        FusionPipeline(config)
