"""Grouping live sensor messages into frames: an online approximate-time synchronizer.

A node hands every message it receives to ``push(input, stamp_ns, message)`` and publishes what comes
back; a timer calls ``poll()`` so that a set waiting on a sensor that went quiet still goes out. The
core knows nothing of ROS: inputs are names, messages are opaque, stamps are integer nanoseconds,
and time for timeouts comes from an injected ``clock`` (sim time and bag replay work the same way).

Guarantees, in both modes:

- every stamp is first corrected by its input's ``offset_ns`` (a known constant clock offset);
- one inclusive slop: members lie within ``slop_ns`` of the set's stamp (trigger mode: of the
  trigger; free mode: of each other, ``max - min <= slop_ns``);
- each message is used at most once;
- set stamps never decrease (until time goes backwards and the synchronizer resets, see below);
- queues are bounded (``queue_size`` per input; overflow drops the input's oldest message), and a
  push costs O(inputs x queue): nothing rescans history;
- everything received is accounted for: ``received == used + dropped_* + queued`` per input.

After a set with stamp ``S`` goes out, nothing older than ``S`` is ever used: queued messages older
than ``S`` (or older than their input's member) are dropped as *unmatched*, and a message that arrives
later with a stamp older than ``S`` is dropped as *stale*. That is what keeps the output monotonic.

**Trigger mode** (``trigger='lidar_top'``, Autoware's collector style): every message of the trigger
input starts a set stamped with it; every other input contributes its queued message nearest to the
trigger stamp within slop. Pending triggers go out in stamp order. A set goes out as soon as no
*required* input can still improve it, i.e. each required input has either a candidate and a message
stamped at or after the trigger (with per-input stamp order nothing nearer can come), or no candidate
and a message past ``trigger + slop`` (nothing can match any more). Otherwise it goes out when
``timeout_ns`` has passed on the clock since the trigger arrived, partial, the unmatched inputs named
in ``missing``. With ``timeout_ns=None`` a set waits as long as its trigger stays queued.

**Free mode** (``trigger=None``): ROS message_filters' ApproximateTime policy, the basic algorithm
without inter-message bounds (http://wiki.ros.org/message_filters/ApproximateTime), plus our slop and
timeout. A set holds one message of every required input and has the smallest time span among the
candidates around its *pivot* (the latest of the queues' oldest messages, which the set always
contains and which stamps it); it goes out only once no later message could give a better set. As in
ROS, an oldest message that cannot be within slop of the pivot's input is dropped, and so is one whose
best partner on the pivot's input may have been lost to overflow. When the oldest candidate (the
required inputs' earliest queued stamp) has waited ``timeout_ns`` since it arrived, the best set among
the required inputs with a message within slop of it goes out, partial if one is missing. Without a
timeout a dead input stalls free mode, as in ROS (its queues overflow, counted).

Deterministic tie-breaks (documented so replays reproduce exactly):

- nearest message at equal distance: the earlier stamp, then the earlier arrival;
- within one input, equal stamps: arrival order;
- free mode: the pivot is the latest oldest message, ties to the input declared *later*; the sweep
  advances the earliest front, ties to the input declared *earlier*; of two candidate sets with equal
  span the earlier one wins, as in ROS. ROS's age penalty (0.1 in ROS 2) is not applied: the span is
  minimised exactly.

Optional inputs (``required=False``) never hold a set back: when the required inputs allow the set
to go out, each optional input contributes its best message within slop *queued at that moment*
(free mode: within slop of every required member too), even if a nearer one might still come. An
optional input can not be the trigger; free mode needs at least one required input.

Time going backwards (a looped bag, a restarted simulator): a message more than
``reset_on_backwards_ns`` older than the newest stamp seen on the *same* input clears every queue
(counted ``dropped_reset``), the watermark and the per-input history, counts a reset, and is then
taken as the first message of the new timeline. Within that threshold an older message is inserted in
stamp order (unless it is stale). With the default ``0`` any step back on an input is a new timeline.

Not thread-safe: a node calls it from one callback group.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from types import MappingProxyType
from typing import Any

from mmfusion_ros.errors import SyncError

__all__ = [
    'MISSING_NO_MATCH',
    'MISSING_NO_MESSAGE_YET',
    'MISSING_NOT_WAITED',
    'MISSING_TIMEOUT',
    'ApproximateTimeSynchronizer',
    'InputStats',
    'SyncInput',
    'SyncStats',
    'SyncedSet',
]

# Why an input is absent from a set (``SyncedSet.missing``):
MISSING_NO_MESSAGE_YET = 'no message yet'  # nothing received on it since start or the last reset
MISSING_NO_MATCH = 'no message within slop'  # it has moved on past the set: nothing can match any more
MISSING_TIMEOUT = 'timeout: no message within slop'  # the set timed out waiting for it
MISSING_NOT_WAITED = 'optional: no message within slop yet'  # optional, and the set did not wait


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SyncInput:
    """One input stream: its name, clock correction, whether sets need it, and its queue bound."""

    name: str
    offset_ns: int = 0  # added to every stamp of this input before matching
    required: bool = True  # a set is complete only with it; optional inputs never hold a set back
    queue_size: int = 16  # unused messages kept; overflow drops the oldest (counted)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SyncError(f'sync input: name must be a non-empty string, got {self.name!r}')
        if not _is_int(self.offset_ns):
            raise SyncError(f'sync input {self.name!r}: offset_ns must be an integer (ns), got {self.offset_ns!r}')
        if not isinstance(self.required, bool):
            raise SyncError(f'sync input {self.name!r}: required must be a bool, got {self.required!r}')
        if not _is_int(self.queue_size) or self.queue_size < 1:
            raise SyncError(f'sync input {self.name!r}: queue_size must be an integer >= 1, got {self.queue_size!r}')


@dataclass(frozen=True)
class SyncedSet:
    """One synchronized frame: at most one message per input, and why the others are absent."""

    stamp_ns: int  # the trigger's corrected stamp (trigger mode) or the pivot's (free mode)
    members: Mapping[str, tuple[int, Any]]  # name -> (corrected stamp_ns, message), declaration order
    missing: Mapping[str, str] = field(default_factory=dict)  # name -> reason, for every other input
    optional: frozenset[str] = frozenset()  # the synchronizer's optional inputs (not counted by partial)
    timed_out: bool = False  # went out because the timeout expired, not because it was final

    def __post_init__(self) -> None:
        object.__setattr__(self, 'members', MappingProxyType(dict(self.members)))
        object.__setattr__(self, 'missing', MappingProxyType(dict(self.missing)))
        object.__setattr__(self, 'optional', frozenset(self.optional))

    @property
    def partial(self) -> bool:
        """A required input is missing (an absent optional input leaves the set complete)."""
        return any(name not in self.optional for name in self.missing)

    def stamps(self) -> dict[str, int]:
        """Corrected stamp of each member."""
        return {name: stamp for name, (stamp, _) in self.members.items()}


@dataclass(frozen=True)
class InputStats:
    """What happened to the messages of one input, since construction (resets do not clear it)."""

    received: int = 0
    used: int = 0  # went out in a set
    dropped_overflow: int = 0  # pushed out of a full queue (oldest first)
    dropped_stale: int = 0  # arrived older than an already emitted set: can never be used
    dropped_unmatched: int = 0  # pruned without being used (lost to a nearer message, out of slop)
    dropped_reset: int = 0  # queued when time went backwards or ``reset()`` was called
    queued: int = 0  # still waiting now

    @property
    def dropped(self) -> int:
        return self.dropped_overflow + self.dropped_stale + self.dropped_unmatched + self.dropped_reset


@dataclass(frozen=True)
class SyncStats:
    """A snapshot of the counters: per input, and sets emitted, partial sets, resets."""

    inputs: Mapping[str, InputStats]
    sets: int = 0
    partial_sets: int = 0
    resets: int = 0

    def __getitem__(self, name: str) -> InputStats:
        return self.inputs[name]


class _Message:
    """A queued message. Compared by identity: two messages may share a stamp and an item."""

    __slots__ = ('stamp_ns', 'seq', 'arrived_ns', 'item')

    def __init__(self, stamp_ns: int, seq: int, arrived_ns: int, item: Any) -> None:
        self.stamp_ns = stamp_ns  # corrected
        self.seq = seq  # arrival order over all inputs
        self.arrived_ns = arrived_ns  # on the synchronizer's clock
        self.item = item


def _order(message: _Message) -> tuple[int, int]:
    return message.stamp_ns, message.seq


def _stamp(message: _Message) -> int:
    return message.stamp_ns


@dataclass
class _Stream:
    """An input's queue (unused messages, sorted by stamp then arrival) and its counters."""

    spec: SyncInput
    index: int  # declaration order: the tie-break between inputs
    queue: list[_Message] = field(default_factory=list)
    newest_ns: int | None = None  # newest corrected stamp seen since the last reset
    lost_partner: bool = False  # dropped to overflow since it was last not the pivot (free mode)
    received: int = 0
    used: int = 0
    dropped_overflow: int = 0
    dropped_stale: int = 0
    dropped_unmatched: int = 0
    dropped_reset: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def head_key(self) -> tuple[int, int]:
        return self.queue[0].stamp_ns, self.index

    def nearest(self, stamp_ns: int, lo_ns: int, hi_ns: int) -> _Message | None:
        """The queued message nearest to ``stamp_ns`` within ``[lo_ns, hi_ns]``; ties to the earlier."""
        best = None
        for message in self.queue[bisect.bisect_left(self.queue, lo_ns, key=_stamp):]:
            if message.stamp_ns > hi_ns:
                break
            # Ascending order: a later message replaces the best only when strictly nearer.
            if best is None or abs(message.stamp_ns - stamp_ns) < abs(best.stamp_ns - stamp_ns):
                best = message
        return best

    def drop_head(self) -> None:
        self.queue.pop(0)
        self.dropped_unmatched += 1


