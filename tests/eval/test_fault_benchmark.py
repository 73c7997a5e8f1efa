"""The fault benchmark's figures on hand-made frames, where every number can be counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mmfusion_ros.config import load_config
from mmfusion_ros.eval.faults import FaultFrame, _match, fault_metrics, sensor_fingerprints
from mmfusion_ros.model.config import CLASSES
from mmfusion_ros.sim.faults import RecordedFault
from mmfusion_ros.types import Detections3D

CONFIG = load_config()
FAULT = RecordedFault('camera_blackout', 'cam_front', 0, 10**9, ('a', 'b'), {})


def boxes(centers, ids=None, scores=None) -> Detections3D:
    n = len(centers)
    return Detections3D(0, 'base_link', np.array([[x, y, 0.8] for x, y in centers], float).reshape(-1, 3),
                        np.tile([4.5, 1.9, 1.6], (n, 1)), np.zeros(n), np.zeros((n, 2)), ('car',) * n,
                        np.ones(n) if scores is None else np.array(scores, float), tuple(ids or ()))


def frames(flags_per_frame, fault_from=2, health=None, recording='scene_00000', prints=None):
    """Ten frames of objects a (20, 0), b (0, 20), c (-20, 0); detections at all three. ``prints``: per
    frame, cam_front's fingerprint."""
    truth = boxes([(20, 0), (0, 20), (-20, 0)], ids=['a', 'b', 'c'])
    out = []
    for index, flags in enumerate(flags_per_frame):
        detections = boxes([(20.3, 0), (0, 20.4), (-20, 0.2)])
        faults = (FAULT,) if index >= fault_from else ()
        out.append(FaultFrame(recording, index, index, faults, truth, detections, tuple(flags),
                              _match(truth, detections), {} if health is None else {'cam_front': health[index]},
                              {} if prints is None else {'cam_front': prints[index]}))
    return out


def test_matching_is_nearest_first_within_two_metres():
    truth = boxes([(0, 0), (10, 0)])
    detections = boxes([(10.5, 0), (0.4, 0), (30, 0)])
    assert list(_match(truth, detections)) == [1, 0]
    assert list(_match(truth, boxes([(3, 0)]))) == [-1, -1]


def test_recall_time_to_flag_and_precision():
    none = ((), (), ())
    flags = [none, none,                                                   # before the fault
             none,                                                         # fault frame 0: nothing yet
             (('missing_in_camera',), (), ()),                             # a flagged 1 frame in
             (('missing_in_camera',), (), ('missing_in_camera',)),          # c is not affected: a false flag
             (('missing_in_camera',), ('only_lidar',), ()),                 # b: wrong modality
             (('missing_in_camera',), (), ()), (('missing_in_camera',), (), ()),
             (('missing_in_camera',), ('missing_in_camera',), ()),          # b flagged 6 frames in: too late
             (('missing_in_camera',), ('missing_in_camera',), ())]
    run = frames(flags)
    m = fault_metrics([run], [], CONFIG, CLASSES)
    assert m['object_fault_pairs'] == 2
    assert m['flag_recall_3'] == 0.5 and m['flag_recall_any'] == 1.0
    assert m['time_to_flag_frames'] == {'mean': 3.5, 'median': 3.5}
    # 12 flags while the fault is on: 7 on a + 2 on b right; c's and b's only_lidar wrong.
    assert m['flags_during_fault'] == 11 and m['precision'] == pytest.approx(9 / 11, abs=1e-4)
    assert m['false_flag_rate_before_fault'] == 0.0


def test_false_flags_on_clean_frames_and_resistance():
    clean = frames([((), (), ())] * 10, fault_from=99, recording='scene_00000')
    clean[3] = FaultFrame(*[getattr(clean[3], f) for f in ('recording', 'index', 'stamp_ns', 'faults', 'truth',
                                                           'detections')],
                          (('only_radar',), (), ()), clean[3].matched)
    faulted = frames([((), (), ())] * 10)
    m = fault_metrics([faulted], [clean], CONFIG, CLASSES)
    assert m['false_flag_rate_clean'] == pytest.approx(1 / 30, abs=1e-4)
    assert m['mAP_fault'] == m['mAP_clean'] and m['resistance_ability'] == 1.0


