"""Per-detection evidence and single-frame flags, on frames and head maps built by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmfusion_ros.config import ConsistencySection, GridConfig
from mmfusion_ros.consistency import detection_evidence, disagreement_flags, flag_modality
from mmfusion_ros.consistency.evidence import expected_lidar_returns
from mmfusion_ros.frame import CameraView, Frame
from mmfusion_ros.model.config import CLASSES, HeadConfig
from mmfusion_ros.model.network import ABSENT_LOGIT, HeadOutputs, NetOutputs
from mmfusion_ros.types import CameraIntrinsics, Detections3D, RigidTransform

GRID = GridConfig(x_range=(-51.2, 51.2), y_range=(-51.2, 51.2), z_range=(-5.0, 3.0), cell_size=0.8)
HEAD = HeadConfig(output_stride=2)
CELL = GRID.cell_size * HEAD.output_stride
H = W = 64
CONFIG = ConsistencySection()


def heat_at(peaks: list[tuple[float, float, str, float]]) -> torch.Tensor:
    """(1, K, H, W) logits: a 3x3 blob of ``score`` of class ``label`` at each (x, y)."""
    logits = torch.full((1, len(CLASSES), H, W), -8.0)
    for x, y, label, score in peaks:
        col, row = int((x - GRID.x_range[0]) // CELL), int((y - GRID.y_range[0]) // CELL)
        k = CLASSES.index(label)
        logit = float(np.log(score / (1 - score)))
        logits[0, k, row - 1:row + 2, col - 1:col + 2] = logit - 2.0
        logits[0, k, row, col] = logit
    return logits


def outputs(camera=None, lidar=None, radar=None) -> NetOutputs:
    """NetOutputs whose per-modality heads say what is given (None: modality absent)."""
    absent = torch.full((1, len(CLASSES), H, W), ABSENT_LOGIT)
    maps = {'camera': camera, 'lidar': lidar, 'radar': radar}
    zeros = torch.zeros(1, 1, H, W)
    head = HeadOutputs(absent, zeros.repeat(1, 2, 1, 1), zeros, zeros.repeat(1, 3, 1, 1), zeros.repeat(1, 2, 1, 1),
                       zeros.repeat(1, 2, 1, 1))
    present = torch.tensor([m is not None for m in maps.values()])
    return NetOutputs(head, {m: (v if v is not None else absent) for m, v in maps.items()}, {}, present,
                      present.float(), None)


def car(x: float, y: float, vx: float = 0.0, label: str = 'car') -> Detections3D:
    return Detections3D(0, 'base_link', np.array([[x, y, 0.8]]), np.array([[4.5, 1.9, 1.6]]), np.zeros(1),
                        np.array([[vx, 0.0]]), (label,), np.array([0.9]))


def lidar_in_box(x: float, y: float, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = np.zeros((n, 5), np.float32)
    points[:, 0] = x + rng.uniform(-2, 2, n)
    points[:, 1] = y + rng.uniform(-0.8, 0.8, n)
    points[:, 2] = rng.uniform(0.2, 1.4, n)
    return points


def radar_at(x: float, y: float, radial: float, n: int = 3) -> np.ndarray:
    """Returns at (x, y) whose compensated velocity is ``radial`` m/s along the line of sight."""
    points = np.zeros((n, 7), np.float32)
    points[:, 0], points[:, 1], points[:, 2] = x, y, 0.5
    los = np.array([x, y]) / np.hypot(x, y)
    points[:, 3:5] = radial * los
    points[:, 5] = 10.0
    return points


def front_camera() -> CameraView:
    """A 400x225 camera at the origin looking along +x (70 deg wide)."""
    fx = 200 / np.tan(np.radians(35))
    K = np.array([[fx, 0, 200], [0, fx, 112.5], [0, 0, 1]])
    intrinsics = CameraIntrinsics('cam_front', 400, 225, K, 'none', np.zeros(0))
    optical_to_base = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]], float)
    return CameraView('cam_front', 0, np.zeros((225, 400, 3), np.uint8), intrinsics,
                      RigidTransform.from_matrix(optical_to_base))


def frame(lidar=None, radar=None, cameras=()) -> Frame:
    return Frame(0, 'base_link', tuple(cameras), lidar, radar)


def flags_of(detections, frame_, net_outputs):
    evidence = detection_evidence(frame_, detections, net_outputs, GRID, HEAD, CONFIG)
    raw = disagreement_flags(evidence, detections, CLASSES, CONFIG)
    return [name for name, _ in raw[0]], dict(raw[0]), evidence


def test_all_three_agree_no_flag():
    det = car(20, 2, vx=10)
    out = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    names, _, evidence = flags_of(det, frame(lidar_in_box(20, 2), radar_at(20, 2, 10 * 20 / np.hypot(20, 2)),
                                             [front_camera()]), out)
    assert names == []
    assert evidence.supports(CONFIG).all() and evidence.expected().all()
    assert abs(evidence.doppler_residual(det.velocities)[0]) < 0.1


def test_lidar_returns_just_outside_a_box_placed_too_deep_still_back_it():
    """The lidar sees a car's near face (x = 17.6); the box is placed 0.4 m deep (face at 18.0)."""
    rng = np.random.default_rng(1)
    face = np.zeros((30, 5), np.float32)
    face[:, 0], face[:, 1], face[:, 2] = 17.6, rng.uniform(-0.9, 0.9, 30), rng.uniform(0.2, 1.4, 30)
    det = car(20.25, 0)
    out = outputs(heat_at([]), heat_at([(20.25, 0, 'car', 0.1)]), heat_at([]))
    evidence = detection_evidence(frame(face), det, out, GRID, HEAD, CONFIG)
    assert evidence.lidar_points[0] == 30 and evidence.supports(CONFIG)[0, 1]
    strict = dataclasses.replace(CONFIG, lidar_margin_m=0.0)
    assert detection_evidence(frame(face), det, out, GRID, HEAD, strict).lidar_points[0] == 0
    far = face.copy()
    far[:, 0] = 16.9  # a metre off the box: no support
    assert detection_evidence(frame(far), det, out, GRID, HEAD, CONFIG).lidar_points[0] == 0


