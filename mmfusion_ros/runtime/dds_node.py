"""``mmfusion dds-node`` and ``mmfusion dds-play``: ``FusionService`` and recordings over Cyclone DDS.

The node is the service behind a ``DdsBridge`` (ROS 2 wire conventions, see ``dds.py``): a reader
per input topic (``FusionService.subscriptions``), a writer per output (``publications``), and one
loop that takes from every reader and pushes into the service. A ROS 2 machine running
``rmw_cyclonedds_cpp`` on the same domain (and network) sees the outputs (``ros2 topic echo
/mmfusion/output/objects``), and its sensor drivers feed the node; ``dds-play`` publishes a recording
the same way, so a bag can feed the node without ROS.

Quality of service (what a ROS 2 publisher must offer for the node to hear it):

============== ============ ======================== ==============================================
topic          reliability  history                  why
============== ============ ======================== ==============================================
sensor data,   best effort  keep last                drivers publish sensor data best effort (ROS
CameraInfo                  ``sync.queue_size``      "sensor data" QoS); a best-effort reader
                            (inline: INLINE_DEPTH)   matches reliable writers too
/tf            reliable     keep last TF_DEPTH       as tf2's listener (its broadcasters are
                                                     reliable); deep, because a stalled loop (the
                                                     first frame compiling, a busy machine) that
                                                     loses a sensor message costs a frame, one
                                                     that loses transforms costs every frame near
/tf_static     reliable     keep last TF_DEPTH       tf2 uses transient local here; ``dds.py``
                                                     offers volatile only (see limits)
outputs        reliable     keep last 10             ROS 2's default profile
                            (inline: INLINE_DEPTH)
============== ============ ======================== ==============================================

The node's loop, one pass at a time:

1. the service's clock is set to the wall time (``time.time_ns()``, ROS's system time) at the start
   of the pass: every message of a pass counts as arrived then, so latency is sensor stamp to
   publication and ``sync.timeout_ms`` runs on the same clock as the stamps of live sensors;
2. ``/tf_static`` and ``/tf`` are taken first, then every other input;
3. the messages go to the service in the order a recording logged at header stamps reads
   (``BagReader``: stamp, then topic name), see ``StampOrderedIntake``: a sensor message waits
   (at most one pass once ``/tf`` is quiet) until ``/tf`` has caught up with its stamp, so the
   transforms a frame sees do not depend on which reader the pass happened to read first;
4. outputs go to their writers; ``service.poll()`` runs at least every ``POLL_PERIOD_S``.

Two ways to run frames, as ``FusionService`` has: threaded (the default, live) runs the newest
complete frame on the service's worker and counts the ones it skips; ``inline=True`` runs every
frame in the loop, nothing skipped (what a comparison with ``replay`` needs). Inline, the readers
keep ``INLINE_DEPTH`` samples so that nothing is lost while a frame runs, and at the end frames
still waiting (for late sensors or for /tf) go out, as ``replay`` does at the end of a recording
(``FusionService.flush`` after the sync timeout).

The node stops on SIGINT or SIGTERM (when run in the main thread), on ``stop`` or after
``duration_s``, and returns the service's summary plus what DDS saw (``summary['dds']``).

Known limits:

- ``/tf_static`` is read volatile: static transforms published before the node's reader matched
  (robot_state_publisher at startup) are not received; start the node first or republish them.
- Inline, ``sync.timeout_ms`` also counts the time spent running earlier frames of a backlog: when
  the node cannot keep up, raise it (or play slower) so that frames do not time out spuriously.
- Best-effort sensor data lost on the way (a full socket buffer) is not counted: DDS does not say.
- The order of step 3 equals a recording's log order when messages are logged at their header
  stamps (the simulator's bags); it rests on each writer's samples arriving in the order written.
"""

from __future__ import annotations

import collections
import logging
import math
import signal
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..config import FusionConfig
from ..errors import ConfigError, DecodeError, MmfusionError, TransportError
from .dds import LOOPBACK_CONFIG, DdsBridge, RawReader, RawWriter

if TYPE_CHECKING:  # the service pulls in torch, which dds-play does not need
    from ..pipeline import FusionPipeline
    from .service import OutputMessage

__all__ = [
    'INLINE_DEPTH',
    'Received',
    'ReaderQos',
    'StampOrderedIntake',
    'play_bag_over_dds',
    'reader_qos',
    'run_dds_node',
]

log = logging.getLogger(__name__)

