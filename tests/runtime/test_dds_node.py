"""dds-node and dds-play: the service over DDS on loopback, held against replay of the same recording.

Every participant uses LOOPBACK_CONFIG (the bridge's default; nothing leaves the machine) on a domain
id drawn per test from 201..232, apart from test_dds.py's 100..200, because the node's topics are the
configured ones (/LIDAR_TOP, /tf, ...) and cannot carry a per-test prefix. Waits are generous (a
loaded 2-core machine); no test asserts a duration.
"""

from __future__ import annotations

import json
import os
import queue
import re
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mmfusion_ros.cli import _domain_id, main
from mmfusion_ros.config import DEFAULT_CONFIG, FusionConfig, load_config
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.io.bag import BagReader
from mmfusion_ros.msgs.decode import decode_detections
from mmfusion_ros.msgs.typestore import typestore
from mmfusion_ros.runtime.dds import DdsBridge, IdlTypes, dds_topic_name
from mmfusion_ros.runtime.dds_node import Received, StampOrderedIntake, play_bag_over_dds, run_dds_node
from mmfusion_ros.runtime.replay import ReplayOptions, replay
from mmfusion_ros.runtime.service import DETECTIONS_TYPE, FusionService

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, '-m', 'mmfusion_ros.cli']
OBJECTS = '/mmfusion/output/objects'
WAIT_S = 60.0


@pytest.fixture
def domain_id() -> int:
    return random.randint(201, 232)


def _waiting_for_every_sensor(folder: Path, config: FusionConfig) -> Path:
    """A parameter file over the default: frames wait for every camera and radar, however long.

    Then which messages a frame holds does not depend on the order in which topics arrive (over DDS
    each topic is its own stream), only on each topic's own order, which DDS keeps.
    """
    others = [name for name, sensor in config.sensors.items() if sensor.modality in ('camera', 'radar')]
    path = folder / 'wait_for_all.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'sync': {'wait_for': others,
                                                                          'timeout_ms': 600_000.0}}}}))
    return path


class _Lines:
    """A child's stdout, line by line, read on a thread so that waiting never blocks the test."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            self.lines.put(line.decode(errors='replace'))

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return True
        return False

    def text(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return ''.join(self.seen)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def _boxes_equal(got: Any, want: Any, where: str) -> None:
    assert got.stamp_ns == want.stamp_ns, where
    assert got.frame_id == want.frame_id, where
    assert got.labels == want.labels, where
    assert got.ids == want.ids, where
    for field in ('centers', 'sizes', 'yaws', 'scores', 'velocities'):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=0, atol=1e-5,
                                   err_msg=f'{where}: {field}')


# --- the two-process test -------------------------------------------------------------------------


def _replayed(sim_bag: Path, config: FusionConfig, pipeline, out_bag: Path) -> tuple[dict[str, Any], list[Any]]:
    """``replay``'s summary and the objects it published, read back from its output bag."""
    summary = replay(sim_bag, config, ReplayOptions(out_bag=out_bag, video=False, progress=False), pipeline=pipeline)
    with BagReader(out_bag) as reader:
        return summary, [decode_detections(m.raw, OBJECTS) for m in reader.messages([OBJECTS])]