def test_camera_that_sees_nothing_where_it_looks_is_missing():
    det = car(20, 2)
    out = outputs(heat_at([]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    names, scores, _ = flags_of(det, frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()]), out)
    assert names == ['missing_in_camera'] and scores['missing_in_camera'] >= 1
    assert flag_modality('missing_in_camera') == 'camera'


def test_an_object_outside_the_cameras_view_is_not_flagged_for_the_camera():
    det = car(-20, 2)  # behind the vehicle; the only camera looks ahead
    out = outputs(heat_at([]), heat_at([(-20, 2, 'car', 0.9)]), heat_at([(-20, 2, 'car', 0.7)]))
    names, _, evidence = flags_of(det, frame(lidar_in_box(-20, 2), radar_at(-20, 2, 0.0), [front_camera()]), out)
    assert not evidence.in_camera_view[0] and names == []


def test_an_object_hidden_behind_a_nearer_truck_is_not_expected():
    near = Detections3D(0, 'base_link', np.array([[10, 0, 1.5], [30, 0.3, 0.8]]),
                        np.array([[10, 2.5, 3.2], [4.5, 1.9, 1.6]]), np.zeros(2), np.zeros((2, 2)),
                        ('truck', 'car'), np.array([0.9, 0.6]))
    out = outputs(heat_at([(10, 0, 'truck', 0.8)]), heat_at([(10, 0, 'truck', 0.9), (30, 0.3, 'car', 0.5)]),
                  heat_at([(10, 0, 'truck', 0.6)]))
    evidence = detection_evidence(frame(lidar_in_box(10, 0), radar_at(10, 0, 0.0), [front_camera()]), near, out,
                                  GRID, HEAD, CONFIG)
    raw = disagreement_flags(evidence, near, CLASSES, CONFIG)
    assert not evidence.in_camera_view[1] and not evidence.lidar_expected[1]
    assert [n for n, _ in raw[1]] == []  # nobody expected to see it: no disagreement about it


def pedestrian(x: float, y: float) -> Detections3D:
    return Detections3D(0, 'base_link', np.array([[x, y, 0.9]]), np.array([[0.7, 0.7, 1.75]]), np.zeros(1),
                        np.zeros((1, 2)), ('pedestrian',), np.array([0.8]))


def test_the_lidar_is_expected_to_see_what_its_beams_resolve_at_that_range():
    """A 32-beam lidar puts about 23 returns on a pedestrian at 20 m, 4.5 at 45 m (a beam or two):
    missing there is no disagreement; a car at 45 m still gives it 11 or more."""
    out = outputs(heat_at([]), heat_at([]), heat_at([]))
    lidar = np.zeros((0, 5), np.float32)
    near = detection_evidence(frame(lidar), pedestrian(20, 3), out, GRID, HEAD, CONFIG)
    far = detection_evidence(frame(lidar), pedestrian(45, 3), out, GRID, HEAD, CONFIG)
    assert near.lidar_expected[0] and not far.lidar_expected[0]
    assert 'missing_in_lidar' in [n for n, _ in disagreement_flags(near, pedestrian(20, 3), CLASSES, CONFIG)[0]]
    assert disagreement_flags(far, pedestrian(45, 3), CLASSES, CONFIG)[0] == ()
    assert detection_evidence(frame(lidar), car(45, 3), out, GRID, HEAD, CONFIG).lidar_expected[0]
    # A lidar with four times the beams and firings resolves the pedestrian at 45 m; the range still bounds it.
    fine = dataclasses.replace(CONFIG, lidar_beam_spacing_deg=0.33, lidar_azimuth_step_deg=0.1)
    assert detection_evidence(frame(lidar), pedestrian(45, 3), out, GRID, HEAD, fine).lidar_expected[0]
    assert not detection_evidence(frame(lidar), car(55, 3), out, GRID, HEAD, fine).lidar_expected[0]
    # 0: the range alone.
    assert detection_evidence(frame(lidar), pedestrian(45, 3), out, GRID, HEAD,
                              dataclasses.replace(CONFIG, lidar_expected_points=0.0)).lidar_expected[0]
    # 3.8 beams (5.0 degrees of height at 20 m) times 6.1 firings (2.0 degrees of width).
    assert expected_lidar_returns(pedestrian(20, 0), CONFIG)[0] == pytest.approx(3.76 * 6.08, rel=0.02)