NS = 1_000_000_000
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
TF_DEPTH = 1000  # /tf and /tf_static: seconds of transforms at hundreds per second (small messages)
OUTPUT_DEPTH = 10  # ROS 2's default profile
INLINE_DEPTH = 1000  # inline: samples kept per reader and writer while frames run in the loop
PLAY_DEPTH = 100  # dds-play: samples a reliable writer keeps for a slow reader
POLL_PERIOD_S = 0.05  # service.poll() at least this often (timeouts, /diagnostics)
IDLE_WAIT_S = 0.01  # a pass that took nothing sleeps this long
# Our writer matching a reader means we know of the reader; the reader learning of our writer is a
# separate announcement, so dds-play waits this long before its first message.
DISCOVERY_SETTLE_S = 0.5
REJECTION_LOG_EVERY = 100  # log a reader's first rejected sample and every this many after


# -- quality of service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReaderQos:
    reliable: bool
    depth: int


def reader_qos(topic: str, *, inline: bool, queue_size: int) -> ReaderQos:
    """The node's reader QoS for an input topic (module docstring, table)."""
    if topic in (TF_TOPIC, TF_STATIC_TOPIC):
        return ReaderQos(reliable=True, depth=TF_DEPTH)
    return ReaderQos(reliable=False, depth=INLINE_DEPTH if inline else queue_size)


# -- intake order ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message taken from DDS: its topic, type, CDR bytes and stamp (None: unreadable)."""

    topic: str
    msgtype: str
    raw: bytes
    stamp_ns: int | None  # header stamp; for /tf the newest transform's


def _header_stamp_ns(raw: bytes, _topic: str = '') -> int | None:
    """The ``std_msgs/Header`` stamp every sensor message and CameraInfo starts with; None if too short."""
    if len(raw) < 12:
        return None
    order = '<' if raw[1] & 1 else '>'  # CDR_LE / PL_CDR_LE have the low bit set
    sec, nanosec = struct.unpack_from(f'{order}iI', raw, 4)
    return sec * NS + nanosec


def _tf_stamp_ns(raw: bytes, topic: str) -> int | None:
    from ..msgs.decode import decode_tf

    try:
        transforms = decode_tf(raw, static=topic == TF_STATIC_TOPIC, topic=topic)
    except DecodeError:
        return None  # the service counts it
    return max((t.stamp_ns for t in transforms), default=None)


class StampOrderedIntake:
    """Puts the messages of each pass in the order ``BagReader`` reads a recording logged at stamps.

    DDS keeps each writer's order but a pass reads its readers one after another, so across topics
    the order is lost; a frame, though, sees the transforms pushed before the message that completed
    it. ``order`` restores a recording's order from the stamps:

    - ``/tf_static`` goes first, as it comes;
    - a sensor or CameraInfo message stamped after the newest ``/tf`` seen is held back: transforms
      written before it may still be on the way (``/tf`` is taken before the others, so anything
      written before a ``/tf`` taken in this pass was taken in this pass). It goes out once ``/tf``
      reaches its stamp, or in the first later pass that finds ``/tf`` quiet (no transform taken:
      then nothing written before it is missing), so without ``/tf`` at all it waits one pass;
    - the rest goes out sorted by (stamp, topic name); messages without a readable stamp go at once.

    A ``/tf`` stamp more than ``reset_on_backwards_ns`` behind the newest starts a new timeline (a
    looped recording), as the synchronizer does.
    """

    def __init__(self, reset_on_backwards_ns: int) -> None:
        self.reset_on_backwards_ns = int(reset_on_backwards_ns)
        self.newest_tf_ns: int | None = None
        self._held: list[Received] = []
        self.held_max = 0  # most messages held back at once

    def order(self, static: Sequence[Received], tf: Sequence[Received], data: Sequence[Received]) -> list[Received]:
        """This pass's messages (and those held from earlier passes that may go now), in order."""
        for stamp in (m.stamp_ns for m in tf if m.stamp_ns is not None):
            newest = self.newest_tf_ns
            if newest is None or stamp > newest or newest - stamp > self.reset_on_backwards_ns:
                self.newest_tf_ns = stamp
        newest = self.newest_tf_ns

        def caught_up(message: Received) -> bool:
            return message.stamp_ns is None or (newest is not None and message.stamp_ns <= newest)

        quiet = not tf
        earlier, self._held = self._held, []
        ready = [m for m in earlier if quiet or caught_up(m)] + [m for m in data if caught_up(m)]
        self._held = [m for m in earlier if not (quiet or caught_up(m))] + [m for m in data if not caught_up(m)]
        self.held_max = max(self.held_max, len(self._held))
        going = [*ready, *tf]
        unstamped = [m for m in going if m.stamp_ns is None]
        stamped = sorted((m for m in going if m.stamp_ns is not None), key=lambda m: (m.stamp_ns, m.topic))
        return [*static, *unstamped, *stamped]

    def drain(self) -> list[Received]:
        """Everything still held (the end of input), in stamp order."""
        held, self._held = self._held, []
        return sorted(held, key=lambda m: (m.stamp_ns, m.topic))

    @property
    def held(self) -> int:
        return len(self._held)