def test_dds_play_into_dds_node_gives_what_replay_gives(sim_bag: Path, pipeline, tmp_path: Path,
                                                         domain_id: int) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    overlay = _waiting_for_every_sensor(tmp_path, load_config())
    config = load_config([DEFAULT_CONFIG, overlay])
    node_json, play_json = tmp_path / 'node.json', tmp_path / 'play.json'
    node = subprocess.Popen(CLI + ['dds-node', '--config', str(DEFAULT_CONFIG), '--config', str(overlay), '--inline',
                                   '--domain', str(domain_id), '--duration', '600', '--json', str(node_json)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    node_lines = _Lines(node)
    play = None
    # The reference, on a thread while the node works: replay of the same recording, same config.
    with BagReader(sim_bag) as reader:
        recorded = {info.name for info in reader.topics}
    inputs = sorted(set(FusionService(config, pipeline).subscriptions()) & recorded)
    references = ThreadPoolExecutor(max_workers=1)
    replayed = references.submit(_replayed, sim_bag, config, pipeline, tmp_path / 'replayed')
    try:
        assert node_lines.wait_for('listening on DDS domain', WAIT_S), node_lines.text()
        timings['node ready'] = time.monotonic() - started
        received: list[bytes] = []
        with DdsBridge(domain_id) as bridge:  # the third participant
            objects = bridge.reader(OBJECTS, DETECTIONS_TYPE, reliable=True, depth=1000)
            assert objects.wait_for_publishers(1, WAIT_S), 'the node never offered its objects'
            play = subprocess.Popen(CLI + ['dds-play', str(sim_bag), '--rate', '0.2', '--domain', str(domain_id),
                                           '--topics', *inputs, '--json', str(play_json)],
                                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            while play.poll() is None:
                received += objects.take_raw(timeout_s=0.5)
            play_output = play.communicate(timeout=WAIT_S)[0].decode(errors='replace')
            assert play.returncode == 0, play_output
            timings['played'] = time.monotonic() - started
            reference, want = replayed.result(timeout=300)
            timings['replayed'] = time.monotonic() - started
            # Frames that replay completed before the recording ended come while the node runs; the
            # ones it let time out at the end come when the node stops (it flushes as replay does).
            settled = reference['frames'] - reference['timed_out_frames']
            deadline = time.monotonic() + 300
            while len(received) < settled and time.monotonic() < deadline and node.poll() is None:
                received += objects.take_raw(timeout_s=0.5)
            timings['settled frames received'] = time.monotonic() - started
            node.send_signal(signal.SIGINT)
            node.wait(timeout=WAIT_S)
            deadline = time.monotonic() + 10
            while len(received) < len(want) and time.monotonic() < deadline:
                received += objects.take_raw(timeout_s=0.5)
        assert node.returncode == 0, node_lines.text()
        timings['node stopped'] = time.monotonic() - started
    finally:
        _stop(node)
        if play is not None:
            _stop(play)
        references.shutdown(wait=True)
    print('timings (s since start):', {k: round(v, 1) for k, v in timings.items()})
    assert len(want) == reference['frames'] >= 20
    assert sum(len(d) for d in want) > 0, 'the reference holds no detection: nothing would be compared'

    played = json.loads(play_json.read_text())
    summary = json.loads(node_json.read_text())
    assert played['no_subscriber'] == [] and played['failed'] == {}
    # Nothing lost on the way: the node received every message the player published.
    assert {t: n for t, n in summary['dds']['received'].items() if n} == played['published']
    assert summary['dds']['rejected'] == {} and summary['dds']['stopped_by'] == 'SIGINT'
    for count in ('frames', 'partial_frames', 'timed_out_frames', 'tf_timeouts', 'detections'):
        assert summary[count] == reference[count], count

    got = [decode_detections(raw, OBJECTS) for raw in received]
    assert len(got) == len(want), f'{len(got)} frames over DDS, {len(want)} from replay'
    for index, (one, other) in enumerate(zip(got, want)):
        _boxes_equal(one, other, f'frame {index}')


# --- malformed input -------------------------------------------------------------------------------


def _pointcloud_with_garbage(stamp_ns: int) -> bytes:
    """A PointCloud2 of valid layout whose content is not a cloud: 16-byte points, 5 bytes of data."""
    store = typestore()
    types = store.types
    stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    header = types['std_msgs/msg/Header'](stamp=stamp, frame_id='LIDAR_TOP')
    field = types['sensor_msgs/msg/PointField']
    cloud = types['sensor_msgs/msg/PointCloud2'](
        header=header, height=1, width=3,
        fields=[field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate('xyz')],
        is_bigendian=False, point_step=16, row_step=48, data=np.arange(5, dtype=np.uint8), is_dense=True)
    return bytes(store.serialize_cdr(cloud, 'sensor_msgs/msg/PointCloud2', little_endian=True))


def _pointcloud_not_utf8(bag_messages) -> bytes:
    """The recording's first sweep with its frame id's first two bytes made invalid UTF-8."""
    raw = bytearray(next(raw for topic, _, raw, _ in bag_messages if topic == '/LIDAR_TOP'))
    # CDR: 4-byte encapsulation, stamp (8 bytes), frame id length (4 bytes), then its characters.
    assert int.from_bytes(raw[12:16], 'little') > 2
    raw[16:18] = b'\xff\xfe'
    return bytes(raw)


def _camera_info_without_calibration(raw: bytes) -> bytes:
    store = typestore()
    info = store.deserialize_cdr(raw, 'sensor_msgs/msg/CameraInfo')
    info.k = np.zeros(9)
    return bytes(store.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo', little_endian=True))


@pytest.mark.parametrize('inline', [True, False], ids=['inline', 'threaded'])
def test_malformed_messages_are_counted_and_the_node_goes_on(fusion_config: FusionConfig, pipeline, bag_messages,
                                                             domain_id: int, inline: bool) -> None:
    from cyclonedds._clayer import ddspy_write
    from cyclonedds.core import Policy, Qos
    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    stop, ready = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def node() -> None:
        try:
            outcome['summary'] = run_dds_node(fusion_config, domain_id=domain_id, inline=inline, stop=stop,
                                              ready=ready.set, pipeline=pipeline)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome['error'] = err

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    assert ready.wait(WAIT_S), outcome
    # A plain participant on the node's domain (this process holds it, with the node's loopback config).
    participant = DomainParticipant(domain_id)
    idl = IdlTypes(typestore())
    keep_all = Qos(Policy.Reliability.Reliable(10**8), Policy.History.KeepLast(1000))
    try:
        topics: dict[str, Topic] = {}
        writers: dict[str, DataWriter] = {}

        def writer(topic: str, msgtype: str) -> DataWriter:
            if topic not in writers:
                topics[topic] = Topic(participant, dds_topic_name(topic), idl.struct(msgtype))
                writers[topic] = DataWriter(participant, topics[topic], keep_all)
            return writers[topic]

        def write(topic: str, msgtype: str, raw: bytes) -> None:
            writer(topic, msgtype).write(idl.struct(msgtype).deserialize(raw))

        first_ns = bag_messages[0][3]
        lidar = writer('/LIDAR_TOP', 'sensor_msgs/msg/PointCloud2')
        outputs = DataReader(participant, Topic(participant, dds_topic_name(OBJECTS), idl.struct(DETECTIONS_TYPE)),
                             keep_all)
        deadline = time.monotonic() + WAIT_S
        while lidar.get_publication_matched_status().current_count < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # 1. Bytes DDS carries that are no PointCloud2 (a frame id that is not UTF-8): the node's typed
        #    reader drops them, counted.
        assert ddspy_write(lidar._ref, _pointcloud_not_utf8(bag_messages)) == 0
        # 2. A CameraInfo without calibration: the service cannot use it, counted.
        info_topic = fusion_config.sensors['cam_front'].info_topic
        info = next(raw for topic, _, raw, _ in bag_messages if topic == info_topic)
        write(info_topic, 'sensor_msgs/msg/CameraInfo', _camera_info_without_calibration(info))
        # 3. A PointCloud2 whose data does not fit its layout, one sweep before the recording's first:
        #    the first good frame finds it among its sweeps and cannot use it.
        first_sweep_ns = next(stamp for topic, _, _, stamp in bag_messages if topic == '/LIDAR_TOP')
        write('/LIDAR_TOP', 'sensor_msgs/msg/PointCloud2', _pointcloud_with_garbage(first_sweep_ns - 50_000_000))
        # Then a fifth of a second of the recording: frames with detections must follow.
        good = [m for m in bag_messages if m[3] <= first_ns + 200_000_000 and m[0] in
                FusionService(fusion_config, pipeline).subscriptions()]
        for topic, msgtype, raw, _ in good:
            write(topic, msgtype, raw)
        sweeps = sum(1 for m in good if m[0] == '/LIDAR_TOP')
        # Inline runs every frame; threaded runs the newest and skips the rest: one is enough there.
        expected = sweeps if inline else 1
        published = 0
        deadline = time.monotonic() + 120
        while published < expected and time.monotonic() < deadline and thread.is_alive():
            published += len(outputs.take(N=100))
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)
        participant.__del__()
    assert 'error' not in outcome, outcome.get('error')
    summary = outcome['summary']
    dds = summary['dds']
    assert dds['mode'] == ('inline' if inline else 'threaded')
    assert dds['rejected'] == {'/LIDAR_TOP': 1}
    assert 'not a sensor_msgs/msg/PointCloud2' in dds['last_rejected']
    assert summary['dropped']['by_reason'][f'{info_topic}: unreadable message'] == 1
    assert dds['received']['/LIDAR_TOP'] == sweeps + 1  # the garbled cloud reached the service
    assert published >= expected and summary['frames'] >= expected and summary['detections'] > 0
    if inline:  # every frame ran, so the first good one met the garbled sweep among its own
        assert summary['dropped']['frame_assembly'].get('lidar_top: unusable scan', 0) >= 1


def test_node_and_player_refuse_bad_arguments_before_touching_dds(fusion_config: FusionConfig, sim_bag: Path,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'^DDS domain id 233 is not an integer in 0\.\.232$'):
        run_dds_node(fusion_config, domain_id=233)
    with pytest.raises(ConfigError, match=r'^duration: must be a positive number of seconds, got -1$'):
        run_dds_node(fusion_config, domain_id=7, duration_s=-1)
    with pytest.raises(ConfigError, match=r'^rate: must be a finite number >= 0 \(0: as fast as possible\), got nan$'):
        play_bag_over_dds(sim_bag, domain_id=7, rate=float('nan'))
    with pytest.raises(ConfigError, match=r'^wait for subscribers: must be >= 0 seconds, got -2$'):
        play_bag_over_dds(sim_bag, domain_id=7, wait_for_subscribers_s=-2)
    with pytest.raises(ConfigError, match=rf'^{tmp_path / "absent"}: no such recording$'):
        play_bag_over_dds(tmp_path / 'absent', domain_id=7)
    with pytest.raises(ConfigError, match=r'^topics: /nope not in the recording; it holds /CAM_BACK'):
        play_bag_over_dds(sim_bag, domain_id=7, topics=['/LIDAR_TOP', '/nope'])


# --- intake order ----------------------------------------------------------------------------------


def _message(topic: str, stamp_ns: int | None) -> Received:
    return Received(topic, 'x/msg/Y', b'', stamp_ns)


def test_intake_orders_by_stamp_then_topic_and_waits_for_tf() -> None:
    intake = StampOrderedIntake(reset_on_backwards_ns=5)
    static, tf_10 = _message('/tf_static', 0), _message('/tf', 10)
    lidar_10, camera_5, radar_12 = _message('/LIDAR_TOP', 10), _message('/CAM/image', 5), _message('/RADAR', 12)
    unreadable = _message('/RADAR', None)
    # /tf_static first; the rest by stamp, then topic ('/LIDAR_TOP' < '/tf'); the radar at 12 waits for /tf.
    assert intake.order([static], [tf_10], [lidar_10, radar_12, camera_5, unreadable]) == \
        [static, unreadable, camera_5, lidar_10, tf_10]
    assert intake.held == 1 and intake.held_max == 1
    tf_11, tf_13 = _message('/tf', 11), _message('/tf', 13)
    assert intake.order([], [tf_11], []) == [tf_11]  # /tf not yet at 12: still held
    assert intake.order([], [tf_13], []) == [radar_12, tf_13]
    # A message ahead of /tf waits one pass; a pass that finds /tf quiet lets it go.
    radar_20 = _message('/RADAR', 20)
    assert intake.order([], [], [radar_20]) == []
    assert intake.order([], [], []) == [radar_20]
    # /tf far behind the newest is a new timeline (a looped recording): older stamps flow again.
    tf_1, camera_2 = _message('/tf', 1), _message('/CAM/image', 2)
    assert intake.order([], [tf_1], []) == [tf_1]
    assert intake.newest_tf_ns == 1
    assert intake.order([], [_message('/tf', 3)], [camera_2])[0] is camera_2
    held = _message('/RADAR', 50)
    intake.order([], [_message('/tf', 4)], [held])
    assert intake.drain() == [held] and intake.held == 0


# --- command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(('argv', 'message'), [
    (['dds-node', '--domain', '300'], r"--domain: a DDS domain id is an integer in 0\.\.232, got '300'"),
    (['dds-node', '--domain', 'abc'], r"--domain: a DDS domain id is an integer in 0\.\.232, got 'abc'"),
    (['dds-node', '--domain', '7', '--duration', '0'], r'--duration: must be positive, got 0\.0'),
    (['dds-play', 'no/such/bag', '--domain', '7'], r'no/such/bag: no such recording'),
    (['dds-play', 'no/such/bag', '--domain', '-1'], r"--domain: a DDS domain id is an integer in 0\.\.232, got '-1'"),
])
def test_cli_errors_are_one_line_with_exit_status_2(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1, err
    assert err.startswith(f'mmfusion {argv[0]}: error: ')
    assert re.search(message, err), err


def test_cli_play_errors_name_the_rate_and_unknown_topics(sim_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['dds-play', str(sim_bag), '--domain', '7', '--rate', '-1']) == 2
    assert capsys.readouterr().err == \
        'mmfusion dds-play: error: --rate: must be >= 0 (0: as fast as possible), got -1.0\n'
    assert main(['dds-play', str(sim_bag), '--domain', '7', '--topics', '/nope']) == 2
    err = capsys.readouterr().err
    assert err.startswith('mmfusion dds-play: error: topics: /nope not in the recording; it holds /CAM_BACK') and \
        err.count('\n') == 1, err


def test_domain_comes_from_the_option_then_ros_domain_id_then_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv('ROS_DOMAIN_ID', raising=False)
    assert _domain_id(None) == 0
    monkeypatch.setenv('ROS_DOMAIN_ID', '42')
    assert _domain_id(None) == 42
    assert _domain_id('5') == 5
    monkeypatch.setenv('ROS_DOMAIN_ID', 'lots')
    with pytest.raises(ConfigError, match=r"^ROS_DOMAIN_ID: a DDS domain id is an integer in 0\.\.232, got 'lots'$"):
        _domain_id(None)
    assert 'ROS_DOMAIN_ID' in os.environ