def test_only_lidar_when_camera_and_radar_should_see_it():
    det = car(20, 2)
    out = outputs(heat_at([]), heat_at([(20, 2, 'car', 0.9)]), heat_at([]))
    names, _, _ = flags_of(det, frame(lidar_in_box(20, 2), np.zeros((0, 7), np.float32), [front_camera()]), out)
    assert names == ['missing_in_camera', 'missing_in_radar', 'only_lidar']


def test_radar_doppler_against_the_objects_velocity():
    det = car(20, 0, vx=15.0)  # moving away at 15 m/s; the radar says it stands still
    out = outputs(heat_at([(20, 0, 'car', 0.8)]), heat_at([(20, 0, 'car', 0.9)]), heat_at([(20, 0, 'car', 0.7)]))
    names, scores, evidence = flags_of(det, frame(lidar_in_box(20, 0), radar_at(20, 0, 0.0), [front_camera()]), out)
    assert names == ['velocity_conflict:radar']
    assert evidence.doppler_residual(det.velocities)[0] == pytest.approx(-15.0, abs=0.01)
    assert scores['velocity_conflict:radar'] == pytest.approx(15.0 / (2.5 + 0.25 * 15.0), rel=1e-3)
    assert flag_modality('velocity_conflict:radar') == 'radar'


def test_clutter_beside_a_fast_object_does_not_hide_its_own_returns():
    # A car at 25 m/s beside a guard rail: 3 of its 5 nearby returns are the rail's (static); the
    # median is the rail's, but the car's own returns move as the car does.
    det = car(20, 0, vx=25.0)
    out = outputs(heat_at([(20, 0, 'car', 0.8)]), heat_at([(20, 0, 'car', 0.9)]), heat_at([(20, 0, 'car', 0.7)]))
    returns = np.concatenate([radar_at(20, 0, 25.0, n=2), radar_at(20.5, 0.6, 0.0, n=3)])
    names, _, evidence = flags_of(det, frame(lidar_in_box(20, 0), returns, [front_camera()]), out)
    assert 'velocity_conflict:radar' not in names
    tolerance = np.array([2.5 + 0.25 * 25.0])
    assert evidence.doppler_agreement(det.velocities, tolerance)[0] == pytest.approx(0.4)
    # All five static: the radar says it does not move.
    names, _, evidence = flags_of(det, frame(lidar_in_box(20, 0), radar_at(20, 0, 0.0, n=5), [front_camera()]), out)
    assert names == ['velocity_conflict:radar']
    assert evidence.doppler_agreement(det.velocities, tolerance)[0] == 0.0


def test_a_modality_that_sees_another_class():
    det = car(20, 2)
    out = outputs(heat_at([(20, 2, 'car', 0.3), (20, 2, 'pedestrian', 0.9)]), heat_at([(20, 2, 'car', 0.9)]),
                  heat_at([(20, 2, 'car', 0.7)]))
    names, _, _ = flags_of(det, frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()]), out)
    assert names == ['class_conflict:camera']


def test_a_modality_that_sees_it_displaced():
    det = car(20, 2)
    out = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]),
                  heat_at([(20, 2, 'car', 0.3), (20 + 6 * CELL / 2, 2, 'car', 0.8)]))  # radar 4.8 m further
    names, scores, evidence = flags_of(det, frame(lidar_in_box(20, 2), radar_at(24.8, 2, 0.0), [front_camera()]), out)
    assert 'position_conflict:radar' in names
    assert evidence.offset[0, 2, 0] == pytest.approx(4.8, abs=0.5)


def test_a_neighbours_peak_is_not_taken_for_a_displaced_object():
    # Two cars parked 4.8 m apart; the lidar's head is surer of the second. Each detection's own
    # lidar peak is its own, not the neighbour's stronger one inside its search window.
    a, b = car(20, 2), car(20, 2 + 6 * CELL / 2)
    both = Detections3D(0, 'base_link', np.concatenate([a.centers, b.centers]), np.concatenate([a.sizes, b.sizes]),
                        np.zeros(2), np.zeros((2, 2)), ('car', 'car'), np.array([0.9, 0.9]))
    out = outputs(heat_at([(20, 2, 'car', 0.8), (20, 6.8, 'car', 0.8)]),
                  heat_at([(20, 2, 'car', 0.6), (20, 6.8, 'car', 0.95)]),
                  heat_at([(20, 2, 'car', 0.7), (20, 6.8, 'car', 0.7)]))
    lidar = np.concatenate([lidar_in_box(20, 2), lidar_in_box(20, 6.8)])
    radar = np.concatenate([radar_at(20, 2, 0.0), radar_at(20, 6.8, 0.0)])
    evidence = detection_evidence(frame(lidar, radar, [front_camera()]), both, out, GRID, HEAD, CONFIG)
    assert np.abs(evidence.offset[:, 1]).max() < 1.0
    assert evidence.peak[0, 1] == pytest.approx(0.6, abs=0.01)
    assert disagreement_flags(evidence, both, CLASSES, CONFIG) == ((), ())