def test_figures_from_the_onset_count_from_when_the_fault_shows_in_the_data():
    # The fault starts at frame 2, but cam_front sends what the clean render sends until frame 5 (a
    # frozen camera's first image of the fault is a fresh one); a is flagged at 6, b at 9.
    none = ((), (), ())
    flags = [none] * 6 + [(('missing_in_camera',), (), ())] * 3 + [(('missing_in_camera',), ('missing_in_camera',), ())]
    states = ['ok'] * 6 + ['failed'] * 4
    faulted = frames(flags, health=states, prints=[0] * 5 + [1] * 5)
    clean = frames([none] * 10, fault_from=99, prints=[0] * 10)
    m = fault_metrics([faulted], [clean], CONFIG, CLASSES)
    assert m['onset_frames'] == {'mean': 3.0, 'max': 3} and m['onset_unknown'] == 0
    assert m['object_fault_pairs'] == 2 and m['flag_recall_3'] == 0.0  # 4 and 7 frames after the start
    assert m['time_to_flag_frames'] == {'mean': 5.5, 'median': 5.5}
    assert m['object_fault_pairs_from_onset'] == 2 and m['flag_recall_3_from_onset'] == 0.5  # 1 and 4 after it
    assert m['time_to_flag_from_onset_frames'] == {'mean': 2.5, 'median': 2.5}
    assert m['health_latency_frames'] == {'mean': 4.0, 'max': 4}
    assert m['health_latency_from_onset_frames'] == {'mean': 1.0, 'max': 1}

    # Renders that differ before the fault (or no clean render): the onset is the start.
    early = frames(flags, health=states, prints=[2] + [0] * 4 + [1] * 5)
    for m in (fault_metrics([early], [clean], CONFIG, CLASSES), fault_metrics([faulted], [], CONFIG, CLASSES)):
        assert m['onset_unknown'] == 1 and m['onset_frames'] == {'mean': 0.0, 'max': 0}
        assert m['flag_recall_3_from_onset'] == m['flag_recall_3']
        assert m['time_to_flag_from_onset_frames'] == m['time_to_flag_frames']
        assert m['health_latency_from_onset_frames'] == m['health_latency_frames']


def test_sensor_fingerprints_tell_a_changed_or_missing_sensor_apart():
    from mmfusion_ros.frame import CameraView, Frame
    from mmfusion_ros.types import CameraIntrinsics, RigidTransform

    intrinsics = CameraIntrinsics('cam_front', 8, 6, np.array([[4.0, 0, 4], [0, 4.0, 3], [0, 0, 1]]), 'none', np.zeros(0))
    mount = RigidTransform(np.eye(3), np.zeros(3))

    def frame(pixel=10, stamp=5, radar_x=3.0, radars=('radar_front', 'radar_back')):
        image = np.full((6, 8, 3), pixel, np.uint8)
        radar = np.zeros((len(radars), 7), np.float32)
        radar[:, 0] = radar_x
        return Frame(100, 'base_link', (CameraView('cam_front', stamp, image, intrinsics, mount),),
                     radar=radar, radar_sensor=np.arange(len(radars)), radar_sensors=radars,
                     scan_stamps={name: 90 for name in radars})

    base = sensor_fingerprints(frame())
    assert set(base) == {'cam_front', 'radar_front', 'radar_back'}
    assert sensor_fingerprints(frame()) == base
    assert sensor_fingerprints(frame(pixel=11))['cam_front'] != base['cam_front']
    assert sensor_fingerprints(frame(stamp=6))['cam_front'] != base['cam_front']
    moved = sensor_fingerprints(frame(radar_x=3.5))
    assert moved['radar_front'] != base['radar_front'] and moved['cam_front'] == base['cam_front']
    assert 'radar_back' not in sensor_fingerprints(frame(radars=('radar_front',)))


def test_health_recall_and_latency():
    states = ['ok'] * 4 + ['failed'] * 6  # the fault starts at frame 2, health fails at frame 4
    m = fault_metrics([frames([((), (), ())] * 10, health=states)], [], CONFIG, CLASSES)
    assert m['health_recall'] == 1.0 and m['health_latency_frames'] == {'mean': 2.0, 'max': 2}
    m = fault_metrics([frames([((), (), ())] * 10, health=['ok'] * 10)], [], CONFIG, CLASSES)
    assert m['health_recall'] == 0.0


def test_clean_false_flags_of_detections_and_of_objects():
    from mmfusion_ros.eval.faults import clean_summary

    truth = boxes([(20, 0), (0, 20)], ids=['a', 'b'])
    detections = boxes([(20.3, 0), (0, 20.4), (-30, 5)])  # the third is no object
    run = []
    for index, flags in enumerate([((), (), ('only_radar',)),
                                   (('missing_in_radar',), (), ('only_radar', 'missing_in_lidar')),
                                   ((), (), ()), ((), (), ())]):
        run.append(FaultFrame('scene_00000', index, index, (), truth, detections, flags, _match(truth, detections)))
    summary = clean_summary([run])
    assert summary['detections'] == 12 and summary['false_flag_rate'] == pytest.approx(3 / 12, abs=1e-4)
    assert summary['objects'] == 8 and summary['false_flag_rate_objects'] == pytest.approx(1 / 8, abs=1e-4)
    assert summary['flags_by_kind'] == {'missing_in_lidar': 1, 'missing_in_radar': 1, 'only_radar': 2}
    assert summary['health_false_alarms'] == {'sensor_frames': 0, 'rate': None, 'recordings': 0, 'frames_by_sensor': {}}


def test_health_false_alarms_on_clean_recordings():
    from mmfusion_ros.eval.faults import health_false_alarms

    quiet = frames([((), (), ())] * 4, fault_from=99, recording='scene_00000', health=['ok'] * 4)
    noisy = frames([((), (), ())] * 4, fault_from=99, recording='scene_00001', health=['ok', 'degraded', 'failed', 'ok'])
    alarms = health_false_alarms([quiet, noisy])
    assert alarms['sensor_frames'] == 8 and alarms['rate'] == pytest.approx(2 / 8, abs=1e-4)
    assert alarms['recordings'] == 1 and alarms['frames_by_sensor'] == {'cam_front': 2}
