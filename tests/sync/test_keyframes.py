"""Key frames from a simulated recording: the right samples, moved into the base frame at the key."""

from __future__ import annotations

import numpy as np
import pytest

from mmfusion_ros.config import load_config
from mmfusion_ros.eval.run import evidence_counts
from mmfusion_ros.frame import LIDAR_FIELDS, RADAR_FIELDS
from mmfusion_ros.io.bag import BagReader
from mmfusion_ros.sync.keyframes import GROUND_TRUTH_TOPIC, KeyframeAssembler, bag_frames

NS = 1_000_000_000


@pytest.fixture(scope='module')
def scene(sim_dataset):
    return sim_dataset / 'scene_00000'


@pytest.fixture(scope='module')
def frames(scene):
    return list(bag_frames(scene, load_config()))


def test_one_frame_per_ground_truth_message(scene, frames):
    with BagReader(scene) as reader:
        truth_stamps = [m.stamp_ns for m in reader.messages([GROUND_TRUTH_TOPIC])]
    assert [f.stamp_ns for f in frames] == truth_stamps
    assert all(f.ground_truth is not None and f.ground_truth.stamp_ns == f.stamp_ns for f in frames)
    every_third = list(bag_frames(scene, load_config(), every=3))
    assert [f.stamp_ns for f in every_third] == truth_stamps[::3]


def test_every_modality_once_warmed_up(frames):
    config = load_config()
    # The last key's sweep ends after the recording's last ego pose: it can not be deskewed, so that
    # frame has only the older sweeps (counted as an unusable scan).
    later = frames[10:-1]
    assert later and all(f.modalities == ('camera', 'lidar', 'radar') for f in later)
    for frame in later:
        assert [view.name for view in frame.cameras] == list(config.sensors_of('camera'))
        assert frame.lidar.shape[1] == len(LIDAR_FIELDS) and frame.radar.shape[1] == len(RADAR_FIELDS)
        # Three lidar sweeps 50 ms apart, newest first in age; the nearest image within a period.
        ages = np.unique(frame.lidar[:, -1])
        assert len(ages) == 3 and ages[0] == 0.0 and np.allclose(np.diff(ages), 0.05, atol=0.005)
        assert all(abs(view.stamp_ns - frame.stamp_ns) <= NS / 12 for view in frame.cameras)
        assert 0.0 <= frame.lidar[:, 3].min() and frame.lidar[:, 3].max() <= 1.0
        assert frame.radar[:, -1].max() < 5 / 13 + 0.05
        # Each lidar's and radar's newest scan stamp, the one its youngest rows carry as their age.
        assert set(frame.scan_stamps) == set(config.sensors_of('lidar')) | set(config.sensors_of('radar'))
        for name, scan_ns in frame.scan_stamps.items():
            cloud, source, names = ((frame.lidar, frame.lidar_sensor, frame.lidar_sensors) if name in frame.lidar_sensors
                                    else (frame.radar, frame.radar_sensor, frame.radar_sensors))
            rows = cloud[source == names.index(name)]
            if len(rows):
                assert rows[:, -1].min() == pytest.approx(max(0, frame.stamp_ns - scan_ns) / NS, abs=1e-3)
    first = frames[0]
    assert first.lidar is not None and len(np.unique(first.lidar[:, -1])) == 1  # nothing older yet


def test_radar_rows_know_where_their_scan_was_taken_from(frames):
    # The vehicle drives on between a radar's scans: an older scan's sensor position, in the base
    # frame at the key, lies behind today's mount by the distance driven since (lines of sight for
    # the doppler start there).
    frame = frames[-2]
    assert frame.radar_origin is not None and frame.radar_origin.shape == (len(frame.radar), 3)
    speed = np.linalg.norm(frame.pose.translation - frames[-3].pose.translation) / ((frame.stamp_ns - frames[-3].stamp_ns) / NS)
    assert speed > 1.0  # the urban scene's ego drives
    for index, name in enumerate(frame.radar_sensors):
        rows = frame.radar_sensor == index
        if not rows.any():
            continue
        mount = frame.sensor_to_base[name].translation
        for age in np.unique(frame.radar[rows, -1]):
            origin = frame.radar_origin[rows & (frame.radar[:, -1] == age)]
            assert np.ptp(origin, axis=0).max() < 1e-4  # one position per scan
            behind = np.linalg.norm(origin[0] - mount)
            assert behind == pytest.approx(speed * age, abs=0.15 + 0.1 * speed * age)


