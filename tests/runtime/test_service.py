"""FusionService over a small simulated drive: every output, and bad input on every path."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from mmfusion_ros.msgs.decode import decode_detections, decode_diagnostics
from mmfusion_ros.msgs.encode import encode_pointcloud
from mmfusion_ros.msgs.typestore import deserialize, serialize
from mmfusion_ros.runtime.service import FusionService
from mmfusion_ros.types import DiagnosticStatus, PointCloud


class LogClock:
    """The replay clock: the log time of the message being handled."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def run(service: FusionService, clock: LogClock, messages, tail_ns: int = 500_000_000):
    outputs = []
    for topic, msgtype, raw, stamp in messages:
        clock.now = stamp
        outputs += service.push(topic, msgtype, raw)
    clock.now = messages[-1][3] + tail_ns
    outputs += service.flush()
    return outputs


def by_topic(outputs, topic):
    return [o for o in outputs if o.topic == topic]


def lidar_stamps(messages):
    from mmfusion_ros.sync.keyframes import _header_stamp

    return [_header_stamp(raw, topic) for topic, _, raw, _ in messages if topic == '/LIDAR_TOP']


@pytest.fixture
def service(fusion_config, pipeline):
    clock = LogClock()
    return FusionService(fusion_config, pipeline, clock=clock), clock


def test_one_frame_per_lidar_sweep_with_every_output(service, bag_messages):
    service, clock = service
    outputs = run(service, clock, bag_messages)
    sweeps = lidar_stamps(bag_messages)
    objects = by_topic(outputs, '/mmfusion/output/objects')
    assert len(objects) == len(sweeps) == service.summary()['frames']
    stamps = [decode_detections(o.raw).stamp_ns for o in objects]
    assert stamps == sweeps  # in order, none twice
    for name in ('disagreements', 'markers', 'debug/processing_time_ms', 'debug/pipeline_latency_ms'):
        assert len(by_topic(outputs, f'/mmfusion/output/{name}' if '/' not in name else f'/mmfusion/{name}')) == len(sweeps)
    per_frame = [decode_detections(o.raw).ids for o in objects]
    ids = [i for frame_ids in per_frame for i in frame_ids]
    assert all(len(f) == len(set(f)) for f in per_frame)  # unique within a frame
    assert 0 < len(set(ids)) < len(ids) / 3  # tracked: an object keeps its id from frame to frame
    assert by_topic(outputs, '/diagnostics')
    summary = service.summary()
    assert summary['detections'] == len(ids)
    assert summary['latency_ms']['p50'] > 0 and summary['latency_ms']['p99'] >= summary['latency_ms']['p50']
    assert {'geometry', 'network', 'decode', 'consistency', 'total'} <= set(summary['stages_ms'])
    assert summary['dropped']['total'] == 0


def test_disagreements_name_each_flagged_object_with_its_evidence(service, bag_messages):
    service, clock = service
    outputs = run(service, clock, bag_messages)
    flagged = 0
    for message in by_topic(outputs, '/mmfusion/output/disagreements'):
        _, statuses = decode_diagnostics(message.raw)
        for status in statuses:
            values = dict(status.values)
            assert status.level == DiagnosticStatus.WARN and status.name == f'object/{values["id"]}'
            assert values['reasons'] and status.message == ', '.join(values['reasons'].split(','))
            assert {'camera_head', 'lidar_head', 'radar_head', 'lidar_points', 'radar_points'} <= set(values)
            flagged += 1
    assert flagged == service.summary()['flagged']


def test_a_corrupted_message_is_counted_and_the_replay_goes_on(service, bag_messages):
    service, clock = service
    lidar_rows = [i for i, m in enumerate(bag_messages) if m[0] == '/LIDAR_TOP']
    broken = list(bag_messages)
    topic, msgtype, raw, stamp = broken[lidar_rows[5]]
    broken[lidar_rows[5]] = (topic, msgtype, b'\x00\x01\x00\x00' + b'\xff' * 7, stamp)  # header cut short
    outputs = run(service, clock, broken)
    summary = service.summary()
    assert summary['frames'] == len(lidar_rows) - 1
    assert summary['sensors']['lidar_top']['unreadable'] == 1
    assert summary['dropped']['by_reason'] == {'lidar_top: unreadable message': 1}
    last_diag = decode_diagnostics(by_topic(outputs, '/diagnostics')[-1].raw)[1]
    lidar = next(s for s in last_diag if s.name == 'mmfusion: sensor lidar_top')
    assert dict(lidar.values)['unreadable'] == '1'


