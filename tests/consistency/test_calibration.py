"""Calibration health: camera drift by edge alignment, clock offsets from tracks.

The drift tests build their scene here: boxes, poles and walls on a ground plane, a 400x225 camera at
the simulator rig's ``cam_front`` mount rendered (one ray per pixel) from its TRUE pose, nominal @ the
simulator's own ``pose_error``, and a 32-beam sweep ray-cast from the rig's ``lidar_top``. The
estimator is given the NOMINAL calibration, as a drifted car would give it.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
import yaml

from mmfusion_ros.config import CalibrationSection, FusionConfig, SensorConfig, config_from_dict
from mmfusion_ros.consistency import calibration
from mmfusion_ros.consistency.calibration import (
    OPTICAL_TO_BODY,
    CameraDriftEstimator,
    TimeOffsetEstimator,
    alignment_scores,
    alignment_scores_reference,
    edge_samples,
    lidar_edge_samples,
    rotation_grid,
    spread_edges,
    spread_edges_reference,
)
from mmfusion_ros.errors import CalibrationError, ConfigError
from mmfusion_ros.frame import CameraView
from mmfusion_ros.geometry.projection import depth_images, project_points
from mmfusion_ros.sim.faults import FaultSpec, pose_error
from mmfusion_ros.sim.rig import BODY_TO_OPTICAL, Rig
from mmfusion_ros.types import CameraIntrinsics, DiagnosticStatus, RigidTransform

RIG = Rig()
CAMERA = 'cam_front'
INTRINSICS = RIG.camera.intrinsics(CAMERA)  # 400 x 225, 70 degree horizontal field of view
LIDAR_ORIGIN = RIG.sensor_to_base('lidar_top').translation  # (0, 0, 1.84)
SKY, GROUND, LANE = 225.0, 85.0, 210.0

# (centre x y z, size length width height, yaw deg) in base_link at the first frame: cars, vans,
# trucks, poles, a kiosk turned 45 degrees, buildings, a wall closing the street.
BOXES = (
    ((14.0, 3.6, 1.4), (4.6, 1.9, 2.8), 0.0), ((20.0, -3.2, 0.6), (4.2, 1.8, 1.2), 8.0),
    ((28.0, 1.2, 1.7), (9.0, 2.5, 3.4), 0.0), ((11.0, -5.5, 2.5), (0.3, 0.3, 5.0), 0.0),
    ((17.0, 6.5, 2.8), (0.3, 0.3, 5.6), 0.0), ((24.0, -6.5, 3.0), (0.4, 0.4, 6.0), 0.0),
    ((34.0, 11.0, 2.5), (14.0, 5.0, 5.0), 20.0), ((38.0, -12.0, 2.2), (12.0, 5.0, 4.4), -15.0),
    ((50.0, 0.0, 3.0), (1.0, 40.0, 6.0), 0.0), ((9.0, 5.0, 0.5), (1.2, 1.2, 1.0), 30.0),
    ((22.0, 4.5, 1.25), (2.0, 2.0, 2.5), 45.0), ((31.0, -3.5, 1.1), (3.0, 2.0, 2.2), 0.0),
    ((13.0, -6.0, 1.3), (5.0, 2.2, 2.6), 0.0), ((19.0, 8.5, 1.6), (6.0, 2.4, 3.2), 10.0),
    ((27.0, -9.5, 1.5), (4.0, 4.0, 3.0), 0.0),
)
SHADES = np.random.default_rng(0).uniform(30.0, 170.0, (len(BOXES), 3))  # grey per box and face axis
EGO_STEP_M = 0.5  # the ego drives this far between frames (10 m/s at 20 Hz)


def cast(origin: np.ndarray, directions: np.ndarray, ego_x: float,
         boxes: tuple = BOXES) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each unit ray ``(N, 3)`` to the nearest surface (inf: sky) and its grey level."""
    distance = np.full(len(directions), np.inf)
    shade = np.full(len(directions), SKY)
    with np.errstate(divide='ignore', invalid='ignore'):
        for b, (centre, size, yaw) in enumerate(boxes):
            c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
            box_to_base = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            o = (origin - np.asarray(centre) + [ego_x, 0.0, 0.0]) @ box_to_base  # ray in the box frame
            d = directions @ box_to_base
            half = np.asarray(size) / 2
            near = np.minimum((-half - o) / d, (half - o) / d)  # slabs
            far = np.maximum((-half - o) / d, (half - o) / d)
            enter, leave, face = near.max(axis=1), far.min(axis=1), near.argmax(axis=1)
            hit = (leave >= enter) & (enter > 0) & (enter < distance)
            distance[hit] = enter[hit]
            shade[hit] = SHADES[b, face[hit]]
        to_ground = -origin[2] / directions[:, 2]
        ground = (directions[:, 2] < 0) & (to_ground < distance)
        distance[ground] = to_ground[ground]
        xy = origin[:2] + directions[ground, :2] * to_ground[ground, None]
        dashes = (np.abs(np.abs(xy[:, 1]) - 1.75) < 0.08) & ((xy[:, 0] + ego_x) % 6.0 < 3.0)
        shade[ground] = np.where(dashes, LANE, GROUND)
    return distance, shade