@dataclass
class _Search:
    """Free mode: the best candidate found around one pivot, and whether it is final."""

    streams: list[_Stream]
    best: list[int]  # per stream, the index of its member in its queue
    pivot: int  # index into streams
    final: bool  # no later message can give a better set


class ApproximateTimeSynchronizer:
    """Feed messages with ``push``, call ``poll`` periodically; both return the sets now complete."""

    def __init__(self, inputs: Sequence[SyncInput], *, slop_ns: int, trigger: str | None = None,
                 timeout_ns: int | None = None, clock: Callable[[], int] | None = None,
                 reset_on_backwards_ns: int = 0) -> None:
        inputs = tuple(inputs)
        if not inputs:
            raise SyncError('approximate sync: needs at least one input, got none')
        names: set[str] = set()
        for spec in inputs:
            if not isinstance(spec, SyncInput):
                raise SyncError(f'approximate sync: inputs must be SyncInput, got {spec!r}')
            if spec.name in names:
                raise SyncError(f'approximate sync: duplicate input name {spec.name!r}')
            names.add(spec.name)
        if not _is_int(slop_ns) or slop_ns < 0:
            raise SyncError(f'approximate sync: slop_ns must be an integer >= 0, got {slop_ns!r}')
        if trigger is not None:
            if trigger not in names:
                raise SyncError(f'approximate sync: trigger {trigger!r} is not an input; inputs are '
                                f'{", ".join(repr(s.name) for s in inputs)}')
            if not next(s for s in inputs if s.name == trigger).required:
                raise SyncError(f'approximate sync: trigger {trigger!r} can not be optional (required=False)')
        elif not any(spec.required for spec in inputs):
            raise SyncError('approximate sync: without a trigger at least one input must be required, '
                            f'got only optional inputs {", ".join(repr(s.name) for s in inputs)}')
        if timeout_ns is not None and (not _is_int(timeout_ns) or timeout_ns < 0):
            raise SyncError(f'approximate sync: timeout_ns must be None or an integer >= 0, got {timeout_ns!r}')
        if not _is_int(reset_on_backwards_ns) or reset_on_backwards_ns < 0:
            raise SyncError('approximate sync: reset_on_backwards_ns must be an integer >= 0, '
                            f'got {reset_on_backwards_ns!r}')
        if clock is not None and not callable(clock):
            raise SyncError(f'approximate sync: clock must be a callable returning ns, got {clock!r}')
        self.inputs = inputs
        self.slop_ns = int(slop_ns)
        self.trigger = trigger
        self.timeout_ns = None if timeout_ns is None else int(timeout_ns)
        self.reset_on_backwards_ns = int(reset_on_backwards_ns)
        self._clock = clock if clock is not None else time.monotonic_ns
        self._streams = {spec.name: _Stream(spec, index) for index, spec in enumerate(inputs)}
        self._optional = frozenset(spec.name for spec in inputs if not spec.required)
        self._watermark: int | None = None  # stamp of the last emitted set
        self._seq = 0
        self._sets = 0
        self._partial_sets = 0
        self._resets = 0

    # -- feeding -------------------------------------------------------------------------------

    def push(self, name: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Take one message (``stamp_ns`` as in its header); return the sets that became ready.

        Sets whose timeout has expired go out here too, so ``poll`` matters only when inputs are quiet.
        """
        stream = self._streams.get(name)
        if stream is None:
            raise SyncError(f'approximate sync: push to unknown input {name!r}; inputs are '
                            f'{", ".join(repr(n) for n in self._streams)}')
        if not _is_int(stamp_ns):
            raise SyncError(f'approximate sync: input {name!r}: stamp_ns must be an integer (ns), got {stamp_ns!r}')
        now = int(self._clock())
        stamp = int(stamp_ns) + stream.spec.offset_ns
        stream.received += 1
        if stream.newest_ns is not None and stream.newest_ns - stamp > self.reset_on_backwards_ns:
            self._clear()  # a new timeline: this message is its first
            self._resets += 1
        stream.newest_ns = stamp if stream.newest_ns is None else max(stream.newest_ns, stamp)
        if self._watermark is not None and stamp < self._watermark:
            stream.dropped_stale += 1
            return self._process(now)
        bisect.insort(stream.queue, _Message(stamp, self._seq, now, item), key=_order)
        self._seq += 1
        emitted = self._process(now)
        # As in ROS, the queue may hold one message more while the push is processed: a full queue
        # still lets the newest message complete a set before the oldest has to go.
        if len(stream.queue) > stream.spec.queue_size:
            stream.queue.pop(0)
            stream.dropped_overflow += 1
            stream.lost_partner = True
            emitted += self._process(now)
        return emitted

    def poll(self) -> list[SyncedSet]:
        """The sets whose timeout has expired by now (and any others that are ready)."""
        return self._process(int(self._clock()))

    def reset(self) -> None:
        """Forget every queued message and the watermark (counted as a reset); counters stay."""
        self._clear()
        self._resets += 1

    @property
    def stats(self) -> SyncStats:
        inputs = {
            name: InputStats(s.received, s.used, s.dropped_overflow, s.dropped_stale, s.dropped_unmatched,
                             s.dropped_reset, len(s.queue))
            for name, s in self._streams.items()
        }
        return SyncStats(MappingProxyType(inputs), self._sets, self._partial_sets, self._resets)

    def _clear(self) -> None:
        for stream in self._streams.values():
            stream.dropped_reset += len(stream.queue)
            stream.queue.clear()
            stream.newest_ns = None
            stream.lost_partner = False
        self._watermark = None

    # -- deciding ------------------------------------------------------------------------------

    def _process(self, now: int) -> list[SyncedSet]:
        if self.trigger is not None:
            return self._process_triggered(now)
        return self._process_free(now)

    def _timed_out(self, message: _Message, now: int) -> bool:
        return self.timeout_ns is not None and now - message.arrived_ns >= self.timeout_ns

    def _why_missing(self, stream: _Stream, window_hi_ns: int, timed_out: bool) -> str:
        if stream.newest_ns is None:
            return MISSING_NO_MESSAGE_YET
        if stream.newest_ns > window_hi_ns:
            return MISSING_NO_MATCH
        return MISSING_TIMEOUT if timed_out else MISSING_NOT_WAITED

    def _process_triggered(self, now: int) -> list[SyncedSet]:
        emitted = []
        triggers = self._streams[self.trigger].queue
        while triggers:
            head = triggers[0]
            t, slop = head.stamp_ns, self.slop_ns
            members = {self.trigger: head}
            unsettled = []
            for stream in self._streams.values():
                if stream.name == self.trigger:
                    continue
                best = stream.nearest(t, t - slop, t + slop)
                if best is not None:
                    members[stream.name] = best
                newest = stream.newest_ns
                settled = newest is not None and (newest >= t if best is not None else newest > t + slop)
                if not settled and stream.spec.required:
                    unsettled.append(stream)
            if unsettled and not self._timed_out(head, now):
                break  # pending triggers go out in stamp order: the later ones wait too
            missing = {s.name: self._why_missing(s, t + slop, bool(unsettled))
                       for s in self._streams.values() if s.name not in members}
            emitted.append(self._emit(t, members, missing, timed_out=bool(unsettled)))
        return emitted

    def _process_free(self, now: int) -> list[SyncedSet]:
        emitted = []
        required = [s for s in self._streams.values() if s.spec.required]
        while True:
            search = self._free_candidate(required)
            if search is not None and search.final:
                emitted.append(self._emit_search(search, timed_out=False))
                continue
            waiting = [s for s in required if s.queue]
            if not waiting:
                break
            oldest = min(waiting, key=_Stream.head_key).queue[0]
            if not self._timed_out(oldest, now):
                break
            # Timed out: the best set among the inputs that have a message within slop of the oldest.
            group = [s for s in waiting if s.queue[0].stamp_ns - oldest.stamp_ns <= self.slop_ns]
            emitted.append(self._emit_search(self._sweep(group), timed_out=True))
        return emitted

    def _free_candidate(self, streams: list[_Stream]) -> _Search | None:
        """Drop oldest messages that cannot be in any set, then search around the pivot."""
        while all(s.queue for s in streams):
            start = min(streams, key=_Stream.head_key)
            pivot = max(streams, key=_Stream.head_key)
            if start is not pivot:
                for stream in streams:
                    if stream is not pivot:
                        stream.lost_partner = False
                # Every set holds a message of the pivot's input no older than its oldest, so the
                # earliest message cannot be in a set if it is out of slop of it, nor if its best
                # partner there may have been pushed out of the pivot's full queue.
                if pivot.queue[0].stamp_ns - start.queue[0].stamp_ns > self.slop_ns or pivot.lost_partner:
                    start.drop_head()
                    continue
            return self._sweep(streams)
        return None

    def _sweep(self, streams: list[_Stream]) -> _Search:
        """The smallest-span set around the pivot: advance the earliest front until it is the pivot.

        Every candidate that can still contain the pivot is one of these front configurations; the
        sweep is *final* when it reaches the pivot, or when it needs a message an input does not have
        yet but every later configuration would end too late to beat the best one (its end can only
        grow while its start stays at or before the pivot).
        """
        positions = [0] * len(streams)
        fronts = [s.queue[0] for s in streams]

        def key(k: int) -> tuple[int, int]:
            return fronts[k].stamp_ns, streams[k].index

        pivot = max(range(len(streams)), key=key)
        pivot_ns = fronts[pivot].stamp_ns
        best, best_span = list(positions), pivot_ns - min(f.stamp_ns for f in fronts)
        while True:
            start = min(range(len(streams)), key=key)
            if start == pivot:
                return _Search(streams, best, pivot, final=True)
            if positions[start] + 1 == len(streams[start].queue):
                end_ns = max(f.stamp_ns for f in fronts)
                return _Search(streams, best, pivot, final=end_ns - pivot_ns >= best_span)
            positions[start] += 1
            fronts[start] = streams[start].queue[positions[start]]
            span = max(f.stamp_ns for f in fronts) - min(f.stamp_ns for f in fronts)
            if span < best_span:  # equal spans: the earlier candidate stays
                best, best_span = list(positions), span

    def _emit_search(self, search: _Search, *, timed_out: bool) -> SyncedSet:
        members = {s.name: s.queue[i] for s, i in zip(search.streams, search.best)}
        stamp = members[search.streams[search.pivot].name].stamp_ns
        first = min(m.stamp_ns for m in members.values())
        last = max(m.stamp_ns for m in members.values())
        missing = {}
        for stream in self._streams.values():
            if stream.name in members:
                continue
            # An optional member must stay within slop of every member, those it joins included.
            best = None if stream.spec.required else stream.nearest(stamp, last - self.slop_ns, first + self.slop_ns)
            if best is None:
                missing[stream.name] = self._why_missing(stream, first + self.slop_ns, timed_out)
                continue
            members[stream.name] = best
            first, last = min(first, best.stamp_ns), max(last, best.stamp_ns)
        return self._emit(stamp, members, missing, timed_out=timed_out)

    def _emit(self, stamp_ns: int, members: dict[str, _Message], missing: dict[str, str], *,
              timed_out: bool) -> SyncedSet:
        """Consume the members, prune what can no longer be used, raise the watermark."""
        for name, message in members.items():
            stream = self._streams[name]
            stream.queue.remove(message)
            stream.used += 1
        self._watermark = stamp_ns
        for stream in self._streams.values():
            member = members.get(stream.name)
            queue = stream.queue
            drop = 0  # the queue is sorted, so what goes is a prefix
            while drop < len(queue) and (queue[drop].stamp_ns < stamp_ns
                                         or (member is not None and _order(queue[drop]) < _order(member))):
                drop += 1
            if drop:
                del queue[:drop]
                stream.dropped_unmatched += drop
        ordered = {s.name: (members[s.name].stamp_ns, members[s.name].item)
                   for s in self._streams.values() if s.name in members}
        result = SyncedSet(stamp_ns, ordered, {s.name: missing[s.name] for s in self._streams.values()
                                               if s.name in missing}, self._optional, timed_out)
        self._sets += 1
        self._partial_sets += result.partial
        return result