def test_a_neighbours_class_is_not_taken_for_the_objects():
    # A cyclist riding 3.2 m beside a parked car, both detected: the lidar's and camera's car peak is
    # the car's; at the cyclist's own cells they say cyclist. No class conflict for either.
    rider = Detections3D(0, 'base_link', np.array([[20.0, 2.0, 0.9], [20.0, 2.0 + 2 * CELL, 0.8]]),
                         np.array([[1.8, 0.7, 1.7], [4.5, 1.9, 1.6]]), np.zeros(2), np.zeros((2, 2)),
                         ('cyclist', 'car'), np.array([0.8, 0.9]))
    camera = heat_at([(20, 2, 'cyclist', 0.3), (20, 2 + 2 * CELL, 'car', 0.99)])
    lidar = heat_at([(20, 2, 'cyclist', 0.3), (20, 2 + 2 * CELL, 'car', 0.99)])
    out = outputs(camera, lidar, heat_at([(20, 2, 'cyclist', 0.3), (20, 2 + 2 * CELL, 'car', 0.7)]))
    points = np.concatenate([lidar_in_box(20, 2), lidar_in_box(20, 2 + 2 * CELL)])
    radar = np.concatenate([radar_at(20, 2, 0.0), radar_at(20, 2 + 2 * CELL, 0.0)])
    evidence = detection_evidence(frame(points, radar, [front_camera()]), rider, out, GRID, HEAD, CONFIG)
    assert evidence.head_class[0, 1] == CLASSES.index('cyclist')
    flags = disagreement_flags(evidence, rider, CLASSES, CONFIG)
    assert not any(name.startswith('class_conflict') for row in flags for name, _ in row), flags
    # Alone (the car not detected), the car's cells are the cyclist's to claim: the conflict is real.
    alone = Detections3D(0, 'base_link', rider.centers[:1], rider.sizes[:1], np.zeros(1), np.zeros((1, 2)),
                         ('cyclist',), np.array([0.8]))
    evidence = detection_evidence(frame(points, radar, [front_camera()]), alone, out, GRID, HEAD, CONFIG)
    assert evidence.head_class[0, 1] == CLASSES.index('car')


def test_camera_displacement_along_its_line_of_sight_is_tolerated():
    det = car(20, 0)
    out = outputs(heat_at([(20, 0, 'car', 0.3), (24.8, 0, 'car', 0.8)]),  # 4.8 m further: the camera's depth
                  heat_at([(20, 0, 'car', 0.9)]), heat_at([(20, 0, 'car', 0.7)]))
    names, _, _ = flags_of(det, frame(lidar_in_box(20, 0), radar_at(20, 0, 0.0), [front_camera()]), out)
    assert not any(n.startswith('position_conflict') for n in names)


def test_an_absent_modality_raises_nothing_and_reads_absent():
    det = car(20, 2)
    out = outputs(None, heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    names, _, evidence = flags_of(det, frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0)), out)
    assert names == [] and np.isnan(evidence.head[0, 0]) and evidence.head_class[0, 0] == -1


def test_pedestrians_far_away_are_not_expected_in_radar():
    det = car(40, 2, label='pedestrian')
    out = outputs(heat_at([(40, 2, 'pedestrian', 0.8)]), heat_at([(40, 2, 'pedestrian', 0.9)]), heat_at([]))
    names, _, evidence = flags_of(det, frame(lidar_in_box(40, 2), np.zeros((0, 7), np.float32), [front_camera()]), out)
    assert not evidence.radar_expected[0] and names == []


def test_an_object_only_a_blind_camera_should_see_has_no_camera_support():
    det = car(20, 2)
    out = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    f = frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()])
    evidence = detection_evidence(f, det, out, GRID, HEAD, CONFIG, blind_cameras=['cam_front'])
    raw = disagreement_flags(evidence, det, CLASSES, CONFIG)
    assert evidence.camera_blind[0] and [n for n, _ in raw[0]] == ['missing_in_camera']
    # Behind the vehicle the blind front camera is no reason for anything.
    det = car(-20, 2)
    evidence = detection_evidence(f, det, outputs(heat_at([]), heat_at([(-20, 2, 'car', 0.9)]),
                                                  heat_at([(-20, 2, 'car', 0.7)])), GRID, HEAD, CONFIG,
                                  blind_cameras=['cam_front'])
    assert not evidence.camera_blind[0]


def test_doppler_is_checked_against_the_given_track_velocity():
    det = car(20, 0, vx=6.0)  # this frame's regressed velocity is off; the track knows 15 m/s
    out = outputs(heat_at([(20, 0, 'car', 0.8)]), heat_at([(20, 0, 'car', 0.9)]), heat_at([(20, 0, 'car', 0.7)]))
    f = frame(lidar_in_box(20, 0), radar_at(20, 0, 15.0), [front_camera()])
    evidence = detection_evidence(f, det, out, GRID, HEAD, CONFIG)
    assert [n for n, _ in disagreement_flags(evidence, det, CLASSES, CONFIG)[0]] == ['velocity_conflict:radar']
    track = np.array([[15.0, 0.0]])
    assert disagreement_flags(evidence, det, CLASSES, CONFIG, track)[0] == ()
    assert disagreement_flags(evidence, det, CLASSES, CONFIG, np.full((1, 2), np.nan))[0] == ()  # unknown: no check