def render(camera_to_base: RigidTransform, ego_x: float, rng: np.random.Generator, boxes: tuple = BOXES) -> np.ndarray:
    """(H, W, 3) uint8: one ray per pixel centre (integer coordinates, as the simulator renders)."""
    width, height, k = INTRINSICS.width, INTRINSICS.height, INTRINSICS.k
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
    directions = rays @ camera_to_base.rotation.T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    _, shade = cast(camera_to_base.translation, directions, ego_x, boxes)
    grey = shade.reshape(height, width) + rng.normal(0.0, 2.0, (height, width))
    return np.clip(np.stack([grey, 0.95 * grey, 0.9 * grey], axis=-1), 0, 255).astype(np.uint8)


def sweep(ego_x: float, rng: np.random.Generator, boxes: tuple = BOXES) -> np.ndarray:
    """(N, 3) float32: a 32-beam, 1084-step turn of the rig's lidar, 70 m range, 2 cm noise."""
    elevation = np.radians(np.linspace(*RIG.lidar.elevation_deg, RIG.lidar.beams))
    azimuth = np.linspace(-np.pi, np.pi, RIG.lidar.azimuth_steps, endpoint=False)
    e, a = np.meshgrid(elevation, azimuth, indexing='ij')
    directions = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)
    distance, _ = cast(LIDAR_ORIGIN, directions, ego_x, boxes)
    hit = distance < RIG.lidar.max_range
    distance = distance[hit] + rng.normal(0.0, RIG.lidar.range_noise, int(hit.sum()))
    return (LIDAR_ORIGIN + directions[hit] * distance[:, None]).astype(np.float32)


@lru_cache(maxsize=None)
def sweep_at(frame: int) -> np.ndarray:
    return sweep(EGO_STEP_M * frame, np.random.default_rng(100 + frame))


@lru_cache(maxsize=None)
def scene(rotation_deg: tuple[float, float, float], frames: int = 10,
          boxes: tuple = BOXES) -> tuple[tuple[CameraView, np.ndarray], ...]:
    """``frames`` (view with the nominal calibration, current sweep) of a camera truly drifted by
    ``rotation_deg`` (roll, pitch, yaw about its body axes), as the simulator's fault places it."""
    nominal = RIG.sensor_to_base(CAMERA)
    true = nominal
    if any(rotation_deg):
        true = nominal @ pose_error([FaultSpec('extrinsic_drift', CAMERA, 0.0, 1.0, rotation_deg=rotation_deg)], RIG)
    out = []
    for i in range(frames):
        pixels = render(true, EGO_STEP_M * i, np.random.default_rng(200 + i), boxes)
        points = sweep_at(i) if boxes is BOXES else sweep(EGO_STEP_M * i, np.random.default_rng(100 + i), boxes)
        out.append((CameraView(CAMERA, i * 50_000_000, pixels, INTRINSICS, nominal), points))
    return tuple(out)


def run(rotation_deg: tuple[float, float, float], config: CalibrationSection = CalibrationSection(),
        frames: int = 10, boxes: tuple = BOXES) -> list:
    estimator = CameraDriftEstimator(CAMERA, config, lidar_origin=LIDAR_ORIGIN)
    return [estimator.update(view, points) for view, points in scene(rotation_deg, frames, boxes)]


# --- conventions and kernels ------------------------------------------------------------------------


def test_the_grid_uses_the_fault_file_convention():
    assert np.array_equal(OPTICAL_TO_BODY, BODY_TO_OPTICAL)
    angles, nominal_to_true = rotation_grid(2.0, 0.5, 1.0)
    assert angles.shape[:3] == nominal_to_true.shape[:3] == (5, 9, 9)
    assert np.array_equal(angles[2, 4, 4], [0, 0, 0]) and np.allclose(nominal_to_true[2, 4, 4], np.eye(3))
    # A point seen by the truly drifted camera sits where the grid says, for each axis.
    point = np.array([[3.0, 1.0, 20.0]])  # nominal optical frame
    for index in ((2, 4, 6), (2, 7, 4), (4, 4, 4), (0, 1, 8)):
        drift = FaultSpec('extrinsic_drift', CAMERA, 0.0, 1.0, rotation_deg=tuple(angles[index]))
        true_to_nominal = pose_error([drift], RIG)  # p_nominal = error @ p_true
        assert np.allclose(true_to_nominal.inverse().apply(point)[0], nominal_to_true[index] @ point[0])


def test_spread_edges_is_the_decayed_maximum():
    edges = (np.random.default_rng(2).random((9, 13)) > 0.93).astype(np.float32) * np.float32(0.8)
    rows, cols = np.indices(edges.shape)
    brute = np.zeros_like(edges)
    for r, c in zip(*np.nonzero(edges)):
        brute = np.maximum(brute, edges[r, c] * np.float32(0.9) ** (np.abs(rows - r) + np.abs(cols - c)))
    assert np.allclose(spread_edges_reference(edges, 0.9), brute, atol=1e-6)
    assert np.array_equal(spread_edges(edges, 0.9), spread_edges_reference(edges, 0.9))
    with pytest.raises(CalibrationError, match=r'expected an \(H, W\) image'):
        spread_edges(np.zeros((2, 3, 4)), 0.9)