def test_garbage_inside_a_well_formed_header_drops_the_sensor_not_the_frame(service, bag_messages):
    # The header parses but the cloud does not: the frame goes on without that sweep's points.
    service, clock = service
    row = [i for i, m in enumerate(bag_messages) if m[0] == '/CAM_FRONT/image_rect_compressed'][4]
    topic, msgtype, raw, stamp = bag_messages[row]
    msg = deserialize(raw, msgtype)
    msg.format = 'tiff'
    msg.data = np.frombuffer(b'not an image at all', np.uint8)
    broken = list(bag_messages)
    broken[row] = (topic, msgtype, serialize(msg, msgtype), stamp)
    run(service, clock, broken)
    summary = service.summary()
    assert summary['frames'] == len(lidar_stamps(bag_messages))
    assert any('cam_front: undecodable image' in reason for reason in summary['dropped']['frame_assembly'])


def test_a_sensor_that_stops_is_reported_stale_and_frames_go_on(service, bag_messages):
    service, clock = service
    cut = bag_messages[0][3] + 400_000_000
    silent = [m for m in bag_messages if not (m[0] == '/RADAR_FRONT' and m[3] > cut)]
    outputs = run(service, clock, silent)
    assert service.summary()['frames'] == len(lidar_stamps(bag_messages))
    while_recording = [o for o in by_topic(outputs, '/diagnostics') if cut + 450_000_000 < o.stamp_ns <= silent[-1][3]]
    statuses = decode_diagnostics(while_recording[-1].raw)[1]
    radar = next(s for s in statuses if s.name == 'mmfusion: sensor radar_front')
    assert radar.level == DiagnosticStatus.ERROR and radar.message.startswith('stale')
    other = next(s for s in statuses if s.name == 'mmfusion: sensor radar_front_left')
    assert other.level != DiagnosticStatus.ERROR


def test_a_dead_camera_leaves_partial_frames_without_delaying_them(fusion_config, pipeline, bag_messages):
    # By default frames go out when the lidar arrives, with whatever else is recent.
    clock = LogClock()
    service = FusionService(fusion_config, pipeline, clock=clock)
    without = [m for m in bag_messages if m[0] != '/CAM_FRONT/image_rect_compressed']
    outputs = run(service, clock, without)
    summary = service.summary()
    assert summary['frames'] == summary['partial_frames'] == len(lidar_stamps(bag_messages))
    assert summary['timed_out_frames'] == 0
    assert summary['sensors']['cam_front']['frames_missing'] == summary['frames']
    assert summary['sensors']['cam_back']['frames_missing'] < summary['frames'] // 2  # only before its first image
    assert by_topic(outputs, '/mmfusion/output/objects')


def test_a_sensor_waited_for_times_out_into_partial_frames(fusion_config, pipeline, bag_messages):
    config = dataclasses.replace(fusion_config, sync=dataclasses.replace(fusion_config.sync, wait_for=('cam_front',)))
    clock = LogClock()
    service = FusionService(config, pipeline, clock=clock)
    without = [m for m in bag_messages if m[0] != '/CAM_FRONT/image_rect_compressed']
    run(service, clock, without)
    summary = service.summary()
    assert summary['frames'] == summary['timed_out_frames'] == len(lidar_stamps(bag_messages))
    assert summary['sensors']['cam_front']['last_missing_reason'] == 'no message yet'
    assert summary['latency_ms']['p50'] >= config.sync.timeout_ms


def test_waiting_for_a_live_camera_never_times_out(fusion_config, pipeline, bag_messages):
    config = dataclasses.replace(fusion_config, sync=dataclasses.replace(fusion_config.sync, wait_for=('cam_front',)))
    clock = LogClock()
    service = FusionService(config, pipeline, clock=clock)
    run(service, clock, bag_messages)
    summary = service.summary()
    assert summary['frames'] == len(lidar_stamps(bag_messages)) and summary['timed_out_frames'] == 0
    assert service.sync.stats['cam_front'].used > 0


def test_an_empty_point_cloud_is_a_frame_without_lidar_points(service, bag_messages):
    service, clock = service
    rows = [i for i, m in enumerate(bag_messages) if m[0] == '/LIDAR_TOP']
    topic, msgtype, raw, stamp = bag_messages[rows[3]]
    cloud = deserialize(raw, msgtype)
    empty = PointCloud(stamp_ns=cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec,
                       frame_id=cloud.header.frame_id, xyz=np.zeros((0, 3), np.float32),
                       fields={'intensity': np.zeros(0, np.float32)})
    broken = list(bag_messages)
    broken[rows[3]] = (topic, msgtype, encode_pointcloud(empty), stamp)
    run(service, clock, broken)
    summary = service.summary()
    assert summary['frames'] == len(rows) and summary['dropped']['total'] == 0