# -- the node --------------------------------------------------------------------------------------


def _check_domain(domain_id: int) -> None:
    """As ``DdsBridge`` checks it, but before anything slow (the network, the recording) is loaded."""
    if isinstance(domain_id, bool) or not isinstance(domain_id, int) or not 0 <= domain_id <= 232:
        raise ConfigError(f'DDS domain id {domain_id!r} is not an integer in 0..232')


class _Stopper:
    """``stop``, SIGINT/SIGTERM (main thread only) and ``duration_s`` as one flag, and which came first."""

    def __init__(self, stop: threading.Event | None, duration_s: float | None) -> None:
        self.event = stop if stop is not None else threading.Event()
        self.duration_s = duration_s
        self.deadline: float | None = None
        self.reason = ''
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Start counting ``duration_s`` (from ready, not from loading) and catch the signals."""
        if self.duration_s is not None:
            self.deadline = time.monotonic() + self.duration_s
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.reason = self.reason or signal.Signals(signum).name
        self.event.set()

    def stopped(self) -> bool:
        if self.event.is_set():
            self.reason = self.reason or 'stop requested'
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = 'duration'
            return True
        return False

    def wait(self, seconds: float) -> None:
        self.event.wait(seconds)


class _PassClock:
    """The service's clock: wall time (ROS's system time) at the start of the current pass."""

    def __init__(self) -> None:
        self.now_ns = time.time_ns()

    def __call__(self) -> int:
        return self.now_ns

    def start_pass(self) -> None:
        self.now_ns = time.time_ns()

    def advance(self, ns: int) -> None:
        self.now_ns += ns


class _Outputs:
    """The node's writers (added once the service says what it publishes), and what went out."""

    def __init__(self) -> None:
        self.writers: dict[str, RawWriter] = {}
        self.published: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.last_error = ''
        self._lock = threading.Lock()  # the worker and the loop both publish

    def publish(self, message: OutputMessage) -> None:
        try:
            writer = self.writers.get(message.topic)
            if writer is None:
                raise TransportError(f'{message.topic}: no writer for this output')
            writer.write_raw(message.raw)
        except TransportError as err:
            with self._lock:
                self.failed[message.topic] += 1
                self.last_error = str(err)
            return
        with self._lock:
            self.published[message.topic] += 1

    def publish_all(self, messages: Sequence[OutputMessage]) -> None:
        for message in messages:
            self.publish(message)


def run_dds_node(config: FusionConfig, *, domain_id: int = 0, weights: str | None = None,
                 duration_s: float | None = None, inline: bool = False, stop: threading.Event | None = None,
                 ready: Callable[[], None] | None = None, pipeline: FusionPipeline | None = None,
                 dds_config: str = LOOPBACK_CONFIG) -> dict[str, Any]:
    """Run ``FusionService`` on DDS until stopped; its summary plus DDS counters (module docstring).

    ``ready`` is called once every reader and writer exists. ``pipeline`` (built from ``config``
    and ``weights`` when None) lets a caller share one already loaded. ``dds_config`` is the Cyclone
    XML of the domain; the default keeps every packet on the loopback interface.
    """
    from .service import FusionService

    _check_domain(domain_id)
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f'duration: must be a positive number of seconds, got {duration_s!r}')
    started = time.perf_counter()
    clock = _PassClock()
    outputs = _Outputs()
    stopper = _Stopper(stop, duration_s)
    with DdsBridge(domain_id, dds_config) as bridge:
        service = FusionService(config, pipeline, weights=weights, clock=clock, threaded=not inline,
                                publish=None if inline else outputs.publish)
        try:
            node = _Node(config, service, clock, bridge, outputs, inline)
            node.run(stopper, ready)
        finally:
            service.close()  # the worker's last frame still goes out, on open writers
    summary = service.summary()
    summary['dds'] = {'domain_id': domain_id, 'mode': 'inline' if inline else 'threaded',
                      'stopped_by': stopper.reason, 'wall_s': round(time.perf_counter() - started, 3),
                      **node.counters()}
    return summary