@pytest.mark.parametrize('distortion', [np.zeros(5), np.array([-0.05, 0.01, 0.001, -0.002, 0.0])])
def test_alignment_scores_kernel_matches_reference(distortion):
    rng = np.random.default_rng(3)
    rays = np.concatenate([rng.uniform(-0.8, 0.8, (200, 2)), np.ones((200, 1))], axis=1)
    weights = rng.uniform(0.1, 1.0, 200)
    axes = rng.integers(0, 2, 200)
    _, rotations = rotation_grid(2.0, 0.5, 1.0)
    rotations = rotations.reshape(-1, 3, 3)
    edges = rng.random((2, 225, 400)).astype(np.float32)
    kernel = alignment_scores(rays, weights, axes, rotations, INTRINSICS.k, distortion, edges)
    reference = alignment_scores_reference(rays, weights, axes, rotations, INTRINSICS.k, distortion, edges)
    assert kernel.shape == (len(rotations),)
    assert np.allclose(kernel, reference, rtol=1e-5, atol=1e-6)
    assert 0 < kernel.min() and kernel.max() < weights.sum()  # some rays leave the image, none count twice
    with pytest.raises(CalibrationError, match=r'rays \(200, 3\), weights \(3,\)'):
        alignment_scores(rays, weights[:3], axes, rotations, INTRINSICS.k, distortion, edges)
    with pytest.raises(CalibrationError, match=r'edges \(2, H, W\)'):
        alignment_scores(rays, weights, axes, rotations, INTRINSICS.k, distortion, edges[0])
    with pytest.raises(CalibrationError, match='axes must be 0 or 1'):
        alignment_scores(rays, weights, axes + 1, rotations, INTRINSICS.k, distortion, edges)


def test_edge_sample_kernel_matches_plain_python():
    view, points = scene((0.0, 0.0, 0.0))[0]
    virtual_to_base = RigidTransform(view.camera_to_base.rotation, LIDAR_ORIGIN)
    size = np.array([[INTRINSICS.width, INTRINSICS.height]])
    hits = project_points(points, virtual_to_base.inverse().matrix[None], INTRINSICS.k[None], np.zeros((1, 5)), size)
    zbuffer = depth_images(hits, size, 1)[0]
    below_top_beam = np.random.default_rng(4).random(len(hits.uv)) < 0.8
    compiled = calibration._edge_samples_kernel(zbuffer, hits.uv, hits.depth, below_top_beam, 0.1, 15, 25)
    plain = edge_samples(zbuffer, hits.uv, hits.depth, below_top_beam, 0.1, 15, 25)
    assert len(compiled[0]) > 100
    for a, b in zip(compiled, plain):
        assert np.array_equal(a, b)


def test_edge_samples_follow_outlines_not_the_ground():
    view, points = scene((0.0, 0.0, 0.0))[0]
    ground = sweep(0.0, np.random.default_rng(6), boxes=())
    assert len(lidar_edge_samples(ground, view.camera_to_base, LIDAR_ORIGIN, INTRINSICS, 0.1)) == 0
    samples = lidar_edge_samples(points, view.camera_to_base, LIDAR_ORIGIN, INTRINSICS, 0.1)
    assert len(samples) > 150 and set(np.unique(samples.axes)) == {0, 1}
    assert np.all((samples.weights >= 0.1) & (samples.weights <= 1.0))
    # Every sample lies within a gap of an outline: the rendered depth changes near it.
    k = INTRINSICS.k
    uv = samples.rays[:, :2] * np.diag(k)[:2] + k[:2, 2]
    depth = np.asarray(cast(view.camera_to_base.translation, _pixel_directions(view), 0.0)[0])
    depth = np.minimum(depth, 200.0).reshape(INTRINSICS.height, INTRINSICS.width)
    col = np.clip(np.round(uv[:, 0]).astype(int), 0, INTRINSICS.width - 1)
    row = np.clip(np.round(uv[:, 1]).astype(int), 0, INTRINSICS.height - 1)
    near_outline = []
    for c, r, axis, gap in zip(col, row, samples.axes, samples.gaps):
        reach = int(math.ceil(gap / 2)) + 1
        patch = depth[max(0, r - reach):r + reach + 1, c] if axis else depth[r, max(0, c - reach):c + reach + 1]
        near_outline.append(patch.max() > 1.1 * patch.min())
    assert np.mean(near_outline) > 0.95


def _pixel_directions(view: CameraView) -> np.ndarray:
    k = INTRINSICS.k
    u, v = np.meshgrid(np.arange(INTRINSICS.width, dtype=float), np.arange(INTRINSICS.height, dtype=float))
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
    directions = rays @ view.camera_to_base.rotation.T
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


# --- drift estimates on the synthetic scene ---------------------------------------------------------


def test_a_calibrated_camera_reads_zero_and_ok():
    estimates = run((0.0, 0.0, 0.0))
    last = estimates[-1]
    assert np.all(np.abs(last.estimate) < 0.2), last.estimate
    assert [e.state for e in estimates] == ['ok'] * 10
    window = CalibrationSection().drift_window_frames
    assert last.samples == window and last.edge_points > 150
    assert last.nominal_ratio > 0.97
    status = last.status()
    assert status.level == DiagnosticStatus.OK and status.name == 'mmfusion: calibration cam_front'
    assert dict(status.values)['frames'] == str(window)