def test_a_blind_cameras_missing_objects_are_flagged_at_once_others_after_two_frames():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    stage = ConsistencyStage()
    f = frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()])
    det = car(20, 2)
    out = outputs(heat_at([]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    blind = detection_evidence(f, det, out, GRID, HEAD, CONFIG, blind_cameras=['cam_front'])
    assert stage.update(f, det, blind, CLASSES, CONFIG).flags == (('missing_in_camera',),)
    # The same absence without a health verdict (of an object the camera saw before) waits for a
    # second frame (2 of 3).
    stage = ConsistencyStage()
    seen = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    assert stage.update(f, det, detection_evidence(f, det, seen, GRID, HEAD, CONFIG), CLASSES, CONFIG).flags == ((),)
    sighted = detection_evidence(f, det, out, GRID, HEAD, CONFIG)
    for k, expected in ((1, ((),)), (2, (('missing_in_camera',),))):
        later = dataclasses.replace(f, stamp_ns=k * 50_000_000)
        assert stage.update(later, dataclasses.replace(det, stamp_ns=later.stamp_ns), sighted, CLASSES,
                            CONFIG).flags == expected


def test_an_object_only_a_silent_radar_covers_has_no_radar_support():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    mounts = {'radar_front': RigidTransform.from_matrix(np.array([[1, 0, 0, 2.3], [0, 1, 0, 0], [0, 0, 1, 0.5],
                                                                   [0, 0, 0, 1]], float)),
              'radar_back': RigidTransform.from_matrix(np.array([[-1, 0, 0, -1.7], [0, -1, 0, 0], [0, 0, 1, 0.5],
                                                                  [0, 0, 0, 1]], float))}
    det = car(20, 2)
    out = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    f = frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()])  # returns from before it fell silent
    evidence = detection_evidence(f, det, out, GRID, HEAD, CONFIG, blind_radars=['radar_front'], radar_mounts=mounts)
    assert evidence.radar_blind[0] and not evidence.supports(CONFIG)[0, 2]
    assert ConsistencyStage().update(f, det, evidence, CLASSES, CONFIG).flags == (('missing_in_radar',),)
    # Behind the vehicle the back radar still sees: the silent front radar is no reason there.
    det = car(-20, 2)
    evidence = detection_evidence(f, det, out, GRID, HEAD, CONFIG, blind_radars=['radar_front'], radar_mounts=mounts)
    assert not evidence.radar_blind[0]


def radar_front_mount() -> dict[str, RigidTransform]:
    return {'radar_front': RigidTransform.from_matrix(np.array([[1, 0, 0, 2.3], [0, 1, 0, 0], [0, 0, 1, 0.5],
                                                                [0, 0, 0, 1]], float))}


def wall(y: float, height: float, x0: float = 4.0, x1: float = 40.0) -> np.ndarray:
    """Lidar returns (N, 5) on a wall along x at ``y``, up to ``height``, and on the road before it."""
    x, z = np.meshgrid(np.arange(x0, x1, 0.1), np.arange(0.05, height, 0.2))
    face = np.column_stack([x.ravel(), np.full(x.size, y), z.ravel()])
    gx, gy = np.meshgrid(np.arange(x0, x1, 0.5), np.arange(-3.0, y, 0.5))
    ground = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    return np.column_stack([np.vstack([face, ground]), np.zeros((len(face) + len(ground), 2))]).astype(np.float32)