class _Node:
    """The readers, the writers, and the loop between them and the service."""

    def __init__(self, config: FusionConfig, service: Any, clock: _PassClock, bridge: DdsBridge,
                 outputs: _Outputs, inline: bool) -> None:
        self.config = config
        self.service = service
        self.clock = clock
        self.outputs = outputs
        self.inline = inline
        depth = INLINE_DEPTH if inline else OUTPUT_DEPTH
        outputs.writers = {topic: bridge.writer(topic, msgtype, reliable=True, depth=depth)
                           for topic, msgtype in service.publications().items()}
        subscriptions = service.subscriptions()
        self.qos = {topic: reader_qos(topic, inline=inline, queue_size=config.sync.queue_size)
                    for topic in subscriptions}
        self.readers: dict[str, RawReader] = {
            topic: bridge.reader(topic, msgtype, reliable=self.qos[topic].reliable, depth=self.qos[topic].depth)
            for topic, msgtype in subscriptions.items()}
        self.intake = StampOrderedIntake(round(config.sync.reset_on_backwards_ms * 1e6))
        self.received: collections.Counter[str] = collections.Counter()
        self.passes = 0
        self.push_errors = 0
        self.last_push_error = ''
        self._next_rejection_log: dict[str, int] = {}
        self._static = [t for t in self.readers if t == TF_STATIC_TOPIC]
        self._tf = [t for t in self.readers if t == TF_TOPIC]
        self._data = [t for t in self.readers if t not in (TF_TOPIC, TF_STATIC_TOPIC)]

    def run(self, stopper: _Stopper, ready: Callable[[], None] | None) -> None:
        stopper.install()
        try:
            if ready is not None:
                ready()
            last_poll = time.monotonic()
            while not stopper.stopped():
                took = self._pass()
                if time.monotonic() - last_poll >= POLL_PERIOD_S:
                    last_poll = time.monotonic()
                    self.outputs.publish_all(self.service.poll())
                if not took:
                    stopper.wait(IDLE_WAIT_S)
            # The end of input: what is still in the readers and what is held back goes in, in order.
            self._pass()
            self._push(self.intake.drain())
            if self.inline:  # frames still waiting (late sensors, /tf) go out as replay's last ones do
                self.clock.advance(round(self.config.sync.timeout_ms * 1e6) + 1)
                self.outputs.publish_all(self.service.flush())
            else:  # live: the worker stops after its frame; what still waits is not run
                self.outputs.publish_all(self.service.poll())
        finally:
            stopper.restore()

    def _pass(self) -> int:
        """Take what every reader has and push it in order; how many messages were taken."""
        self.clock.start_pass()
        self.passes += 1
        static, tf = self._take(self._static), self._take(self._tf)  # /tf before the rest: see the intake
        data = self._take(self._data)
        self._push(self.intake.order(static, tf, data))
        return len(static) + len(tf) + len(data)

    def _take(self, topics: Sequence[str]) -> list[Received]:
        taken = []
        for topic in topics:
            reader = self.readers[topic]
            stamp_of = _tf_stamp_ns if topic in (TF_TOPIC, TF_STATIC_TOPIC) else _header_stamp_ns
            messages = reader.take_raw()
            self.received[topic] += len(messages)
            taken += [Received(topic, reader.msgtype, raw, stamp_of(raw, topic)) for raw in messages]
            if reader.rejected >= self._next_rejection_log.get(topic, 1):
                self._next_rejection_log[topic] = reader.rejected + REJECTION_LOG_EVERY
                log.warning('%s (%d rejected so far)', reader.last_error, reader.rejected)
        return taken

    def _push(self, messages: Sequence[Received]) -> None:
        for message in messages:
            try:
                results = self.service.push(message.topic, message.msgtype, message.raw)
            except MmfusionError as err:  # the service counts what it can read; the rest is counted here
                self.push_errors += 1
                self.last_push_error = str(err).split('\n')[0]
                continue
            self.outputs.publish_all(results)

    def counters(self) -> dict[str, Any]:
        return {
            'passes': self.passes,
            'received': {topic: self.received[topic] for topic in self.readers},
            'rejected': {topic: reader.rejected for topic, reader in self.readers.items() if reader.rejected},
            'last_rejected': next((r.last_error for r in self.readers.values() if r.last_error), ''),
            'push_errors': self.push_errors,
            'last_push_error': self.last_push_error,
            'held_back_max': self.intake.held_max,
            'published': {topic: self.outputs.published[topic] for topic in self.outputs.writers},
            'publish_failed': dict(self.outputs.failed),
            'last_publish_error': self.outputs.last_error,
            'reader_qos': {topic: {'reliable': q.reliable, 'depth': q.depth} for topic, q in self.qos.items()},
        }