# Every axis searched and judged: what the estimator measures when asked to.
ALL_AXES = CalibrationSection(drift_roll_search_deg=2.0, drift_judged_axes=('roll', 'pitch', 'yaw'))


@pytest.mark.parametrize('rotation_deg, config', [((0.0, 0.0, 1.0), CalibrationSection()),
                                                  ((0.0, 1.0, 0.0), ALL_AXES), ((0.5, -0.7, 0.6), ALL_AXES)],
                         ids=['yaw', 'pitch', 'all_axes'])
def test_a_one_degree_drift_is_measured_and_degraded(rotation_deg, config):
    estimates = run(rotation_deg, config)
    last = estimates[-1]
    assert np.all(np.abs(last.estimate - rotation_deg) < 0.3), last.estimate
    # Flagged as soon as the window holds drift_min_frames frames, and from then on.
    early = config.drift_min_frames - 1
    assert [e.state for e in estimates] == ['ok'] * early + ['degraded'] * (10 - early)
    assert last.confidence > config.drift_confidence_sigma
    assert last.nominal_ratio < 0.95
    assert 'insufficient data' in estimates[0].message and 'drifted' in last.message
    assert last.status().level == DiagnosticStatus.WARN


def test_by_default_roll_is_not_searched_and_pitch_only_reported():
    pitched = run((0.0, 1.0, 0.0))[-1]
    assert abs(pitched.estimate[1] - 1.0) < 0.3 and pitched.estimate[0] == 0.0  # measured, roll not searched
    assert pitched.state == 'ok' and pitched.confidence > CalibrationSection().drift_confidence_sigma
    yawed = run((0.0, 0.0, 1.7))[-1]
    assert abs(yawed.estimate[2] - 1.7) < 0.3 and yawed.state == 'failed'  # drift_failed_deg 1.5
    assert yawed.status().level == DiagnosticStatus.ERROR


@pytest.mark.parametrize('axis', [1, 2], ids=['pitch', 'yaw'])
def test_a_quarter_degree_is_seen_in_the_right_direction(axis):
    for sign in (1.0, -1.0):
        rotation = [0.0, 0.0, 0.0]
        rotation[axis] = 0.25 * sign
        last = run(tuple(rotation), ALL_AXES)[-1]
        assert 0.1 < last.estimate[axis] * sign < 0.45, last.estimate
        assert last.state == 'ok'  # below drift_degraded_deg: reported, not flagged


def test_a_peak_at_the_search_limit_is_unresolved():
    estimates = run((0.0, 0.0, 3.0))
    last = estimates[-1]
    assert last.estimate[2] == pytest.approx(2.0) and last.nominal_ratio < 0.95
    assert last.state == 'ok' and 'unresolved (yaw peak at the search limit)' in last.message
    # A wider search measures it.
    wide = run((0.0, 0.0, 3.0), CalibrationSection(drift_search_deg=4.0))[-1]
    assert abs(wide.estimate[2] - 3.0) < 0.3 and wide.state == 'failed'


def test_a_ridge_along_yaw_is_unresolved_not_a_drift():
    """Edges that all run one way (a guard rail, a kerb running away from the camera) pin one axis and
    let the other slide: the score falls off the peak in pitch but hardly in yaw. However consistent
    over the images, such a peak is no yaw measurement; a peak that falls off is."""
    def window(yaw_fall: float, config: CalibrationSection = CalibrationSection()):
        estimator = CameraDriftEstimator(CAMERA, config, lidar_origin=LIDAR_ORIGIN)
        angles = estimator.grid_angles.reshape(-1, 3)
        rng = np.random.default_rng(7)
        for k in range(6):  # the score per image: highest at yaw 1.25 deg, pitch 0, and a little noise
            scores = 0.6 - 0.05 * angles[:, 1] ** 2 - yaw_fall * (angles[:, 2] - 1.25) ** 2
            last = estimator.add_scores(scores + rng.normal(0.0, 1e-4, len(angles)), k * 50_000_000)
        return last

    ridge = window(0.0005)
    assert abs(ridge.estimate[2] - 1.25) < 0.3 and ridge.confidence > CalibrationSection().drift_confidence_sigma
    assert ridge.state == 'ok' and 'unresolved (flat yaw peak)' in ridge.message
    assert window(0.0005, CalibrationSection(drift_min_sharpness=0.0)).state == 'degraded'  # without the check
    peak = window(0.2)
    assert abs(peak.estimate[2] - 1.25) < 0.1 and peak.state == 'degraded'
    with pytest.raises(CalibrationError, match=r'expected 25 scores, one per hypothesis, got shape \(17,\)'):
        CameraDriftEstimator(CAMERA, CalibrationSection(drift_search_deg=1.0, drift_step_deg=0.5)).add_scores(
            np.zeros(17), 0)


def test_frames_without_edges_are_skipped():
    estimator = CameraDriftEstimator(CAMERA, lidar_origin=LIDAR_ORIGIN)
    view, points = scene((0.0, 0.0, 0.0))[0]
    black = CameraView(CAMERA, view.stamp_ns, np.zeros_like(view.pixels), INTRINSICS, view.camera_to_base)
    first = estimator.update(black, points)
    assert first.samples == 0 and first.state == 'ok' and np.all(np.isnan(first.estimate))
    assert 'frame skipped: the image has no edges' in first.message
    sky = estimator.update(view, np.zeros((0, 5), np.float32))
    assert sky.samples == 0 and 'fewer than 30' in sky.message
    estimator.update(view, points)
    assert estimator.latest.samples == 1
    # The next frame brings the same image again (a 12 Hz camera in 20 Hz frames): not counted twice.
    again = estimator.update(view, scene((0.0, 0.0, 0.0))[1][1])
    assert again.samples == 1 and again.edge_points == 0
    estimator.reset()
    assert estimator.latest.samples == 0