def _inside_fraction(points: np.ndarray, center: np.ndarray, size: np.ndarray, yaw: float) -> float:
    local = points[:, :2] - center[:2]
    c, s = np.cos(yaw), np.sin(yaw)
    along, across = local @ [c, s], local @ [-s, c]
    return float(((np.abs(along) <= size[0] / 2) & (np.abs(across) <= size[1] / 2)).mean())


def test_accumulated_sweeps_line_up_on_parked_cars(frames):
    # Motion compensation: the points an older sweep returned from a parked car (above the ground,
    # within reach of its centre) land in the car's box at the key's stamp as well as the current
    # sweep's do, while the ego moves about half a metre in 0.1 s.
    checked = 0
    for frame in frames[10:-1]:
        truth = frame.ground_truth
        parked = np.flatnonzero(np.linalg.norm(np.nan_to_num(truth.velocities), axis=1) < 0.01)
        for i in parked:
            grown = truth.sizes[i] + 0.3
            fractions = []
            for age in (0.0, 0.05, 0.1):
                sweep = frame.lidar[np.abs(frame.lidar[:, -1] - age) < 0.01]
                near = sweep[(np.linalg.norm(sweep[:, :2] - truth.centers[i, :2], axis=1) < 0.6 * grown[0])
                             & (sweep[:, 2] > 0.4)]
                fractions.append(_inside_fraction(near, truth.centers[i], grown, truth.yaws[i]) if len(near) >= 10
                                 else np.nan)
            if np.isnan(fractions).any():
                continue
            assert min(fractions[1:]) >= fractions[0] - 0.1 and min(fractions) > 0.8, (frame.stamp_ns, i, fractions)
            checked += 1
    assert checked > 5


def test_evidence_counts_find_the_visible_boxes(frames):
    frame = frames[-1]
    counts = evidence_counts(frame.ground_truth, frame.lidar, frame.radar)
    assert counts.shape == (len(frame.ground_truth),) and counts.max() >= 10
    near = np.hypot(*frame.ground_truth.centers[:, :2].T) < 15
    assert np.all(counts[near] > 0)  # nothing hides that close in the small urban scene


def _messages(scene):
    with BagReader(scene) as reader:
        return list(reader.messages())


def test_missing_calibration_and_bad_images_drop_one_camera(scene):
    config = load_config()
    info = config.sensors['cam_front'].info_topic
    image = config.sensors['cam_back'].topic
    assembler = KeyframeAssembler(config)
    frames = []
    for m in _messages(scene):
        if m.topic == info:
            continue
        raw = m.raw[:40] + b'\x00' * (len(m.raw) - 40) if m.topic == image else m.raw
        frames += assembler.push(m.topic, m.msgtype, raw, m.stamp_ns)
    frames += assembler.finish()
    later = frames[10:]
    assert all([v.name for v in f.cameras] == ['cam_front_right', 'cam_front_left', 'cam_back_left',
                                               'cam_back_right'] for f in later)
    assert all(f.missing['cam_front'] == 'no camera_info' for f in later)
    # A garbled message is refused when it arrives (its stamp can not be trusted either).
    assert all(f.missing['cam_back'] == 'no image within one period' for f in later)
    assert assembler.stats['cam_front: no camera_info'] == len(frames)
    assert assembler.stats[f'undecodable {image}'] == sum(m.topic == image for m in _messages(scene))


def test_garbage_and_silent_sensors_are_counted_not_fatal(scene):
    config = load_config()
    assembler = KeyframeAssembler(config)
    frames = []
    for m in _messages(scene):
        if m.topic == config.sensors['lidar_top'].topic:
            continue  # the lidar went silent: frames go on with cameras and radar
        frames += assembler.push(m.topic, m.msgtype, m.raw, m.stamp_ns)
    frames += assembler.push('/tf', 'tf2_msgs/msg/TFMessage', b'\x00\x01\x00\x00garbage', frames[-1].stamp_ns)
    frames += assembler.finish()
    assert frames and all(f.lidar is None and f.missing['lidar_top'] == 'no recent scan' for f in frames)
    assert all(f.modalities == ('camera', 'radar') for f in frames[10:])
    assert assembler.stats['undecodable /tf'] == 1
