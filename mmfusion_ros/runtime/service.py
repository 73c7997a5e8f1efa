"""``FusionService``: serialized messages in, serialized messages out, whatever carries them.

    push(topic, type, CDR bytes)
      -> KeyframeAssembler.take: TF, CameraInfo and ground truth absorbed; sensor data buffered
         (decoded only when a frame uses it)
      -> ApproximateTimeSynchronizer: when a frame is complete (or its timeout passed), its stamp
      -> KeyframeAssembler.assemble(stamp): the Frame (multi-sweep lidar deskewed, cameras placed
         at the stamp, radar scans aged)
      -> FusionPipeline.step(frame) -> FusionResult
      -> outputs: objects, disagreements, markers, timing topics, and /diagnostics once a period

The rclpy node, bag replay and the DDS bridge differ only in where bytes come from and where the
returned ``OutputMessage``s go. Two ways to run frames:

- inline (``threaded=False``, replay as fast as possible): ``push`` runs every completed frame and
  returns its outputs; nothing is skipped;
- threaded (live and ``--realtime``): completed frames go to a one-slot mailbox that a worker
  empties; a frame that is still waiting when a newer one completes is replaced and counted as
  skipped, so the worker always runs the newest frame and no queue grows. Outputs go to ``publish``.

Nothing that arrives can stop the service: an unreadable message, a frame the pipeline rejects, a
sensor that stops, time jumping backwards: each is counted, named in ``/diagnostics`` and in
``summary()``, and the next message is handled as usual.

Latency of a frame: from its trigger stamp to the publication of its outputs, in the service's
clock. With an injected clock that follows the recording (replay), the part after the frame is
complete is measured in wall time, so it is what a live system of this speed would see.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import FusionConfig
from ..errors import MmfusionError
from ..frame import Frame
from ..msgs.encode import encode_detections, encode_diagnostics, encode_float64, encode_markers
from ..pipeline import FusionPipeline, FusionResult
from ..sync.approximate import ApproximateTimeSynchronizer, SyncedSet, SyncInput
from ..sync.keyframes import FAULTS_TOPIC, GROUND_TRUTH_TOPIC, KeyframeAssembler
from ..types import DiagnosticStatus
from .outputs import box_markers, disagreement_statuses

__all__ = ['FusionService', 'OutputMessage']

NS = 1_000_000_000
STALE_PERIODS = 5  # a sensor silent for this many periods is reported stale (ERROR)

DETECTIONS_TYPE = 'vision_msgs/msg/Detection3DArray'
DIAGNOSTICS_TYPE = 'diagnostic_msgs/msg/DiagnosticArray'
MARKERS_TYPE = 'visualization_msgs/msg/MarkerArray'
FLOAT64_TYPE = 'std_msgs/msg/Float64'


@dataclass(frozen=True)
class OutputMessage:
    topic: str
    msgtype: str
    raw: bytes
    stamp_ns: int  # the service's clock when it was produced (the log time when written to a bag)


@dataclass
class _SensorStats:
    received: int = 0
    unreadable: int = 0
    last_stamp_ns: int | None = None
    last_arrival_ns: int | None = None
    interval_ns: float | None = None  # smoothed interval between stamps
    missing_frames: int = 0
    last_missing: str = ''


class FusionService:
    """One detector behind any transport; see the module docstring."""

    def __init__(self, config: FusionConfig, pipeline: FusionPipeline | None = None, *,
                 weights: str | None = None, clock: Callable[[], int] | None = None,
                 node_name: str | None = None, threaded: bool = False,
                 publish: Callable[[OutputMessage], None] | None = None) -> None:
        self.config = config
        self.pipeline = pipeline if pipeline is not None else FusionPipeline(config, weights=weights)
        self.pipeline.reset(new_run=True)  # a pipeline reused from an earlier run brings nothing of it along
        self.clock = clock or time.monotonic_ns
        net = self.pipeline.net.config
        self.assembler = KeyframeAssembler(config, lidar_sweeps=min(config.sync.lidar_sweeps, net.lidar.sweeps),
                                           radar_sweeps=min(config.sync.radar_sweeps, net.radar.sweeps),
                                           keys='external',
                                           reset_on_backwards_ns=round(config.sync.reset_on_backwards_ms * 1e6))
        trigger = config.trigger_sensor
        self.sync = ApproximateTimeSynchronizer(
            [SyncInput(name, queue_size=config.sync.queue_size,
                       required=trigger is None or name == trigger or name in config.sync.wait_for)
             for name in config.sensors],
            slop_ns=round(config.sync.slop_ms * 1e6), trigger=trigger,
            timeout_ns=round(config.sync.timeout_ms * 1e6), clock=self.clock,
            reset_on_backwards_ns=round(config.sync.reset_on_backwards_ms * 1e6))
        outputs = config.outputs
        self.topics = {name: outputs.resolve(getattr(outputs, name), node_name)
                       for name in ('objects', 'disagreements', 'markers', 'diagnostics', 'processing_time',
                                    'pipeline_latency')}
        self._sensors = {name: _SensorStats() for name in config.sensors}
        self._topic_sensor = {s.topic: name for name, s in config.sensors.items()}
        self.counters: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()  # reason -> count
        self._resets_seen = 0
        self._tf_resets_seen = 0
        self._health: dict[str, Any] = {}  # sensor -> HealthEstimate of the last frame
        self._calibration: dict[str, Any] = {}  # sensor -> drift or clock offset estimate of the last frame
        self.health_seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._awaiting_tf: list[tuple[SyncedSet, int]] = []  # complete frames waiting for /tf, oldest first
        self._timeout_ns = round(config.sync.timeout_ms * 1e6)
        self._backwards_ns = round(config.sync.reset_on_backwards_ms * 1e6)
        trigger_rate = config.sensors[trigger].rate_hz if trigger else None
        self._tf_horizon_ns = round(NS / trigger_rate) if trigger_rate and config.sensors[trigger].modality == 'lidar' else 0
        self._last_diagnostics_ns: int | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        self._lock = threading.RLock()  # assembler and counters: intake thread vs worker
        self._publish = publish
        self.threaded = threaded
        self._mailbox: tuple[SyncedSet, int, int] | None = None
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._worker: threading.Thread | None = None
        if threaded:
            if publish is None:
                raise ValueError('FusionService(threaded=True) needs a publish callback for its outputs')
            self._worker = threading.Thread(target=self._work, name='mmfusion-worker', daemon=True)
            self._worker.start()

    # -- what it reads and writes ----------------------------------------------------------------------

    def subscriptions(self, with_ground_truth: bool = False) -> dict[str, str]:
        """topic -> message type of every input (sensor data, CameraInfo, TF)."""
        topics = {'/tf': 'tf2_msgs/msg/TFMessage', '/tf_static': 'tf2_msgs/msg/TFMessage'}
        for sensor in self.config.sensors.values():
            topics[sensor.topic] = sensor.type
            if sensor.info_topic:
                topics[sensor.info_topic] = 'sensor_msgs/msg/CameraInfo'
        if with_ground_truth:
            topics[GROUND_TRUTH_TOPIC] = DETECTIONS_TYPE
            topics[FAULTS_TOPIC] = DIAGNOSTICS_TYPE
        return topics

    def publications(self) -> dict[str, str]:
        """topic -> message type of every output."""
        types = {'objects': DETECTIONS_TYPE, 'disagreements': DIAGNOSTICS_TYPE, 'markers': MARKERS_TYPE,
                 'diagnostics': DIAGNOSTICS_TYPE, 'processing_time': FLOAT64_TYPE,
                 'pipeline_latency': FLOAT64_TYPE}
        return {self.topics[name]: msgtype for name, msgtype in types.items()}

    # -- input -------------------------------------------------------------------------------------------

    def push(self, topic: str, msgtype: str, raw: bytes | memoryview) -> list[OutputMessage]:
        """Take one serialized message; the outputs of the frames it completed (inline mode)."""
        now = self.clock()
        with self._lock:
            self.counters['messages'] += 1
            sensor = self._topic_sensor.get(topic)
            try:
                taken = self.assembler.take(topic, msgtype, bytes(raw))
            except MmfusionError as err:
                where = sensor or topic
                self.dropped[f'{where}: unreadable message'] += 1
                self.counters['unreadable'] += 1
                if sensor is not None:
                    self._sensors[sensor].unreadable += 1
                    self._sensors[sensor].last_missing = str(err).split('\n')[0]
                return self._diagnostics_due(now)
            if self.assembler.time_resets != self._tf_resets_seen:  # /tf went back: a looped recording
                self._tf_resets_seen = self.assembler.time_resets
                self.sync.reset()
                self._time_reset()
            if taken is not None:
                name, stamp = taken
                last = self._sensors[name].last_stamp_ns
                if last is not None and stamp < last - self._backwards_ns:  # time went back: a looped bag
                    self.assembler.reset()
                    self.sync.reset()
                    self._time_reset()
                    self.assembler.take(topic, msgtype, bytes(raw))  # the first message of the new timeline
                self._note_arrival(name, stamp, now)
                self._awaiting_tf += [(s, now) for s in self.sync.push(name, stamp, None)]
                self._after_sync()
            released = self._release(now)
        return self._run(released, now)

    def flush(self) -> list[OutputMessage]:
        """The end of the input (a recording): frames still waiting go out with what they have.

        Call it after advancing the clock past ``sync.timeout_ms``, so the synchronizer's last sets
        time out; frames waiting for /tf that will never come are released.
        """
        now = self.clock()
        with self._lock:
            self._awaiting_tf += [(s, now) for s in self.sync.poll()]
            self._after_sync()
            released = self._release(now, final=True)
        return self._run(released, now)

    def poll(self) -> list[OutputMessage]:
        """Frames whose timeout passed (sensors late or dead) and /diagnostics when due."""
        now = self.clock()
        with self._lock:
            self._awaiting_tf += [(s, now) for s in self.sync.poll()]
            self._after_sync()
            released = self._release(now)
        return self._run(released, now)

    def _release(self, now: int, final: bool = False) -> list[SyncedSet]:
        """The complete frames whose transforms have arrived (or will not: after the timeout).

        As tf2's message filter does: a lidar sweep is deskewed with the vehicle's poses over the
        sweep, and /tf for its last firings is published about when the sweep is, so a frame waits
        until /tf covers its stamp plus a trigger period, at most ``sync.timeout_ms``.
        """
        released = []
        newest = self.assembler.tf_newest_ns
        while self._awaiting_tf:
            synced, since = self._awaiting_tf[0]
            covered = newest is None or newest >= synced.stamp_ns + self._tf_horizon_ns
            if not covered and now - since <= self._timeout_ns and not final:
                break
            self._awaiting_tf.pop(0)
            self.counters['tf_timeouts'] += int(not covered)
            released.append(synced)
        return released

    def close(self) -> None:
        """Stop the worker (threaded mode) after the frame it is running."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def _note_arrival(self, name: str, stamp: int, now: int) -> None:
        stats = self._sensors[name]
        stats.received += 1
        if stats.last_stamp_ns is not None and stamp > stats.last_stamp_ns:
            interval = stamp - stats.last_stamp_ns
            stats.interval_ns = interval if stats.interval_ns is None else 0.8 * stats.interval_ns + 0.2 * interval
        stats.last_stamp_ns = stamp
        stats.last_arrival_ns = now

    def _after_sync(self) -> None:
        resets = self.sync.stats.resets
        if resets != self._resets_seen:  # the synchronizer saw time go back where the service did not
            self._resets_seen = resets
            self.assembler.reset()
            self._time_reset()

    def _time_reset(self) -> None:
        self._resets_seen = self.sync.stats.resets
        self.pipeline.reset()
        self.counters['frames_lost_to_reset'] += len(self._awaiting_tf)
        self._awaiting_tf.clear()
        for stats in self._sensors.values():
            stats.last_stamp_ns = None
            stats.interval_ns = None
        self.counters['time_resets'] += 1

    # -- frames --------------------------------------------------------------------------------------------

    def _run(self, sets: list[SyncedSet], now: int) -> list[OutputMessage]:
        if not sets:
            return self._diagnostics_due(now)
        ready_wall = time.perf_counter_ns()  # complete and its transforms in: latency from here is work
        if self.threaded:
            with self._wake:
                for synced in sets:
                    if self._mailbox is not None:
                        self.counters['skipped_frames'] += 1
                        self.dropped['frame skipped: a newer one was complete first'] += 1
                    self._mailbox = (synced, now, ready_wall)
                self._wake.notify()
            return []
        outputs = []
        for synced in sets:
            outputs += self._process(synced, now, ready_wall)
        return outputs

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._mailbox is None and not self._stopping:
                    self._wake.wait(timeout=0.5)
                if self._stopping:
                    return
                synced, ready_clock, ready_wall = self._mailbox  # type: ignore[misc]
                self._mailbox = None
            for message in self._process(synced, ready_clock, ready_wall):
                self._publish(message)  # type: ignore[misc]

    def _process(self, synced: SyncedSet, ready_clock: int, ready_wall: int) -> list[OutputMessage]:
        try:
            with self._lock:
                frame = self.assembler.assemble(synced.stamp_ns)
                self.assembler.prune(synced.stamp_ns)
                self.counters['timed_out_frames'] += int(synced.timed_out)
                for name, why in frame.missing.items():  # what the frame lacks, whoever noticed
                    if name in self._sensors:
                        self._sensors[name].missing_frames += 1
                        self._sensors[name].last_missing = synced.missing.get(name, why)
            result = self.pipeline.step(frame)
        except Exception as err:  # noqa: BLE001 - one frame that can not be run must not stop the node
            with self._lock:
                self.counters['failed_frames'] += 1
                self.dropped[f'frame failed: {type(err).__name__}'] += 1
                self.last_error = f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'
            return self._diagnostics_due(ready_clock)
        service_ms = (time.perf_counter_ns() - ready_wall) / 1e6  # complete -> outputs, wall time
        latency_ms = (ready_clock - synced.stamp_ns) / 1e6 + service_ms
        return self._outputs(frame, result, synced, latency_ms, service_ms)

    def _outputs(self, frame: Frame, result: FusionResult, synced: SyncedSet, latency_ms: float,
                 service_ms: float) -> list[OutputMessage]:
        with self._lock:
            self.counters['frames'] += 1
            self.counters['partial_frames'] += int(bool(frame.missing))
            self.counters['detections'] += len(result.detections)
            self.counters['flagged'] += result.flagged
            self._latencies.append(latency_ms)
            self.pipeline.timer.record('latency', max(0.0, latency_ms))
        detections = result.detections  # ids: the tracker's, stable over frames
        stamp, base = frame.stamp_ns, frame.frame_id
        now = self.clock()
        statuses = disagreement_statuses(result, detections, self.config.consistency)
        messages = [
            OutputMessage(self.topics['objects'], DETECTIONS_TYPE, encode_detections(detections), now),
            OutputMessage(self.topics['disagreements'], DIAGNOSTICS_TYPE, encode_diagnostics(stamp, statuses), now),
            OutputMessage(self.topics['markers'], MARKERS_TYPE,
                          encode_markers(stamp, base, box_markers(result, detections)), now),
            OutputMessage(self.topics['processing_time'], FLOAT64_TYPE,
                          encode_float64(result.timings_ms.get('total', 0.0)), now),
            OutputMessage(self.topics['pipeline_latency'], FLOAT64_TYPE, encode_float64(latency_ms), now),
        ]
        self.last_result = (result, detections, synced, latency_ms)
        with self._lock:
            self._health = dict(result.health)
            self._calibration = dict(result.calibration)
            for name, state in result.sensor_states.items():
                self.health_seen[name][state] += 1
        if self.on_result is not None:
            self.on_result(result, detections, latency_ms, service_ms)
        return messages + self._diagnostics_due(now)

    # Called with (result, detections with ids, latency ms, ms from complete to outputs): replay's hook
    on_result: Callable[[FusionResult, Any, float, float], None] | None = None
    last_error: str = ''

    # -- diagnostics -----------------------------------------------------------------------------------

    def _diagnostics_due(self, now: int) -> list[OutputMessage]:
        period = round(self.config.outputs.diagnostics_period_s * NS)
        with self._lock:
            if self._last_diagnostics_ns is not None and 0 <= now - self._last_diagnostics_ns < period:
                return []
            self._last_diagnostics_ns = now
            statuses = self.diagnostic_statuses(now)
        return [OutputMessage(self.topics['diagnostics'], DIAGNOSTICS_TYPE, encode_diagnostics(now, statuses), now)]

    def diagnostic_statuses(self, now: int | None = None) -> list[DiagnosticStatus]:
        """Per sensor (rate, age, sync, drops), the synchronizer, and the pipeline (timing, drops)."""
        now = self.clock() if now is None else now
        statuses = []
        with self._lock:
            sync_stats = self.sync.stats
            for name, sensor in self.config.sensors.items():
                stats = self._sensors[name]
                period_ns = NS / sensor.rate_hz
                values: list[tuple[str, Any]] = [('modality', sensor.modality), ('topic', sensor.topic),
                                                 ('expected_rate_hz', f'{sensor.rate_hz:.1f}'),
                                                 ('received', stats.received), ('unreadable', stats.unreadable)]
                rate = NS / stats.interval_ns if stats.interval_ns else 0.0
                values.append(('rate_hz', f'{rate:.2f}'))
                if stats.last_stamp_ns is None:
                    level, message = DiagnosticStatus.ERROR, 'no message yet'
                else:
                    age = now - stats.last_stamp_ns
                    values.append(('age_ms', f'{age / 1e6:.1f}'))
                    if age > STALE_PERIODS * period_ns:
                        level, message = DiagnosticStatus.ERROR, f'stale: silent for {age / 1e9:.2f} s'
                    elif rate and rate < 0.5 * sensor.rate_hz:
                        level, message = DiagnosticStatus.WARN, f'rate {rate:.1f} Hz, expected {sensor.rate_hz:.1f}'
                    elif stats.unreadable:
                        level, message = DiagnosticStatus.WARN, f'{stats.unreadable} unreadable messages'
                    else:
                        level, message = DiagnosticStatus.OK, 'ok'
                per_input = sync_stats.inputs.get(name) if hasattr(sync_stats, 'inputs') else None
                if per_input is not None:
                    values += [(f'sync_{key}', value) for key, value in _counter_items(per_input)]
                values += [('frames_missing', stats.missing_frames), ('last_missing_reason', stats.last_missing)]
                statuses.append(DiagnosticStatus(level, f'mmfusion: sensor {name}', message, name, tuple(values)))
            sync_values = [(key, value) for key, value in _counter_items(sync_stats) if key != 'inputs']
            statuses.append(DiagnosticStatus(DiagnosticStatus.WARN if self.counters['time_resets'] else DiagnosticStatus.OK,
                                             'mmfusion: sync', 'ok' if not self.counters['time_resets'] else
                                             f'{self.counters["time_resets"]} time resets', 'sync', tuple(sync_values)))
            summary = self.pipeline.timer.summary()
            pipeline_values: list[tuple[str, Any]] = [(key, self.counters[key]) for key in
                                                      ('frames', 'partial_frames', 'timed_out_frames', 'tf_timeouts',
                                                       'skipped_frames', 'failed_frames',
                                                       'unreadable', 'detections', 'flagged')]
            for stage, figures in summary.items():
                pipeline_values += [(f'{stage}_p50_ms', f'{figures["p50"]:.2f}'),
                                    (f'{stage}_p99_ms', f'{figures["p99"]:.2f}')]
            level = DiagnosticStatus.WARN if self.counters['failed_frames'] or self.counters['unreadable'] \
                else DiagnosticStatus.OK
            statuses.append(DiagnosticStatus(level, 'mmfusion: pipeline', self.last_error or 'ok', 'pipeline',
                                             tuple(pipeline_values)))
            statuses += [estimate.status() for estimate in self._health.values()]
            statuses += [estimate.status() for estimate in self._calibration.values()]
        return statuses

    # -- the run so far ------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts, latency and stage timings of the run so far (``summary.json`` of a replay)."""
        with self._lock:
            latencies = np.array(self._latencies, float)
            stages = {stage: {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
                      for stage, figures in self.pipeline.timer.summary().items() if stage != 'latency'}
            sync_stats = self.sync.stats
            return {
                'frames': self.counters['frames'],
                'partial_frames': self.counters['partial_frames'],  # frames without some sensor
                'timed_out_frames': self.counters['timed_out_frames'],  # went out after sync.timeout_ms
                'tf_timeouts': self.counters['tf_timeouts'],  # went out without /tf covering them
                'detections': self.counters['detections'],
                'flagged': self.counters['flagged'],
                'latency_ms': {'p50': round(float(np.percentile(latencies, 50)), 3) if len(latencies) else None,
                               'p99': round(float(np.percentile(latencies, 99)), 3) if len(latencies) else None,
                               'max': round(float(latencies.max()), 3) if len(latencies) else None},
                'stages_ms': stages,
                'dropped': {
                    'total': int(sum(self.dropped.values())),
                    'by_reason': dict(sorted(self.dropped.items())),
                    'sync': {key: value for key, value in _counter_items(sync_stats) if key != 'inputs'},
                    'frame_assembly': dict(sorted(self.assembler.stats.items())),
                },
                'sensors': {name: {'received': s.received, 'unreadable': s.unreadable,
                                   'frames_missing': s.missing_frames, 'last_missing_reason': s.last_missing,
                                   'health_frames': dict(self.health_seen.get(name, {})),
                                   'health_now': self._health[name].state if name in self._health else None,
                                   'calibration_now': (self._calibration[name].state if name in self._calibration
                                                       else None),
                                   'conditions_now': list(self._health[name].conditions) if name in self._health
                                   else []}
                            for name, s in self._sensors.items()},
                'messages': self.counters['messages'],
                'time_resets': self.counters['time_resets'],
            }


def _counter_items(stats: Any) -> list[tuple[str, Any]]:
    """The scalar counters of a stats record (a dataclass or a mapping), in a stable order."""
    if isinstance(stats, Mapping):
        items = stats.items()
    elif hasattr(stats, '__dataclass_fields__'):
        items = ((name, getattr(stats, name)) for name in stats.__dataclass_fields__)
    else:
        items = vars(stats).items()
    return [(key, value) for key, value in items if isinstance(value, (int, float, str))]