def test_drift_errors_name_the_value():
    view, points = scene((0.0, 0.0, 0.0))[0]
    estimator = CameraDriftEstimator('cam_back')
    with pytest.raises(CalibrationError, match=r"CameraDriftEstimator\('cam_back'\) was given camera 'cam_front'"):
        estimator.update(view, points)
    with pytest.raises(CalibrationError, match=r'lidar points must be \(N, >= 3\).*\(10,\)'):
        CameraDriftEstimator(CAMERA).update(view, np.zeros(10, np.float32))
    with pytest.raises(CalibrationError, match=r'lidar_origin must be a finite \(3,\)'):
        CameraDriftEstimator(CAMERA, lidar_origin=np.array([0.0, 1.0]))
    fisheye = CameraIntrinsics(CAMERA, 400, 225, INTRINSICS.k, 'equidistant', np.array([0.1, 0.0, 0.0, 0.0]))
    with pytest.raises(CalibrationError, match="handles plumb_bob distortion or none, not 'equidistant'"):
        CameraDriftEstimator(CAMERA).update(CameraView(CAMERA, 0, view.pixels, fisheye, view.camera_to_base), points)


# --- the simulator --------------------------------------------------------------------------------


def test_simulated_drift_of_cam_front(tmp_path):
    """A short clip of the built-in simulator (full-size cameras and lidar, urban, 12 sweeps), with and
    without a 1 degree yaw drift fault on cam_front. Yaw, the drifted axis, is asserted; roll is the
    weak axis (1 degree of roll moves the image least) and only reported: run with -s to see it."""
    from mmfusion_ros.config import load_config
    from mmfusion_ros.sim.faults import load_faults
    from mmfusion_ros.sim.scenario import load_scenario
    from mmfusion_ros.sim.simulator import Simulation, record_bag
    from mmfusion_ros.sync.keyframes import bag_frames
    from simdata import small_scenario

    config = load_config()
    scenario = load_scenario(small_scenario(tmp_path, rig={}))  # the default rig: 400x225, 1084 steps
    fault_file = tmp_path / 'drift.yaml'
    fault_file.write_text(yaml.safe_dump({'faults': [
        {'type': 'extrinsic_drift', 'sensor': CAMERA, 'start_s': 0.0, 'end_s': 5.0, 'rotation_deg': [0.0, 0.0, 1.0]}]}))
    results = {}
    for name, faults in (('none', 'none'), ('drift', str(fault_file))):
        bag = tmp_path / name
        simulation = Simulation(scenario, config, load_faults(faults, scenario.rig, 1.0), seed=3)
        record_bag(simulation, bag, sweeps=12, show_progress=False)
        # 12 sweeps give 7 images: the default 8 sigma needs a longer clip (the fault benchmark's).
        estimator = CameraDriftEstimator(CAMERA, CalibrationSection(drift_min_frames=3, drift_confidence_sigma=4.0),
                                         lidar_origin=scenario.rig.sensor_to_base('lidar_top').translation)
        for frame in bag_frames(bag, config, lidar_sweeps=1):
            view = next((v for v in frame.cameras if v.name == CAMERA), None)
            if view is not None and frame.lidar is not None:
                estimator.update(view, frame.lidar[frame.lidar[:, 4] == 0])
        results[name] = estimator.latest
        print(f'simulated {name}: {results[name].message}')
    none, drift = results['none'], results['drift']
    assert none.samples >= 5 and drift.samples >= 5  # distinct images: the cameras run at 12 Hz
    assert abs(none.estimate[2]) < 0.2 and abs(drift.estimate[2] - 1.0) < 0.3
    assert abs(none.estimate[1]) < 0.4 and abs(drift.estimate[1]) < 0.4
    assert drift.state == 'degraded' and drift.nominal_ratio < none.nominal_ratio


# --- clock offsets --------------------------------------------------------------------------------


def tracks(offset_ms: float, frames: int = 20, objects: int = 6, noise_m: float = 0.2, seed: int = 5,
           ego_velocity: tuple[float, float] = (0.0, 0.0), static: bool = False) -> list[tuple]:
    """Per frame (observed, reference, velocity relative to the ego) of objects seen by a sensor
    whose stamps run ``offset_ms`` late: it reports where each object was ``offset_ms`` earlier,
    and the ego pose at its stamp carries that into the base frame."""
    rng = np.random.default_rng(seed)
    heading = rng.uniform(-np.pi, np.pi, objects)
    speed = np.zeros(objects) if static else rng.uniform(10.0, 25.0, objects)
    over_ground = np.stack([np.cos(heading), np.sin(heading)], axis=1) * speed[:, None]  # (O, 2)
    relative = over_ground - np.asarray(ego_velocity)  # how fast each moves in the base frame
    start = rng.uniform(-40.0, 40.0, (objects, 2))
    out = []
    for i in range(frames):
        reference = start + relative * (0.1 * i)  # base frame, at the sensor's stamp
        observed = reference - relative * (offset_ms / 1e3) + rng.normal(0.0, noise_m, reference.shape)
        out.append((observed, reference, relative))
    return out