def test_time_going_backwards_resets_and_the_second_loop_matches_the_first(fusion_config, pipeline, bag_messages):
    clock = LogClock()
    service = FusionService(fusion_config, pipeline, clock=clock)
    first = run(service, clock, bag_messages)
    looped = run(service, clock, bag_messages)
    assert service.summary()['time_resets'] == 1
    a = [decode_detections(o.raw) for o in by_topic(first, '/mmfusion/output/objects')]
    b = [decode_detections(o.raw) for o in by_topic(looped, '/mmfusion/output/objects')]
    assert len(a) == len(b)
    # The first frames after the reset lack older sweeps (history was cleared); later ones agree.
    for x, y in list(zip(a, b))[4:]:
        assert x.stamp_ns == y.stamp_ns
        np.testing.assert_allclose(x.centers, y.centers, atol=1e-6)


def test_threaded_worker_runs_the_newest_frame_and_counts_what_it_skips(fusion_config, pipeline, bag_messages):
    published, done = [], threading.Event()

    class SlowPipeline:
        def __init__(self, inner):
            self.inner, self.net, self.timer = inner, inner.net, inner.timer

        def step(self, frame, health=None):
            time.sleep(0.3)  # slower than the frames come in
            return self.inner.step(frame, health)

        def reset(self, new_run=False):
            self.inner.reset(new_run)

    clock = LogClock()
    service = FusionService(fusion_config, SlowPipeline(pipeline), clock=clock, threaded=True,
                            publish=published.append)
    try:
        for topic, msgtype, raw, stamp in bag_messages:
            clock.now = stamp
            service.push(topic, msgtype, raw)
            time.sleep(0.002)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and service._mailbox is not None:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        service.close()
    summary = service.summary()
    frames, skipped = summary['frames'], service.counters['skipped_frames']
    assert skipped > 0 and frames + skipped + service.counters['failed_frames'] <= len(lidar_stamps(bag_messages))
    objects = [decode_detections(o.raw).stamp_ns for o in published if o.topic == '/mmfusion/output/objects']
    assert objects == sorted(objects) and len(objects) == frames
    assert objects[-1] == lidar_stamps(bag_messages)[-2] or objects[-1] == lidar_stamps(bag_messages)[-1]


def test_threaded_mode_needs_somewhere_to_publish(fusion_config, pipeline):
    with pytest.raises(ValueError, match='publish callback'):
        FusionService(fusion_config, pipeline, threaded=True)


def test_subscriptions_and_publications_follow_the_config(fusion_config, pipeline):
    service = FusionService(fusion_config, pipeline, node_name='/perception/fusion')
    inputs = service.subscriptions()
    assert inputs['/LIDAR_TOP'] == 'sensor_msgs/msg/PointCloud2'
    assert inputs['/CAM_FRONT/camera_info'] == 'sensor_msgs/msg/CameraInfo'
    assert inputs['/tf_static'] == 'tf2_msgs/msg/TFMessage'
    outputs = service.publications()
    assert outputs['/perception/fusion/output/objects'] == 'vision_msgs/msg/Detection3DArray'
    assert outputs['/diagnostics'] == 'diagnostic_msgs/msg/DiagnosticArray'
    assert outputs['/perception/fusion/debug/pipeline_latency_ms'] == 'std_msgs/msg/Float64'


def test_a_blacked_out_camera_is_reported_failed_in_diagnostics_and_gated_down(fusion_config, pipeline, blackout_bag):
    from mmfusion_ros.io.bag import BagReader

    with BagReader(blackout_bag) as reader:
        messages = [(m.topic, m.msgtype, m.raw, m.stamp_ns) for m in reader.messages()]
    clock = LogClock()
    gates = []
    service = FusionService(fusion_config, pipeline, clock=clock)
    service.on_result = lambda result, *_: gates.append((result.frame.stamp_ns, result.health['cam_front'].state,
                                                         result.gates))
    outputs = run(service, clock, messages)
    states = [state for _, state, _ in gates]
    start = next(i for i, state in enumerate(states) if state == 'failed')
    assert 'failed' not in states[:5] and start < len(states) - 3
    # Failed within 3 frames of the first black image, and the fault's frames are mostly failed.
    faults_from = min(m[3] for m in messages if m[0] == '/mmfusion/faults' and b'camera_blackout' in m[2])
    first_black = next(i for i, (stamp, _, _) in enumerate(gates) if stamp >= faults_from)
    assert start - first_black <= 3
    assert service.summary()['sensors']['cam_front']['health_frames']['failed'] >= 3
    failed_statuses = [s for o in by_topic(outputs, '/diagnostics') for s in decode_diagnostics(o.raw)[1]
                       if s.name == 'mmfusion: health cam_front' and s.level == DiagnosticStatus.ERROR]
    assert failed_statuses and 'blackout' in failed_statuses[0].message + str(failed_statuses[0].values)
    # One camera of six is gated down by a sixth of the camera's weight (the fuser's gate follows health).
    healthy_gate = gates[first_black - 1][2][0]
    assert gates[start + 1][2][0] < healthy_gate