def test_the_radar_is_not_expected_behind_what_the_lidar_sees_low_in_between():
    beyond, ahead = car(20, 14), car(20, 0)
    both = Detections3D(0, 'base_link', np.vstack([beyond.centers, ahead.centers]), np.vstack([beyond.sizes, ahead.sizes]),
                        np.zeros(2), np.zeros((2, 2)), ('car', 'car'), np.array([0.9, 0.9]))
    out = outputs(heat_at([(20, 14, 'car', 0.8), (20, 0, 'car', 0.8)]), heat_at([(20, 14, 'car', 0.9), (20, 0, 'car', 0.9)]),
                  heat_at([]))
    cars = np.vstack([lidar_in_box(20, 14), lidar_in_box(20, 0)])

    def radar_expected(lidar: np.ndarray) -> np.ndarray:
        return detection_evidence(frame(lidar, radar_at(60, -30, 0.0)), both, out, GRID, HEAD, CONFIG,
                                  radar_mounts=radar_front_mount()).radar_expected

    # A 0.9 m barrier 5 m to the side: the radar at 0.5 m sees no more than a strip of roof beyond it;
    # the car ahead, whose line of sight the barrier does not cross, is still expected.
    assert radar_expected(np.vstack([cars, wall(5.0, 0.9)])).tolist() == [False, True]
    evidence = detection_evidence(frame(np.vstack([cars, wall(5.0, 0.9)]), radar_at(60, -30, 0.0)), both, out, GRID,
                                  HEAD, CONFIG, radar_mounts=radar_front_mount())
    assert [name for name, _ in disagreement_flags(evidence, both, CLASSES, CONFIG)[0]] == []
    # The road alone, a kerb, and a barrier low enough that most of the car shows over it block nothing.
    assert radar_expected(np.vstack([cars, wall(5.0, 0.05)])).tolist() == [True, True]
    assert radar_expected(np.vstack([cars, wall(5.0, 0.2)])).tolist() == [True, True]
    evidence = detection_evidence(frame(np.vstack([cars, wall(5.0, 0.05)]), radar_at(60, -30, 0.0)), both, out, GRID,
                                  HEAD, CONFIG, radar_mounts=radar_front_mount())
    assert 'missing_in_radar' in [name for name, _ in disagreement_flags(evidence, both, CLASSES, CONFIG)[0]]
    # A wall beyond the car is no obstacle; without a lidar, or without radar mounts, the range alone decides.
    assert radar_expected(np.vstack([cars, wall(18.0, 2.0)])).tolist() == [True, True]
    assert detection_evidence(frame(None, radar_at(60, -30, 0.0)), both, out, GRID, HEAD, CONFIG,
                              radar_mounts=radar_front_mount()).radar_expected.tolist() == [True, True]
    assert detection_evidence(frame(np.vstack([cars, wall(5.0, 0.9)]), radar_at(60, -30, 0.0)), both, out, GRID, HEAD,
                              CONFIG).radar_expected.tolist() == [True, True]
    # A taller object shows over the barrier: a bus beyond it is expected.
    bus = Detections3D(0, 'base_link', np.array([[20, 14, 1.6]]), np.array([[11.0, 2.9, 3.2]]), np.zeros(1),
                       np.zeros((1, 2)), ('bus',), np.array([0.9]))
    assert detection_evidence(frame(np.vstack([cars, wall(5.0, 0.9)]), radar_at(60, -30, 0.0)), bus,
                              outputs(heat_at([]), heat_at([]), heat_at([])), GRID, HEAD, CONFIG,
                              radar_mounts=radar_front_mount()).radar_expected.tolist() == [True]


def lidar_returns_of(surfaces: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """What a roof lidar at (0, 0, 1.84) (beams 1.33 deg apart, firings 0.33 deg) gets back from vertical
    surfaces facing it, each (x, y0, y1, z0, z1) across y at x, the nearest surface first along each
    beam; the road (z = 0) beyond up to 60 m where no surface stops the beam."""
    azimuth = np.radians(np.arange(-60, 60, 0.33))
    elevation = np.radians(np.arange(-15, 5, 1.33))
    az, el = np.meshgrid(azimuth, elevation)
    direction = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    best = np.full(len(direction), np.inf)
    with np.errstate(divide='ignore', invalid='ignore'):
        ground = np.where(direction[:, 2] < 0, -1.84 / direction[:, 2], np.inf)
        best = np.where(ground * np.hypot(direction[:, 0], direction[:, 1]) <= 60, ground, best)
        for x, y0, y1, z0, z1 in surfaces:
            t = x / direction[:, 0]
            y, z = t * direction[:, 1], 1.84 + t * direction[:, 2]
            hit = (t > 0) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
            best = np.where(hit & (t < best), t, best)
    keep = np.isfinite(best)
    xyz = direction[keep] * best[keep, None] + [0, 0, 1.84]
    return np.column_stack([xyz, np.zeros((len(xyz), 2))]).astype(np.float32)


def test_the_lidar_is_not_expected_where_its_own_beams_stop_nearer():
    lidar_mount = RigidTransform.from_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1.84], [0, 0, 0, 1]],
                                                      float))
    cyclist = Detections3D(0, 'base_link', np.array([[20.0, 1.0, 0.85]]), np.array([[1.8, 0.7, 1.7]]), np.zeros(1),
                           np.zeros((1, 2)), ('cyclist',), np.array([0.9]))
    out = outputs(heat_at([(20, 1, 'cyclist', 0.8)]), heat_at([]), heat_at([(20, 1, 'cyclist', 0.8)]))

    def lidar_evidence(surfaces):
        points = lidar_returns_of(surfaces)
        f = Frame(0, 'base_link', (front_camera(),), points, radar_at(20, 1, 0.0),
                  sensor_to_base={'lidar_top': lidar_mount}, lidar_sensor=np.zeros(len(points), np.int16),
                  lidar_sensors=('lidar_top',))
        evidence = detection_evidence(f, cyclist, out, GRID, HEAD, CONFIG)
        return evidence, [name for name, _ in disagreement_flags(evidence, cyclist, CLASSES, CONFIG)[0]]

    # A van (not detected: only the cyclist is) 8 m ahead stands across the cyclist's line of sight:
    # the lidar's beams stop on it, so the lidar is not expected to see the cyclist behind it.
    evidence, names = lidar_evidence([(12.0, -1.0, 3.0, 0.3, 2.6)])
    assert evidence.lidar_points[0] < CONFIG.min_lidar_points
    assert not evidence.lidar_expected[0] and 'missing_in_lidar' not in names
    # A van to the side leaves the line open: the beams run past where the cyclist is said to be, and on.
    evidence, names = lidar_evidence([(12.0, -6.0, -3.5, 0.3, 2.6)])
    assert evidence.lidar_expected[0] and 'missing_in_lidar' in names
    # A low barrier the beams pass over hides little; a wall far behind hides nothing.
    assert lidar_evidence([(12.0, -1.0, 3.0, 0.0, 0.5), (40.0, -10.0, 10.0, 0.0, 3.0)])[0].lidar_expected[0]
    # Without the lidar's mount the frame can not say where its beams came from: the old expectation.
    points = lidar_returns_of([(12.0, -1.0, 3.0, 0.3, 2.6)])
    f = Frame(0, 'base_link', (front_camera(),), points, None, lidar_sensor=np.zeros(len(points), np.int16),
              lidar_sensors=('lidar_top',))
    assert detection_evidence(f, cyclist, out, GRID, HEAD, CONFIG).lidar_expected[0]