# -- playing a recording ---------------------------------------------------------------------------


def play_bag_over_dds(paths: str | Path | Sequence[str | Path], *, domain_id: int = 0, rate: float = 1.0,
                      wait_for_subscribers_s: float = 10.0, topics: Sequence[str] | None = None,
                      dds_config: str = LOOPBACK_CONFIG) -> dict[str, Any]:
    """Publish a recording's messages over DDS in log order at ``rate`` x recorded speed; the counts.

    ``rate`` 0 publishes as fast as possible. Before the first message it waits up to
    ``wait_for_subscribers_s`` (in all) for every writer to match a reader, then
    ``DISCOVERY_SETTLE_S``; topics nobody subscribed to are still published, and listed in
    ``no_subscriber``. ``topics`` limits playing to those (all of the recording's when None).
    Writers are reliable, keep last ``PLAY_DEPTH``. A message DDS refuses (bytes that are not its
    type) is counted in ``failed`` and playing goes on.
    """
    from ..io.bag import BagReader

    _check_domain(domain_id)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and rate >= 0):
        raise ConfigError(f'rate: must be a finite number >= 0 (0: as fast as possible), got {rate!r}')
    if not (math.isfinite(wait_for_subscribers_s) and wait_for_subscribers_s >= 0):
        raise ConfigError(f'wait for subscribers: must be >= 0 seconds, got {wait_for_subscribers_s!r}')
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise ConfigError(f'{path}: no such recording')
    with BagReader(paths) as reader:
        recorded = {info.name: info.msgtype for info in reader.topics}
        if topics is not None:
            unknown = sorted(set(topics) - set(recorded))
            if unknown:
                raise ConfigError(f'topics: {", ".join(unknown)} not in the recording; it holds '
                                  f'{", ".join(sorted(recorded))}')
            recorded = {name: msgtype for name, msgtype in recorded.items() if name in set(topics)}
        published: collections.Counter[str] = collections.Counter()
        failed: collections.Counter[str] = collections.Counter()
        last_error = ''
        with DdsBridge(domain_id, dds_config) as bridge:
            writers: dict[str, RawWriter] = {}
            unsupported: dict[str, str] = {}
            for name, msgtype in recorded.items():
                try:
                    writers[name] = bridge.writer(name, msgtype, reliable=True, depth=PLAY_DEPTH)
                except TransportError as err:  # a type our typestore cannot carry, a name DDS cannot
                    unsupported[name] = str(err)
            deadline = time.monotonic() + wait_for_subscribers_s
            no_subscriber = [name for name, writer in writers.items()
                             if not writer.wait_for_subscribers(1, max(0.0, deadline - time.monotonic()))]
            if len(no_subscriber) < len(writers):
                time.sleep(DISCOVERY_SETTLE_S)
            started = time.monotonic()
            for message in reader.messages(list(writers) if topics is not None or unsupported else None):
                writer = writers.get(message.topic)
                if writer is None:
                    continue
                if rate > 0:
                    wait = (message.stamp_ns - reader.start_ns) / NS / rate - (time.monotonic() - started)
                    if wait > 0:
                        time.sleep(wait)
                try:
                    writer.write_raw(message.raw)
                except TransportError as err:
                    failed[message.topic] += 1
                    last_error = str(err)
                    continue
                published[message.topic] += 1
            wall_s = time.monotonic() - started
        recording_s = reader.duration_s
    return {
        'recordings': [str(p) for p in paths],
        'domain_id': domain_id,
        'rate': rate,
        'messages': sum(published.values()),
        'published': dict(sorted(published.items())),
        'failed': dict(sorted(failed.items())),
        'last_error': last_error,
        'no_subscriber': sorted(no_subscriber),
        'unsupported': unsupported,
        'recording_s': round(recording_s, 3),
        'wall_s': round(wall_s, 3),
    }