def estimate_offset(pairs: list[tuple], config: CalibrationSection = CalibrationSection()) -> list:
    estimator = TimeOffsetEstimator('radar_front', config)
    return [estimator.update(*frame) for frame in pairs]


def test_a_fifty_millisecond_offset_is_measured_and_degraded():
    estimates = estimate_offset(tracks(50.0))
    last = estimates[-1]
    assert abs(last.estimate - 50.0) < 10.0 and last.stderr < 5.0
    assert last.state == 'degraded' and last.samples == 120 and last.frames == 20
    status = last.status()
    assert status.level == DiagnosticStatus.WARN and status.name == 'mmfusion: time offset radar_front'
    assert dict(status.values)['pairs'] == '120'
    assert estimates[0].state == 'ok' and 'insufficient data' in estimates[0].message  # 6 pairs < 10


@pytest.mark.parametrize('offset_ms, state', [(0.0, 'ok'), (-50.0, 'degraded'), (200.0, 'failed')])
def test_offsets_and_their_states(offset_ms, state):
    last = estimate_offset(tracks(offset_ms))[-1]
    assert abs(last.estimate - offset_ms) < 10.0 and last.state == state


def test_static_objects_seen_from_a_moving_ego():
    # A late stamp puts static objects ahead by v_ego * offset: the relative velocity carries it.
    last = estimate_offset(tracks(50.0, static=True, ego_velocity=(15.0, 0.0)))[-1]
    assert abs(last.estimate - 50.0) < 10.0 and last.state == 'degraded'


def test_too_few_moving_objects_give_no_estimate():
    slow = [(obs, ref, vel * 0.06) for obs, ref, vel in tracks(50.0)]  # 0.6 - 1.5 m/s: below 2 m/s
    last = estimate_offset(slow)[-1]
    assert math.isnan(last.estimate) and last.state == 'ok' and last.samples == 0
    assert last.message == 'insufficient data: 0 moving pairs, need 10'
    assert last.status().level == DiagnosticStatus.OK
    one = estimate_offset(tracks(50.0, frames=9, objects=1))[-1]  # one car, 9 frames: 9 pairs
    assert math.isnan(one.estimate) and one.samples == 9 and 'insufficient data' in one.message


def test_association_errors_are_dropped():
    pairs = tracks(50.0)
    for observed, _, _ in pairs[::4]:
        observed[0] += 8.0  # a wrong match, 8 m off
    last = estimate_offset(pairs)[-1]
    assert abs(last.estimate - 50.0) < 10.0 and last.samples == 115


def test_a_constant_displacement_is_fitted_apart_when_asked():
    pairs = [(obs + [1.0, 0.0], ref, vel) for obs, ref, vel in tracks(0.0)]  # e.g. a radar's near face
    fitted = estimate_offset(pairs, CalibrationSection(offset_fit_bias=True))[-1]
    assert abs(fitted.estimate) < 10.0 and np.allclose(fitted.bias, [1.0, 0.0], atol=0.1)
    assert dict(fitted.status().values)['bias_m'] == f'{fitted.bias[0]:+.2f}, {fitted.bias[1]:+.2f}'
    plain = estimate_offset(pairs)[-1]
    assert plain.bias is None


def test_a_window_too_uncertain_stays_ok():
    last = estimate_offset(tracks(50.0, noise_m=5.0, frames=4))[-1]
    assert last.stderr > 10.0 and last.state == 'ok' and 'standard error above 10 ms' in last.message


def test_offset_errors_name_the_value():
    estimator = TimeOffsetEstimator('radar_front')
    with pytest.raises(CalibrationError, match=r'radar_front: observed \(3, 2\), reference \(3, 3\)'):
        estimator.update(np.zeros((3, 2)), np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(CalibrationError, match='sigma must be positive'):
        estimator.update(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)), sigma=0.0)
    estimator.update(np.zeros((3, 2)), np.zeros((3, 2)), np.full((3, 2), 5.0))
    with pytest.raises(CalibrationError, match='changed from 2-D to 3-D'):
        estimator.update(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3)))
    assert estimator.update(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))).frames == 2


# --- radar clock offset from the standing world ------------------------------------------------------


def standing_world(rng: np.random.Generator, walls: bool = True) -> np.ndarray:
    """(N, 2) x, y of a street's standing surfaces: poles, and (``walls``) walls across the road ahead
    and beside it at angles; without walls only a guard rail along the road (the motion)."""
    parts = [np.column_stack([np.linspace(-40, 60, 400), np.full(400, -6.0)])]  # a guard rail along x
    if walls:
        poles = rng.uniform([-30, -15], [60, 15], (25, 2))
        parts.append(np.repeat(poles, 6, axis=0) + rng.normal(0, 0.05, (150, 2)))
        for x0, y0, angle in ((25.0, 8.0, 80.0), (40.0, -10.0, 100.0), (15.0, -9.0, 60.0), (55.0, 5.0, 90.0)):
            t = np.linspace(-4, 4, 80)
            a = math.radians(angle)
            parts.append(np.column_stack([x0 + t * math.cos(a), y0 + t * math.sin(a)]))
    return np.concatenate(parts)