def test_a_healthy_modality_is_said_to_miss_only_an_object_it_has_seen():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    det = car(20, 2)
    seen = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([(20, 2, 'car', 0.7)]))
    unseen = outputs(heat_at([(20, 2, 'car', 0.8)]), heat_at([(20, 2, 'car', 0.9)]), heat_at([]))

    def run(stage, heads, healthy=(True, True, True)):
        flags = []
        for k, out in enumerate(heads):
            stamp = k * 50_000_000
            f = dataclasses.replace(frame(lidar_in_box(20, 2), None if out is unseen else radar_at(20, 2, 0.0),
                                          [front_camera()]), stamp_ns=stamp)
            evidence = detection_evidence(f, dataclasses.replace(det, stamp_ns=stamp), out, GRID, HEAD, CONFIG)
            flags.append(stage.update(f, dataclasses.replace(det, stamp_ns=stamp), evidence, CLASSES, CONFIG,
                                      healthy).flags[0])
        return flags

    # Never seen by the radar (a barrier below it): no disagreement, however long the track.
    assert all('missing_in_radar' not in f for f in run(ConsistencyStage(), [unseen] * 10))
    # Seen once: its absence then is a disagreement, confirmed in 2 of 3 frames, for as long as it lasts.
    flags = run(ConsistencyStage(), [seen] + [unseen] * 10)
    assert 'missing_in_radar' not in flags[1] and all('missing_in_radar' in f for f in flags[2:])
    # A radar that health does not call ok gets no benefit of the doubt.
    flags = run(ConsistencyStage(), [unseen] * 10, healthy=(True, True, False))
    assert all('missing_in_radar' in f for f in flags[1:])
    # Geometry alone decides when asked to.
    alone = dataclasses.replace(CONFIG, missing_after_sightings=0)
    stage = ConsistencyStage()
    f = frame(lidar_in_box(20, 2), None, [front_camera()])
    evidence = detection_evidence(f, det, unseen, GRID, HEAD, alone)
    flags = [stage.update(dataclasses.replace(f, stamp_ns=k * 50_000_000),
                          dataclasses.replace(det, stamp_ns=k * 50_000_000), evidence, CLASSES, alone).flags[0]
             for k in range(3)]
    assert 'missing_in_radar' in flags[2]


def test_an_object_only_one_modality_ever_sees_stays_flagged_as_such():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    det = car(20, 2)
    ghost = outputs(heat_at([]), heat_at([]), heat_at([(20, 2, 'car', 0.7)]))  # the radar's alone
    f = frame(lidar_in_box(-30, 10), radar_at(20, 2, 0.0), [front_camera()])  # the lidar sees elsewhere
    stage = ConsistencyStage()
    flags = [stage.update(dataclasses.replace(f, stamp_ns=k * 50_000_000),
                          dataclasses.replace(det, stamp_ns=k * 50_000_000),
                          detection_evidence(f, det, ghost, GRID, HEAD, CONFIG), CLASSES, CONFIG).flags[0]
             for k in range(12)]
    assert all(fl == ('only_radar',) for fl in flags[1:])  # not 'missing' in the others: they never saw it


def ahead_and_behind():
    """Two cars, 20 m ahead and 20 m behind, every modality's head and returns on both; front camera."""
    both = Detections3D(0, 'base_link', np.array([[20, 2, 0.8], [-20, -2, 0.8]]), np.tile([4.5, 1.9, 1.6], (2, 1)),
                        np.zeros(2), np.zeros((2, 2)), ('car', 'car'), np.array([0.9, 0.9]))
    out = outputs(*(heat_at([(20, 2, 'car', score), (-20, -2, 'car', score)]) for score in (0.8, 0.9, 0.7)))
    f = frame(np.concatenate([lidar_in_box(20, 2), lidar_in_box(-20, -2)]),
              np.concatenate([radar_at(20, 2, 0.0), radar_at(-20, -2, 0.0)]), [front_camera()])
    return both, out, f


