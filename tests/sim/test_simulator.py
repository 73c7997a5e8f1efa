"""The simulation loop end to end: bags a reader understands, at the right rates, reproducibly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfusion_ros.config import load_config
from mmfusion_ros.io.bag import BagReader
from mmfusion_ros.msgs.decode import decode_detections, decode_diagnostics, decode_pointcloud, decode_tf
from mmfusion_ros.sim.faults import load_faults
from mmfusion_ros.sim.scenario import load_scenario
from mmfusion_ros.sim.simulator import FAULTS_TOPIC, GROUND_TRUTH_TOPIC, Simulation, record_bag
from mmfusion_ros.sim.world import Trajectory
from simdata import small_scenario

def simulate(tmp_path: Path, name: str, seed: int = 3, faults: str = 'none', duration: float = 2.0,
             storage: str = 'mcap') -> tuple[Path, dict]:
    scenario = load_scenario(small_scenario(tmp_path))
    simulation = Simulation(scenario, load_config(), load_faults(faults, scenario.rig, duration), seed)
    out = tmp_path / name
    return out, record_bag(simulation, out, storage=storage, duration_s=duration, show_progress=False)


def digest(bag: Path) -> str:
    sha = hashlib.sha256()
    with BagReader(bag) as reader:
        for message in reader.messages():
            sha.update(message.topic.encode())
            sha.update(message.stamp_ns.to_bytes(8, 'little'))
            sha.update(message.raw)
    return sha.hexdigest()


@pytest.fixture(scope='module')
def urban_bag(tmp_path_factory) -> tuple[Path, dict]:
    return simulate(tmp_path_factory.mktemp('sim'), 'urban')


def test_same_seed_gives_the_same_bytes(tmp_path, urban_bag):
    # Same bag name in another folder: the storage file embeds its own name.
    again, _ = simulate(tmp_path, 'urban')
    other, _ = simulate(tmp_path, 'other', seed=4)
    assert digest(again) == digest(urban_bag[0])
    assert digest(other) != digest(urban_bag[0])
    for name in ('urban.mcap', 'metadata.yaml'):
        assert (again / name).read_bytes() == (urban_bag[0] / name).read_bytes(), name


def test_every_topic_at_its_rate(urban_bag):
    bag, result = urban_bag
    config = load_config()
    with BagReader(bag) as reader:
        topics = {t.name: t for t in reader.topics}
    for name, sensor in config.sensors.items():
        assert sensor.topic in topics, name
        assert topics[sensor.topic].rate_hz == pytest.approx(sensor.rate_hz, rel=0.05), name
        if sensor.info_topic:
            assert topics[sensor.info_topic].count == topics[sensor.topic].count
    lidar_rate = config.sensors['lidar_top'].rate_hz
    assert topics[GROUND_TRUTH_TOPIC].rate_hz == pytest.approx(lidar_rate, rel=0.05)
    assert topics[FAULTS_TOPIC].count == topics[GROUND_TRUTH_TOPIC].count == result['frames']
    assert topics['/tf_static'].count == 1


def test_stamps_of_different_sensors_are_not_aligned(urban_bag):
    stamps = {}
    with BagReader(urban_bag[0]) as reader:
        for message in reader.messages(['/LIDAR_TOP', '/CAM_FRONT/image_rect_compressed', '/RADAR_FRONT']):
            stamps.setdefault(message.topic, []).append(message.stamp_ns)
    lidar = np.array(stamps['/LIDAR_TOP'])
    for topic in ('/CAM_FRONT/image_rect_compressed', '/RADAR_FRONT'):
        other = np.array(stamps[topic])
        assert np.min(np.abs(other[:, None] - lidar[None, :])) > 0
        assert len(set(np.diff(other))) > 1  # jitter: the periods vary


def test_ground_truth_boxes_are_in_base_link_with_velocity(urban_bag):
    with BagReader(urban_bag[0]) as reader:
        truths = [decode_detections(m.raw) for m in reader.messages([GROUND_TRUTH_TOPIC])]
    assert all(t.frame_id == 'base_link' for t in truths)
    assert max(len(t) for t in truths) > 3
    labels = {label for t in truths for label in t.labels}
    assert {'car', 'pedestrian'} <= labels
    velocities = np.concatenate([t.velocities for t in truths])
    assert np.all(np.isfinite(velocities))
    assert np.any(np.linalg.norm(velocities, axis=1) > 1.0)


def test_lidar_sees_the_annotated_objects_where_the_ground_truth_puts_them(urban_bag):
    # Across modules: the lidar frame from /tf_static, the cloud and the boxes must agree.
    with BagReader(urban_bag[0]) as reader:
        clouds = [decode_pointcloud(m.raw) for m in reader.messages(['/LIDAR_TOP'])]
        truths = [decode_detections(m.raw) for m in reader.messages([GROUND_TRUTH_TOPIC])]
        static = [t for m in reader.messages(['/tf_static']) for t in decode_tf(m.raw, static=True)]
    lidar_to_base = next(t.transform for t in static if t.child_frame == 'LIDAR_TOP')
    near_with_points, near = 0, 0
    for cloud, truth in zip(clouds, truths):
        points = lidar_to_base.apply(cloud.xyz.astype(np.float64))
        for centre, size, yaw in zip(truth.centers, truth.sizes, truth.yaws):
            if np.hypot(*centre[:2]) > 25:
                continue
            local = (points - centre) @ np.array([[np.cos(yaw), -np.sin(yaw), 0],
                                                  [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            inside = np.all(np.abs(local) <= size / 2 + 0.15, axis=1)
            near += 1
            near_with_points += int(inside.sum() >= 3)
    assert near > 10
    assert near_with_points / near > 0.6  # the rest are hidden behind nearer objects


def test_tf_places_base_link_on_the_ego_path(urban_bag):
    with BagReader(urban_bag[0]) as reader:
        transforms = [t for m in reader.messages(['/tf']) for t in decode_tf(m.raw, static=False)]
        static = [t for m in reader.messages(['/tf_static']) for t in decode_tf(m.raw, static=True)]
    assert {t.child_frame for t in static} == {s.frame_id for s in load_config().sensors.values()}
    assert all((t.parent_frame, t.child_frame) == ('map', 'base_link') for t in transforms)
    stamps = [t.stamp_ns for t in transforms]
    assert stamps == sorted(stamps)


def test_lidar_cloud_has_the_documented_fields(urban_bag):
    with BagReader(urban_bag[0]) as reader:
        cloud = decode_pointcloud(next(reader.messages(['/LIDAR_TOP'])).raw)
    assert set(cloud.fields) == {'intensity', 'ring', 'time'}
    assert len(cloud) > 1000
    assert cloud.field('time').min() >= 0 and cloud.field('time').max() < 0.05 + 1e-6


def test_fault_is_recorded_with_its_window(tmp_path):
    bag, result = simulate(tmp_path, 'blackout', faults='camera_blackout', duration=2.0)
    with BagReader(bag) as reader:
        records = [decode_diagnostics(m.raw)[1] for m in reader.messages([FAULTS_TOPIC])]
    active = [statuses for statuses in records if statuses]
    assert active, 'the preset scaled to 2 s should be active for part of the scene'
    assert len(active) < len(records), 'and inactive for another part'
    values = dict(active[0][0].values)
    assert values['type'] == 'camera_blackout'
    assert int(values['end_ns']) > int(values['start_ns'])


def run_cli(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'mmfusion_ros.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False)


def test_cli_writes_bag_and_figures(tmp_path):
    out, figures = tmp_path / 'drive', tmp_path / 'sim.json'
    proc = run_cli('simulate', '--scenario', small_scenario(tmp_path), '--out', out, '--frames', '3',
                   '--seed', '1', '--storage', 'sqlite3', '--json', figures)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(figures.read_text())
    assert result['frames'] == 3 and result['storage'] == 'sqlite3'
    assert result['fps'] > 0 and result['bag_bytes'] > 0 and result['bytes_per_sim_s'] > 0
    with BagReader(out) as reader:
        assert reader.storage == 'sqlite3'
        assert {t.name: t.count for t in reader.topics}[GROUND_TRUTH_TOPIC] == 3


@pytest.mark.parametrize(('scenario_body', 'faults_body', 'message'), [
    ({'layout': 'urban', 'speed': 3}, None, r'small\.yaml: speed: unknown parameter'),
    ({'duration_s': -1.0}, None, r'small\.yaml: duration_s: must be positive'),
    ({}, {'faults': [{'type': 'camera_blackout', 'sensor': 'cam_top', 'start_s': 1, 'end_s': 2}]},
     r"faults\[0\]\.sensor: unknown sensor 'cam_top'"),
    ({}, {'faults': [{'type': 'camera_blackout', 'sensor': 'cam_front', 'start_s': 2, 'end_s': 1}]},
     r'faults\[0\]'),
    ({}, {'faults': [{'type': 'camera_blackout', 'sensor': 'cam_front', 'start_s': 1, 'end_s': 2,
                      'colour': 'red'}]}, r'faults\[0\]\.colour: unknown parameter'),
])
def test_bad_scenario_or_faults_write_no_bag(tmp_path, scenario_body, faults_body, message):
    import yaml

    args = ['simulate', '--scenario', small_scenario(tmp_path, **scenario_body), '--out', tmp_path / 'bag',
            '--frames', '2']
    if faults_body is not None:
        faults = tmp_path / 'faults.yaml'
        faults.write_text(yaml.safe_dump(faults_body))
        args += ['--faults', faults]
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    import re
    assert re.search(message, proc.stderr), proc.stderr
    assert not (tmp_path / 'bag').exists()


def test_unknown_named_scenario(tmp_path):
    proc = run_cli('simulate', '--scenario', 'moon', '--out', tmp_path / 'bag')
    assert proc.returncode == 2
    assert "unknown scenario 'moon'" in proc.stderr
    assert not (tmp_path / 'bag').exists()


def test_dataset_mode_writes_scenes_and_resumes(tmp_path):
    out = tmp_path / 'set'
    args = ('simulate', '--scenario', f'{small_scenario(tmp_path)}', '--out', out, '--scenes', '2',
            '--frames', '2', '--seed', '5')
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    index = json.loads((out / 'index.json').read_text())
    assert [s['bag'] for s in index['scenes']] == ['scene_00000', 'scene_00001']
    assert [s['seed'] for s in index['scenes']] == [5, 6]
    assert index['frames'] == 4
    before = (out / 'scene_00000').stat().st_mtime_ns
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert (out / 'scene_00000').stat().st_mtime_ns == before  # kept, not re-rendered


def test_trajectory_velocity_matches_positions():
    trajectory = Trajectory(np.array([0.0, 1.0, 2.0]), np.array([[0, 0], [3, 4], [3, 4]]), np.zeros(3))
    np.testing.assert_allclose(trajectory.velocity(0.5), [3, 4])
    np.testing.assert_allclose(trajectory.velocity(1.5), [0, 0])
    np.testing.assert_allclose(trajectory.pose(0.5)[0], [1.5, 2.0])