def radar_scans(offset_ms: float, speed: float = 8.0, scans: int = 12, walls: bool = True, seed: int = 0):
    """Per scan (standing returns, lidar surfaces, ego velocity), base frame: the ego drives along x;
    returns are 40 points of the world a radar's clock ``offset_ms`` late puts ``v o`` ahead."""
    rng = np.random.default_rng(seed)
    world = standing_world(rng, walls)
    velocity = np.array([speed, 0.0])
    out = []
    for k in range(scans):
        here = world - velocity * k * 0.077  # the world in the base frame of scan k
        hits = here[rng.choice(len(here), 40, replace=False)] + rng.normal(0, 0.08, (40, 2))
        out.append((hits + velocity * offset_ms * 1e-3, here, velocity))
    return out


def run_static(scans, config: CalibrationSection = CalibrationSection()):
    estimator = calibration.StaticOffsetEstimator('radar_front', config)
    return [estimator.update(hits, calibration.surface_index(here), v) for hits, here, v in scans]


def test_a_late_radar_is_found_from_the_standing_world():
    estimates = run_static(radar_scans(50.0))
    assert all(e.state == 'ok' and 'insufficient data' in e.message for e in estimates[:5])  # fewer than 6 scans
    # from the 6th scan on the estimate calls it; the 6th call in a row (the 11th scan) confirms it
    assert [e.state for e in estimates[5:11]] == ['ok'] * 5 + ['degraded'] and 'unconfirmed' in estimates[9].message
    assert 'unconfirmed (5 of 6 scans)' in estimates[9].message
    last = estimates[-1]
    assert last.state == 'degraded' and abs(last.estimate - 50.0) <= 5.0 and last.frames == 10
    assert 'clock offset' in last.message and last.status().level == DiagnosticStatus.WARN
    early = run_static(radar_scans(-40.0, speed=12.0))[-1]  # early stamps: the sign follows
    assert early.state == 'degraded' and abs(early.estimate + 40.0) <= 5.0
    way_off = run_static(radar_scans(180.0, speed=5.0), CalibrationSection(static_offset_search_ms=250.0))[-1]
    assert way_off.state == 'failed' and abs(way_off.estimate - 180.0) <= 5.0
    beyond = run_static(radar_scans(180.0, speed=5.0))[-1]  # beyond the default 150 ms search: no peak
    assert beyond.state == 'ok' and 'search limit' in beyond.message


def test_a_radar_on_time_and_an_open_road_are_not_called():
    right = run_static(radar_scans(0.0))[-1]
    assert right.state == 'ok' and abs(right.estimate) <= 5.0 and 'insufficient' not in right.message
    # A guard rail along the road scores alike at every offset: no evidence either way, however late.
    rail = run_static(radar_scans(50.0, walls=False))[-1]
    assert rail.state == 'ok' and 'insufficient data' in rail.message
    # Standing still (or slower than offset_min_speed_mps) shows no offset and adds nothing.
    still = run_static(radar_scans(50.0, speed=1.0))[-1]
    assert still.frames == 0 and math.isnan(still.estimate) and still.state == 'ok'
    # No lidar surfaces, or no standing returns: nothing added either.
    estimator = calibration.StaticOffsetEstimator('radar_front')
    assert estimator.update(np.zeros((0, 2)), None, np.array([8.0, 0.0])).frames == 0
    assert calibration.surface_index(np.zeros((0, 3))) is None


def crossing_traffic(offset_ms: float, scans: int = 12, age_s: float = 0.03, seed: int = 0):
    """Per scan (returns, lidar surfaces, relative velocity, lead), base frame, the vehicle waiting:
    two cars cross in front at 10 m/s, the lidar's sweep shows their outlines at the frame's time;
    the radar's returns on them are ``age_s`` old, and a clock ``offset_ms`` late took them that much
    earlier still."""
    rng = np.random.default_rng(seed)
    side, ones = np.linspace(-0.5, 0.5, 20), np.ones(20)
    outline = np.concatenate([np.column_stack([side * 4.5, ones * 0.9]), np.column_stack([side * 4.5, ones * -0.9]),
                              np.column_stack([ones * 2.25, side * 1.8]), np.column_stack([ones * -2.25, side * 1.8])])
    cars = ((np.array([15.0, -20.0]), np.array([0.0, 10.0])), (np.array([25.0, 20.0]), np.array([0.0, -10.0])))
    out = []
    for k in range(scans):
        surfaces, hits, relative, lead = [], [], [], []
        for start, velocity in cars:
            # the car runs along y: its outline turned a quarter, at its place at the frame's time
            body = outline[:, ::-1] + start + velocity * k * 0.077
            surfaces.append(body)
            seen = body[rng.choice(len(body), 8, replace=False)] + rng.normal(0, 0.05, (8, 2))
            hits.append(seen - velocity * (age_s + offset_ms * 1e-3))
            relative.append(np.repeat(velocity[None], 8, axis=0))
            lead.append(np.repeat(velocity[None] * age_s, 8, axis=0))
        out.append(tuple(np.concatenate(x) for x in (hits, surfaces, relative, lead)))
    return out