def test_an_object_in_a_sector_the_lidar_lost_has_no_lidar_support_and_is_flagged_at_once():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    both, out, f = ahead_and_behind()  # the lidar's head (older sweeps) still shows both
    mount = RigidTransform.from_matrix(np.eye(4))
    # The arc 150 deg -> -150 deg (across the back, wrapping at 180) is lost: the car behind is in it.
    lost = {'lidar_top': (mount, 150.0, -150.0)}
    evidence = detection_evidence(f, both, out, GRID, HEAD, CONFIG, lost_lidar_sectors=lost)
    assert evidence.lidar_blind.tolist() == [False, True]
    assert evidence.supports(CONFIG)[:, 1].tolist() == [True, False]
    stage = ConsistencyStage()
    assert stage.update(f, both, evidence, CLASSES, CONFIG).flags == ((), ('missing_in_lidar',))
    # The arc ahead instead: the car ahead is in it.
    ahead_lost = detection_evidence(f, both, out, GRID, HEAD, CONFIG, lost_lidar_sectors={'lidar_top': (mount, -30.0, 30.0)})
    assert ahead_lost.lidar_blind.tolist() == [True, False]


def test_objects_in_the_view_of_a_sensor_in_trouble_say_so_at_once():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    both, out, f = ahead_and_behind()
    front_radar = RigidTransform.from_matrix(np.eye(4))  # at the origin, looking ahead
    mounts = {'radar_front': front_radar}

    def flags(degraded):
        evidence = detection_evidence(f, both, out, GRID, HEAD, CONFIG, radar_mounts=mounts, degraded_sensors=degraded)
        return ConsistencyStage().update(f, both, evidence, CLASSES, CONFIG).flags  # one frame: health confirmed

    assert flags({}) == ((), ())
    # The glaring front camera sees only the car ahead; the car behind is no camera's.
    assert flags({'cam_front': 'camera'}) == (('degraded:camera',), ())
    # A lidar losing beams: everything in its range.
    assert flags({'lidar_top': 'lidar'}) == (('degraded:lidar',), ('degraded:lidar',))
    # The front radar's ghosts: what is in its field of view.
    assert flags({'radar_front': 'radar'}) == (('degraded:radar',), ())
    assert flag_modality('degraded:radar') == 'radar'
    # A back radar beside it changes nothing the camera sees (each evidence field from its own sensor).
    mounts['radar_back'] = RigidTransform.from_matrix(np.diag([-1.0, -1.0, 1.0, 1.0]))
    evidence = detection_evidence(f, both, out, GRID, HEAD, CONFIG, radar_mounts=mounts,
                                  degraded_sensors={'radar_back': 'radar'})
    assert evidence.in_camera_view.tolist() == [True, False]
    assert evidence.degraded[:, 2].tolist() == [False, True]


def test_a_patch_on_the_lens_blinds_the_camera_only_behind_it():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    # Two cars 20 m ahead, 4 m to the left (left of the image) and 4 m to the right; every head sees both.
    both = Detections3D(0, 'base_link', np.array([[20, 4, 0.8], [20, -4, 0.8]]), np.tile([4.5, 1.9, 1.6], (2, 1)),
                        np.zeros(2), np.zeros((2, 2)), ('car', 'car'), np.array([0.9, 0.9]))
    out = outputs(*(heat_at([(20, 4, 'car', score), (20, -4, 'car', score)]) for score in (0.8, 0.9, 0.7)))
    f = frame(np.concatenate([lidar_in_box(20, 4), lidar_in_box(20, -4)]),
              np.concatenate([radar_at(20, 4, 0.0), radar_at(20, -4, 0.0)]), [front_camera()])
    patch = {'cam_front': (0.0, 0.2, 0.45, 0.9)}  # mud over the left of the image
    evidence = detection_evidence(f, both, out, GRID, HEAD, CONFIG, degraded_sensors={'cam_front': 'camera'},
                                  occluded_regions=patch)
    assert evidence.in_camera_view.tolist() == [True, True]
    assert evidence.camera_blind.tolist() == [True, False]
    assert evidence.degraded[:, 0].tolist() == [True, False]
    flags = ConsistencyStage().update(f, both, evidence, CLASSES, CONFIG).flags
    assert flags == (('degraded:camera', 'missing_in_camera'), ())  # at once: health confirmed the patch
    # Without the patch's place, the camera in trouble is every object's concern.
    whole = detection_evidence(f, both, out, GRID, HEAD, CONFIG, degraded_sensors={'cam_front': 'camera'})
    assert whole.degraded[:, 0].tolist() == [True, True] and not whole.camera_blind.any()


def test_a_frame_without_detections_has_empty_evidence_of_every_kind():
    from mmfusion_ros.consistency.stage import ConsistencyStage

    none = Detections3D.empty(0, 'base_link')
    out = outputs(heat_at([]), heat_at([]), heat_at([]))
    evidence = detection_evidence(frame(lidar_in_box(20, 2), radar_at(20, 2, 0.0), [front_camera()]), none, out,
                                  GRID, HEAD, CONFIG)
    assert len(evidence) == 0 and evidence.supports(CONFIG).shape == (0, 3) and evidence.expected().shape == (0, 3)
    assert evidence.degraded.shape == (0, 3) and evidence.lidar_blind.shape == (0,)
    assert ConsistencyStage().update(frame(), none, evidence, CLASSES, CONFIG).flags == ()