def test_a_late_radar_is_found_from_traffic_crossing_while_the_vehicle_waits():
    def run(scans):
        estimator = calibration.StaticOffsetEstimator('radar_front')
        return [estimator.add_moving(hits, calibration.surface_index(here), relative, lead)
                for hits, here, relative, lead in scans]

    late = run(crossing_traffic(50.0))
    assert [e.state for e in late[:10]] == ['ok'] * 10 and late[10].state == 'degraded'  # 6 scans, then 6 calls
    assert abs(late[-1].estimate - 50.0) <= 5.0 and late[-1].samples == 160
    right = run(crossing_traffic(0.0))[-1]
    assert right.state == 'ok' and abs(right.estimate) <= 5.0 and 'insufficient' not in right.message
    # Objects that move with the vehicle (slower than offset_min_speed_mps relative to it) show no clock.
    slow = [(hits, here, relative * 0.1, lead) for hits, here, relative, lead in crossing_traffic(50.0)]
    assert run(slow)[-1].frames == 0


def test_a_scans_standing_and_moving_returns_count_as_one_scan():
    estimator = calibration.StaticOffsetEstimator('radar_front')
    street = radar_scans(50.0)
    crossing = crossing_traffic(50.0)
    for k in range(11):
        hits, here, velocity = street[k]
        estimator.update(hits, calibration.surface_index(here), velocity, scan=k * 0.077)
        moving, cars, relative, lead = crossing[k]
        relative = relative - velocity  # the vehicle drives too, now
        last = estimator.add_moving(moving + velocity * 0.05, calibration.surface_index(cars), relative, lead,
                                    scan=k * 0.077)
        assert last.frames == min(k + 1, 10) and last.samples == 56 * min(k + 1, 10)  # a window of 10 scans
        # The 6th scan is the first with enough evidence, the 11th the 6th call in a row (a scan
        # re-estimated with its moving returns is not a second call: else the 8th would be).
        assert last.state == ('degraded' if k == 10 else 'ok'), (k, last.message)
    assert abs(last.estimate - 50.0) <= 5.0


# --- configuration --------------------------------------------------------------------------------


def test_the_calibration_section_loads_and_checks():
    sensors = {'lidar_top': {'modality': 'lidar', 'topic': '/lidar', 'type': 'sensor_msgs/msg/PointCloud2'}}
    config = config_from_dict(FusionConfig, {'sensors': sensors, 'calibration': {'drift_window_frames': 20}})
    assert config.calibration.drift_window_frames == 20 and isinstance(config.sensors['lidar_top'], SensorConfig)
    with pytest.raises(ConfigError, match=r'calibration\.drift_windows: unknown parameter'):
        config_from_dict(FusionConfig, {'sensors': sensors, 'calibration': {'drift_windows': 20}})
    for kwargs, message in (
            ({'drift_min_frames': 1}, r'drift_min_frames: must be in \[2, drift_window_frames = 6\]'),
            ({'drift_window_frames': 0}, 'drift_window_frames: must be an integer >= 1'),
            ({'drift_step_deg': 3.0}, r'drift_step_deg: must be in \(0, drift_search_deg = 2.0\]'),
            ({'drift_search_deg': 12.0}, r'drift_search_deg: must be in \(0, 10\]'),
            ({'drift_edge_decay': 1.0}, r'drift_edge_decay: must be in \(0, 1\)'),
            ({'drift_failed_deg': 0.4}, r'drift_failed_deg: 0.4 must exceed drift_degraded_deg \(0.75\)'),
            ({'drift_roll_search_deg': -1.0}, r'drift_roll_search_deg: must be in \[0, 10\]'),
            ({'drift_roll_search_deg': 0.5}, r'drift_roll_step_deg: must be in \(0, drift_roll_search_deg = 0.5\]'),
            ({'drift_judged_axes': ()}, 'drift_judged_axes: expected one or more of roll, pitch, yaw'),
            ({'drift_judged_axes': ('yaw', 'spin')}, 'drift_judged_axes: expected one or more of roll, pitch, yaw'),
            ({'drift_judged_axes': ('roll',)}, 'roll is judged but not searched'),
            ({'drift_cameras_per_frame': -1}, 'drift_cameras_per_frame: must be an integer >= 0'),
            ({'drift_min_sharpness': 1.0}, r'drift_min_sharpness: must be in \[0, 1\)'),
            ({'offset_failed_ms': 20.0}, r'offset_failed_ms: 20.0 must exceed offset_degraded_ms \(30.0\)'),
            ({'drift_min_edge_points': 500}, 'drift_min_edge_points: 500 exceeds drift_max_edge_points'),
            ({'offset_min_speed_mps': 0.0}, 'offset_min_speed_mps: must be positive'),
            ({'radar_offsets': 'always'}, 'radar_offsets: expected one of static, tracks, off'),
            ({'static_offset_min_scans': 12}, r'static_offset_min_scans: 12 exceeds static_offset_window_frames \(10\)'),
            ({'static_offset_step_ms': 200.0}, r'static_offset_step_ms: 200.0 exceeds static_offset_search_ms'),
            ({'static_offset_min_gain': 0.9}, 'static_offset_min_gain: must be >= 1'),
            ({'static_offset_sigma_m': 0.0}, 'static_offset_sigma_m: must be positive')):
        with pytest.raises(ConfigError, match=message):
            CalibrationSection(**kwargs)
