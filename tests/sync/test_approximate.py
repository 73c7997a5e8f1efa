"""ApproximateTimeSynchronizer: ROS ApproximateTime's cases, trigger mode, failures, and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion_ros.errors import MmfusionError, SyncError
from mmfusion_ros.sync import ApproximateTimeSynchronizer, SyncedSet, SyncInput
from mmfusion_ros.sync.approximate import (
    MISSING_NO_MATCH,
    MISSING_NO_MESSAGE_YET,
    MISSING_NOT_WAITED,
    MISSING_TIMEOUT,
)

S = 1_000_000_000
MS = 1_000_000


class FakeClock:
    """Sim or replay time: only moves when the test says so."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def assert_accounted(sync: ApproximateTimeSynchronizer) -> None:
    for name, counts in sync.stats.inputs.items():
        assert counts.received == counts.used + counts.dropped + counts.queued, (name, counts)


# -- free mode: the cases of ROS message_filters' test_approximate_time_policy.cpp ------------------
#
# Each timeline is the messages in arrival order as (input, stamp in seconds); lower-case inputs
# a, b, c, d are the C++ test's topics 0..3. The slop is wide, as ROS has no interval limit there.

FREE_CASES = [
    pytest.param(  # A: a..b..c   B: A..B..C
        2, [('a', 0), ('b', 0), ('a', 3), ('b', 3), ('a', 6), ('b', 6)], 10,
        [(0, 0), (3, 3), (6, 6)], id='exact_match'),
    pytest.param(  # A: a..b..c.  B: .A..B..C   (c, C is not known to be final yet)
        2, [('a', 0), ('b', 1), ('a', 3), ('b', 4), ('a', 6), ('b', 7)], 10,
        [(0, 1), (3, 4)], id='perfect_match'),
    pytest.param(  # A: a.xb..c.  B: .A...B.C
        2, [('a', 0), ('b', 1), ('a', 2), ('a', 3), ('b', 5), ('a', 6), ('b', 7)], 10,
        [(0, 1), (6, 5)], id='imperfect_match'),
    pytest.param(  # A: a...........b....c.  B: .......A.......B..C
        2, [('a', 0), ('b', 7), ('a', 12), ('b', 15), ('a', 17), ('b', 18)], 10,
        [(12, 7), (17, 18)], id='acceleration'),
    pytest.param(  # queue size 1, too small: A: a...b...c.d..e.  B: .A.B...C...D..E
        2, [('a', 0), ('b', 1), ('b', 3), ('a', 4), ('b', 7), ('a', 8), ('a', 10), ('b', 11), ('a', 13),
            ('b', 14)], 1,
        [(4, 3), (10, 11)], id='dropped_messages_queue_1'),
    pytest.param(  # the same with queue size 2, just enough
        2, [('a', 0), ('b', 1), ('b', 3), ('a', 4), ('b', 7), ('a', 8), ('a', 10), ('b', 11), ('a', 13),
            ('b', 14)], 2,
        [(0, 1), (4, 3), (8, 7), (10, 11)], id='dropped_messages_queue_2'),
    pytest.param(  # queue size 5: A: abcdefghiklmnp  B: ...j......o....  (j's partner d overflowed)
        2, [('a', t) for t in range(9)] + [('b', 3)] + [('a', t) for t in range(9, 13)] + [('b', 10), ('a', 13)],
        5, [(10, 10)], id='long_queue'),
    pytest.param(  # A: a..b  B: .A.B  (B before b): both sets go out on b
        2, [('a', 0), ('b', 1), ('b', 3), ('a', 3)], 10,
        [(0, 1), (3, 3)], id='double_publish'),
    pytest.param(  # A: a....e..i.m..n.  B: .b....g..j....o  C: ..c...h...k....  D: ...d.f.....l...
        4, [('a', 0), ('b', 1), ('c', 2), ('d', 3), ('a', 5), ('d', 5), ('b', 6), ('c', 6), ('a', 8), ('b', 9),
            ('c', 10), ('d', 11), ('a', 10), ('a', 13), ('b', 14)], 10,
        [(0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11)], id='four_topics'),
    pytest.param(  # A: a......e  B: .b  C: ..c  D: ...d  (e is late enough to prove abcd optimal)
        4, [('a', 0), ('b', 1), ('c', 2), ('d', 3), ('a', 7)], 10,
        [(0, 1, 2, 3)], id='early_publish'),
]


def run_free(n_inputs: int, timeline: list[tuple[str, int]], queue_size: int,
             slop_ns: int = 1000 * S) -> list[tuple[int, list[SyncedSet]]]:
    names = 'abcd'[:n_inputs]
    sync = ApproximateTimeSynchronizer([SyncInput(n, queue_size=queue_size) for n in names], slop_ns=slop_ns,
                                       clock=FakeClock())
    released = [(i, sync.push(name, t * S, f'{name}{t}')) for i, (name, t) in enumerate(timeline)]
    assert_accounted(sync)
    return released


@pytest.mark.parametrize(('n_inputs', 'timeline', 'queue_size', 'expected'), FREE_CASES)
def test_free_mode_reproduces_ros_approximate_time(n_inputs, timeline, queue_size, expected) -> None:
    released = run_free(n_inputs, timeline, queue_size)
    sets = [s for _, batch in released for s in batch]
    names = 'abcd'[:n_inputs]
    assert [tuple(s.members[n][0] // S for n in names) for s in sets] == expected
    for s in sets:
        assert not s.missing and not s.partial and not s.timed_out
        # Stamped by the pivot, the latest of the oldest queued messages when the search began: a
        # member, though not always the latest one (imperfect_match: a6 joins b5, stamped 5).
        assert s.stamp_ns in s.stamps().values()
        assert all(item == f'{n}{stamp // S}' for n, (stamp, item) in s.members.items())


def test_free_mode_release_points() -> None:
    # DoublePublish: nothing is final until b arrives, then both sets are.
    released = run_free(2, [('a', 0), ('b', 1), ('b', 3), ('a', 3)], 10)
    assert [len(batch) for _, batch in released] == [0, 0, 0, 2]
    # EarlyPublish: e at 7 proves {a, b, c, d} (span 3) can not be beaten by anything later.
    released = run_free(4, [('a', 0), ('b', 1), ('c', 2), ('d', 3), ('a', 7)], 10)
    assert [len(batch) for _, batch in released] == [0, 0, 0, 0, 1]
    # ... while e at 5 does not: a set {e, b', c', d'} starting at 3 could still have span 2.
    released = run_free(4, [('a', 0), ('b', 1), ('c', 2), ('d', 3), ('a', 5)], 10)
    assert sum(len(batch) for _, batch in released) == 0


def test_free_mode_drops_what_can_not_be_within_slop() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('a'), SyncInput('b')], slop_ns=1 * S, clock=FakeClock())
    assert sync.push('a', 0, 'a0') == [] and sync.push('b', 5 * S, 'b5') == []
    assert sync.stats['a'].dropped_unmatched == 1  # a0 can not be within 1 s of anything on b
    assert sync.push('a', 5 * S + 200 * MS, 'a5.2') == []
    (out,) = sync.push('b', 10 * S, 'b10')
    assert out.stamps() == {'a': 5 * S + 200 * MS, 'b': 5 * S} and out.stamp_ns == 5 * S + 200 * MS
    assert_accounted(sync)


def test_free_mode_dead_input_goes_out_partial_after_timeout() -> None:
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer([SyncInput('a'), SyncInput('b'), SyncInput('c')], slop_ns=20 * MS,
                                       timeout_ns=100 * MS, clock=clock)
    out = []
    for k in range(6):  # c publishes twice, then dies
        t = k * 100 * MS
        for name, stamp in (('a', t), ('c', t + 3 * MS), ('b', t + 5 * MS)):  # in arrival order
            if name == 'c' and k >= 2:
                continue
            clock.now = stamp + 1 * MS
            out += sync.push(name, stamp, (name, k))
    clock.now = 1 * S
    out += sync.poll()
    assert [s.stamp_ns for s in out] == [k * 100 * MS + 5 * MS for k in range(6)]
    complete, partial = out[:2], out[2:]
    assert all(not s.partial and not s.timed_out for s in complete)
    for k, s in enumerate(partial, start=2):
        assert s.partial and s.timed_out
        assert dict(s.missing) == {'c': MISSING_TIMEOUT}
        assert s.members == {'a': (k * 100 * MS, ('a', k)), 'b': (k * 100 * MS + 5 * MS, ('b', k))}
    assert sync.stats.partial_sets == 4 and sync.stats.sets == 6
    assert_accounted(sync)


def test_free_mode_optional_input_is_attached_but_never_waited_for() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('a'), SyncInput('b'), SyncInput('c', required=False)],
                                       slop_ns=10 * MS, clock=FakeClock())
    assert sync.push('c', 104 * MS, 'c') == []
    assert sync.push('a', 100 * MS, 'a') == []
    (out,) = sync.push('b', 100 * MS, 'b')
    assert out.stamps() == {'a': 100 * MS, 'b': 100 * MS, 'c': 104 * MS} and not out.partial
    (out,) = sync.push('a', 200 * MS, 'a') + sync.push('b', 200 * MS, 'b')
    assert set(out.members) == {'a', 'b'} and dict(out.missing) == {'c': MISSING_NOT_WAITED}
    assert not out.partial  # only optional inputs are missing


# -- trigger mode --------------------------------------------------------------------------------


def nearest_within(stamps: np.ndarray, t: int, slop: int) -> int | None:
    """Brute force: the stamp nearest to t within slop, ties to the earlier one."""
    inside = [int(s) for s in stamps if abs(int(s) - t) <= slop]
    return min(inside, key=lambda s: (abs(s - t), s)) if inside else None


def sensor_log(rng: np.random.Generator, rates: dict[str, float], latency_ns: dict[str, int], duration_ns: int,
               jitter_ns: int) -> tuple[dict[str, np.ndarray], list[tuple[int, str, int]]]:
    """Stamps per sensor (period +- jitter) and the log: (arrival, sensor, stamp) in arrival order."""
    stamps = {}
    for name, rate in rates.items():
        period = round(S / rate)
        base = np.arange(0, duration_ns, period, dtype=np.int64) + rng.integers(0, period)
        stamps[name] = base + rng.integers(-jitter_ns, jitter_ns + 1, size=len(base))
    log = sorted((int(s) + latency_ns[name], name, int(s)) for name, ss in stamps.items() for s in ss)
    return stamps, log


def test_trigger_mode_three_rates_one_set_per_trigger_with_nearest_members() -> None:
    rng = np.random.default_rng(7)
    rates = {'lidar_top': 20.0, 'camera_front': 12.0, 'radar_front': 13.0}
    stamps, log = sensor_log(rng, rates, {'lidar_top': 30 * MS, 'camera_front': 10 * MS, 'radar_front': 5 * MS},
                             3 * S, jitter_ns=2 * MS)
    # Triggers are >= 46 ms apart, so with 20 ms of slop no message is a candidate for two triggers:
    # using each message once never takes one away from a nearer trigger.
    slop = 20 * MS
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer([SyncInput(n) for n in rates], slop_ns=slop, trigger='lidar_top',
                                       timeout_ns=200 * MS, clock=clock)
    out = []
    for arrival, name, stamp in log:
        clock.now = arrival
        out += sync.push(name, stamp, (name, stamp))
    clock.now += 1 * S
    out += sync.poll()  # the last triggers wait for messages that will never come
    assert [s.stamp_ns for s in out] == sorted(stamps['lidar_top'].tolist())
    for s in out:
        assert s.members['lidar_top'] == (s.stamp_ns, ('lidar_top', s.stamp_ns))
        for name in ('camera_front', 'radar_front'):
            expected = nearest_within(stamps[name], s.stamp_ns, slop)
            if expected is None:
                assert name in s.missing
            else:
                assert s.members[name] == (expected, (name, expected))
    on_time = [s for s in out if not s.timed_out]
    assert len(on_time) >= len(out) - 2  # only the very last sets needed the timeout
    assert all(s.missing.get(n, MISSING_NO_MATCH) == MISSING_NO_MATCH for s in on_time for n in rates)
    assert sum('camera_front' in s.members for s in out) >= 20 and sum(s.partial for s in out) >= 10
    assert sync.stats.sets == len(out) and sync.stats['lidar_top'].used == len(out)
    assert_accounted(sync)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), jitter_ms=st.integers(0, 3), slop_ms=st.integers(0, 20))
def test_trigger_mode_matches_brute_force_nearest(seed: int, jitter_ms: int, slop_ms: int) -> None:
    rng = np.random.default_rng(seed)
    rates = {'lidar': 20.0, 'cam': 12.0, 'radar': 13.0}
    stamps, log = sensor_log(rng, rates, {'lidar': 25 * MS, 'cam': 8 * MS, 'radar': 3 * MS}, S // 2,
                             jitter_ns=jitter_ms * MS)
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer([SyncInput(n, queue_size=64) for n in rates], slop_ns=slop_ms * MS,
                                       trigger='lidar', timeout_ns=S, clock=clock)
    out = []
    for arrival, name, stamp in log:
        clock.now = arrival
        out += sync.push(name, stamp, stamp)
    clock.now += 2 * S
    out += sync.poll()
    assert [s.stamp_ns for s in out] == sorted(stamps['lidar'].tolist())
    for s in out:
        for name in ('cam', 'radar'):
            assert s.stamps().get(name) == nearest_within(stamps[name], s.stamp_ns, slop_ms * MS)


def test_per_input_offset_corrects_a_clock_running_ahead() -> None:
    def run(offset_ns: int) -> list[SyncedSet]:
        sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera', offset_ns=offset_ns)],
                                           slop_ns=10 * MS, trigger='lidar', clock=FakeClock())
        out = []
        for k in range(5):
            t = k * 100 * MS
            out += sync.push('lidar', t, ('lidar', k))
            out += sync.push('camera', t + 2 * MS + 30 * MS, ('camera', k))  # its clock is 30 ms ahead
        return out

    uncorrected = run(0)
    assert uncorrected and all(dict(s.missing) == {'camera': MISSING_NO_MATCH} for s in uncorrected)
    corrected = run(-30 * MS)
    assert len(corrected) == 5
    for k, s in enumerate(corrected):
        assert s.members['camera'] == (k * 100 * MS + 2 * MS, ('camera', k)) and not s.partial


def test_out_of_order_triggers_go_out_in_stamp_order_and_ties_go_to_the_earlier() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=20 * MS,
                                       trigger='lidar', reset_on_backwards_ns=500 * MS, clock=FakeClock())
    assert sync.push('lidar', 200 * MS, 'l200') == [] and sync.push('lidar', 100 * MS, 'l100') == []
    assert sync.push('camera', 95 * MS, 'c95') == []  # before the trigger: a nearer one may come
    (first,) = sync.push('camera', 105 * MS, 'c105')
    # 95 and 105 are both 5 ms from the trigger: the earlier stamp wins.
    assert first.stamp_ns == 100 * MS and first.members['camera'] == (95 * MS, 'c95')
    (second,) = sync.push('camera', 210 * MS, 'c210')
    assert second.stamp_ns == 200 * MS and second.members['camera'] == (210 * MS, 'c210')
    assert sync.stats.resets == 0 and sync.stats['camera'].dropped_unmatched == 1  # c105: lost to c95
    # Equal stamps on one input: arrival order decides.
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=20 * MS,
                                       trigger='lidar', clock=FakeClock())
    sync.push('camera', 10 * MS, 'first')
    sync.push('camera', 10 * MS, 'second')
    (out,) = sync.push('lidar', 10 * MS, 'l')
    assert out.members['camera'] == (10 * MS, 'first')


def test_trigger_waits_while_a_match_can_still_come() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=10 * MS,
                                       trigger='lidar', clock=FakeClock())
    sync.push('lidar', 100 * MS, 'l100')
    sync.push('lidar', 105 * MS, 'l105')
    # c108 is past both triggers; the first takes it. The second has no candidate, but a camera
    # message up to 115 could still come: it waits rather than going out without the camera.
    (first,) = sync.push('camera', 108 * MS, 'c108')
    assert first.stamp_ns == 100 * MS and first.members['camera'] == (108 * MS, 'c108')
    (second,) = sync.push('camera', 111 * MS, 'c111')
    assert second.stamp_ns == 105 * MS and second.members['camera'] == (111 * MS, 'c111')
    # Past the slop with nothing inside it: it can not match any more, so it goes out without.
    sync.push('lidar', 200 * MS, 'l200')
    (third,) = sync.push('camera', 211 * MS, 'c211')
    assert dict(third.missing) == {'camera': MISSING_NO_MATCH} and third.partial and not third.timed_out


def test_out_of_order_message_is_used_when_nearest() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=20 * MS,
                                       trigger='lidar', reset_on_backwards_ns=100 * MS, clock=FakeClock())
    for stamp in (10, 30, 20):  # 20 arrives after 30
        assert sync.push('camera', stamp * MS, f'c{stamp}') == []
    (out,) = sync.push('lidar', 21 * MS, 'l21')
    assert out.members['camera'] == (20 * MS, 'c20')
    camera = sync.stats['camera']
    assert (camera.received, camera.used, camera.dropped_unmatched, camera.queued) == (3, 1, 1, 1)
    assert sync.stats.resets == 0
    assert_accounted(sync)


def test_dead_sensor_sets_go_out_partial_after_the_timeout() -> None:
    clock = FakeClock()
    names = ('lidar', 'camera', 'radar')
    sync = ApproximateTimeSynchronizer([SyncInput(n) for n in names], slop_ns=30 * MS, trigger='lidar',
                                       timeout_ns=150 * MS, clock=clock)
    out = []

    def publish(k: int, who: tuple[str, ...]) -> None:
        for name in who:
            stamp = k * 100 * MS + (0 if name == 'lidar' else 10 * MS)
            clock.now = stamp + 5 * MS  # arrives 5 ms after its stamp
            out.extend(sync.push(name, stamp, (name, k)))

    for k in range(6):
        publish(k, names)
    assert len(out) == 6 and all(not s.partial and not s.timed_out for s in out)
    publish(6, ('lidar', 'camera'))  # the radar is dead from here on
    assert len(out) == 6  # the set of k = 6 waits for the radar
    arrived = 600 * MS + 5 * MS
    clock.now = arrived + 150 * MS - 1
    assert sync.poll() == []  # still within the timeout
    clock.now = arrived + 150 * MS
    (late,) = sync.poll()
    out.append(late)
    assert late.stamp_ns == 600 * MS and late.partial and late.timed_out
    assert dict(late.missing) == {'radar': MISSING_TIMEOUT}
    assert late.members['camera'] == (610 * MS, ('camera', 6))
    for k in range(7, 20):  # the pipeline keeps going, one timeout behind
        publish(k, ('lidar', 'camera'))
    assert [s.stamp_ns for s in out[7:]] == [k * 100 * MS for k in range(7, 18)]
    assert all(dict(s.missing) == {'radar': MISSING_TIMEOUT} for s in out[7:])
    assert sync.stats.partial_sets == 12
    assert_accounted(sync)


def test_late_message_is_counted_stale() -> None:
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=20 * MS,
                                       trigger='lidar', timeout_ns=50 * MS, clock=clock)
    sync.push('lidar', 100 * MS, 'l100')
    clock.now = 50 * MS
    (out,) = sync.poll()
    assert dict(out.missing) == {'camera': MISSING_NO_MESSAGE_YET} and out.partial
    assert sync.push('camera', 95 * MS, 'late') == []
    camera = sync.stats['camera']
    assert (camera.received, camera.dropped_stale, camera.queued) == (1, 1, 0)
    sync.push('camera', 100 * MS, 'same stamp as the set: still usable')
    assert sync.stats['camera'].queued == 1 and sync.stats['camera'].dropped_stale == 1
    assert_accounted(sync)


def test_queue_overflow_drops_the_oldest() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera', queue_size=2)], slop_ns=100 * MS,
                                       trigger='lidar', clock=FakeClock())
    for stamp in (10, 20, 30, 40, 50):
        sync.push('camera', stamp * MS, f'c{stamp}')
    camera = sync.stats['camera']
    assert (camera.dropped_overflow, camera.queued) == (3, 2)
    (out,) = sync.push('lidar', 12 * MS, 'l12')
    assert out.members['camera'] == (40 * MS, 'c40')  # 10, 20 and 30 are gone
    assert_accounted(sync)


def test_trigger_queue_overflow_drops_the_oldest_trigger() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar', queue_size=2), SyncInput('camera')], slop_ns=10 * MS,
                                       trigger='lidar', clock=FakeClock())
    for k in range(4):  # the camera has said nothing: every trigger waits
        assert sync.push('lidar', k * 100 * MS, k) == []
    assert sync.stats['lidar'].dropped_overflow == 2
    out = sync.push('camera', 200 * MS, 'c') + sync.push('camera', 400 * MS, 'c2')
    assert [s.stamp_ns for s in out] == [200 * MS, 300 * MS]


def test_time_going_backwards_resets_and_continues() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=10 * MS,
                                       trigger='lidar', clock=FakeClock())
    out = []
    for loop in range(2):  # a bag played twice
        for k in range(5):
            out += sync.push('lidar', k * 100 * MS, (loop, k))
            # The last camera message is before the last trigger: that set still waits at the end.
            out += sync.push('camera', k * 100 * MS + 3 * MS if k < 4 else 395 * MS, (loop, k))
    stats = sync.stats
    assert stats.resets == 1
    assert [s.stamp_ns // MS for s in out] == [0, 100, 200, 300, 0, 100, 200, 300]
    assert all(not s.partial for s in out)
    assert [s.members['lidar'][1] for s in out[4:]] == [(1, k) for k in range(4)]
    # The first loop's last trigger and camera message were queued when time went back.
    assert stats['lidar'].dropped_reset == 1 and stats['camera'].dropped_reset == 1
    assert stats['camera'].dropped_stale == 0
    assert_accounted(sync)


def test_backwards_within_threshold_is_not_a_reset_but_can_be_stale() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=10 * MS,
                                       trigger='lidar', reset_on_backwards_ns=1 * S, clock=FakeClock())
    sync.push('camera', 103 * MS, 'c103')
    sync.push('lidar', 100 * MS, 'l100')  # goes out: the camera is past 100
    sync.push('camera', 50 * MS, 'c50')  # 53 ms back on the camera: within the threshold, but stale
    assert sync.stats.resets == 0 and sync.stats['camera'].dropped_stale == 1
    sync.push('camera', 103 * MS - 1 * S - 1, 'loop')  # more than 1 s back: a new timeline
    assert sync.stats.resets == 1 and sync.stats['camera'].queued == 1
    (out,) = sync.push('lidar', 100 * MS - 1 * S, 'l')
    assert out.members['camera'][1] == 'loop'


def test_manual_reset_forgets_queues_and_watermark() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera')], slop_ns=10 * MS,
                                       trigger='lidar', clock=FakeClock())
    sync.push('camera', 500 * MS, 'c')
    sync.push('lidar', 500 * MS, 'l')
    sync.push('camera', 600 * MS, 'c2')
    sync.reset()
    assert sync.stats.resets == 1 and sync.stats['camera'].dropped_reset == 1
    assert sync.push('camera', 10 * MS, 'c3') == []  # older than the last set, but after the reset
    assert sync.stats['camera'].dropped_stale == 0 and sync.stats['camera'].queued == 1
    assert_accounted(sync)


def test_optional_input_never_delays_a_trigger_set() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar'), SyncInput('camera'), SyncInput('radar', required=False)],
                                       slop_ns=20 * MS, trigger='lidar', clock=FakeClock())
    sync.push('camera', 101 * MS, 'c')
    (out,) = sync.push('lidar', 100 * MS, 'l')
    assert dict(out.missing) == {'radar': MISSING_NO_MESSAGE_YET} and not out.partial
    sync.push('radar', 190 * MS, 'r190')
    sync.push('camera', 205 * MS, 'c205')
    (out,) = sync.push('lidar', 200 * MS, 'l200')  # the radar has not reached 200: used as it is
    assert out.stamps() == {'lidar': 200 * MS, 'camera': 205 * MS, 'radar': 190 * MS}
    sync.push('radar', 250 * MS, 'r250')
    sync.push('camera', 300 * MS, 'c300')
    (out,) = sync.push('lidar', 300 * MS, 'l300')
    assert dict(out.missing) == {'radar': MISSING_NOT_WAITED} and not out.partial


def test_synced_set_is_read_only() -> None:
    out = SyncedSet(5, {'a': (5, 'x')}, {'b': MISSING_TIMEOUT}, frozenset({'b'}))
    assert not out.partial and SyncedSet(5, {'a': (5, 'x')}, {'b': MISSING_TIMEOUT}).partial
    with pytest.raises(TypeError):
        out.members['c'] = (1, 'y')  # type: ignore[index]


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(('make', 'match'), [
    (lambda: SyncInput('camera', queue_size=0), "'camera': queue_size must be an integer >= 1, got 0"),
    (lambda: SyncInput(''), "name must be a non-empty string, got ''"),
    (lambda: SyncInput('camera', offset_ns=0.5), "'camera': offset_ns must be an integer"),
    (lambda: ApproximateTimeSynchronizer([], slop_ns=0), 'needs at least one input'),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam'), SyncInput('cam')], slop_ns=0),
     "duplicate input name 'cam'"),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam')], slop_ns=-1), 'slop_ns must be an integer >= 0, got -1'),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam')], slop_ns=0, trigger='lidar'),
     "trigger 'lidar' is not an input; inputs are 'cam'"),
    (lambda: ApproximateTimeSynchronizer([SyncInput('lidar', required=False)], slop_ns=0, trigger='lidar'),
     "trigger 'lidar' can not be optional"),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam', required=False)], slop_ns=0),
     "at least one input must be required, got only optional inputs 'cam'"),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam')], slop_ns=0, timeout_ns=-5),
     'timeout_ns must be None or an integer >= 0, got -5'),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam')], slop_ns=0, reset_on_backwards_ns=-1),
     'reset_on_backwards_ns must be an integer >= 0, got -1'),
    (lambda: ApproximateTimeSynchronizer([SyncInput('cam')], slop_ns=0, clock=5), 'clock must be a callable'),
    (lambda: ApproximateTimeSynchronizer(['cam'], slop_ns=0), "inputs must be SyncInput, got 'cam'"),
])
def test_invalid_arguments_are_named(make, match) -> None:
    with pytest.raises(SyncError, match=match):
        make()


def test_push_errors_name_the_input_and_value() -> None:
    sync = ApproximateTimeSynchronizer([SyncInput('lidar')], slop_ns=0, clock=FakeClock())
    with pytest.raises(SyncError, match="unknown input 'radar'; inputs are 'lidar'"):
        sync.push('radar', 0, None)
    with pytest.raises(SyncError, match="input 'lidar': stamp_ns must be an integer \\(ns\\), got 1.5"):
        sync.push('lidar', 1.5, None)
    assert issubclass(SyncError, MmfusionError)
    assert sync.stats['lidar'].received == 0


# -- properties ----------------------------------------------------------------------------------


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 4))
    names = [f'in{i}' for i in range(n)]
    trigger = draw(st.sampled_from([None, names[0]]))
    specs = [SyncInput(name, offset_ns=draw(st.integers(-5, 5)),
                       required=True if i == 0 else draw(st.booleans()), queue_size=draw(st.integers(1, 6)))
             for i, name in enumerate(names)]
    # Each input: increasing stamps (period + jitter); arrival = stamp + a random delay, so inputs
    # interleave and an input's own messages can arrive out of order.
    log = []
    for name in names:
        stamps = np.cumsum(draw(st.lists(st.integers(0, 12), min_size=2, max_size=12)))
        for stamp in stamps.tolist():
            log.append((stamp + draw(st.integers(0, 10)), name, stamp))
    log.sort()
    if draw(st.booleans()):  # a looped bag: the same log again, later on the clock
        log += [(arrival + 200, name, stamp) for arrival, name, stamp in log]
    polls = draw(st.lists(st.booleans(), min_size=len(log), max_size=len(log)))
    return dict(specs=specs, trigger=trigger, slop=draw(st.integers(0, 12)),
                timeout=draw(st.one_of(st.none(), st.integers(0, 40))),
                backwards=draw(st.sampled_from([0, 3, 10, 100])), log=log, polls=polls)


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
def test_properties_of_random_streams(scenario) -> None:
    specs, trigger, slop = scenario['specs'], scenario['trigger'], scenario['slop']
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer(specs, slop_ns=slop, trigger=trigger, timeout_ns=scenario['timeout'],
                                       clock=clock, reset_on_backwards_ns=scenario['backwards'])
    offsets = {s.name: s.offset_ns for s in specs}
    required = {s.name for s in specs if s.required}
    pushed = {s.name: 0 for s in specs}
    used_ids: set[tuple[str, int]] = set()
    used_per_input = {s.name: 0 for s in specs}
    sets = partial = 0
    last_stamp: int | None = None

    def check(batch: list[SyncedSet]) -> None:
        nonlocal sets, partial, last_stamp
        for out in batch:
            assert set(out.members) | set(out.missing) == set(offsets)
            assert not set(out.members) & set(out.missing)
            assert out.partial == bool(required & set(out.missing))
            if last_stamp is not None:
                assert out.stamp_ns >= last_stamp, 'set stamps went backwards'
            last_stamp = out.stamp_ns
            member_stamps = []
            for name, (stamp, (item_name, raw, seq)) in out.members.items():
                assert item_name == name and stamp == raw + offsets[name]
                assert (name, seq) not in used_ids, f'{name} message {seq} used twice'
                used_ids.add((name, seq))
                used_per_input[name] += 1
                assert abs(stamp - out.stamp_ns) <= slop
                member_stamps.append(stamp)
            if trigger is not None:
                assert out.members[trigger][0] == out.stamp_ns
            else:
                assert max(member_stamps) - min(member_stamps) <= slop
                assert out.stamp_ns in member_stamps
                if not out.timed_out:
                    assert required <= set(out.members)
            sets += 1
            partial += out.partial

    for seq, ((arrival, name, stamp), poll) in enumerate(zip(scenario['log'], scenario['polls'])):
        clock.now = max(clock.now, arrival)
        resets = sync.stats.resets
        batch = sync.push(name, stamp, (name, stamp, seq))
        pushed[name] += 1
        if sync.stats.resets != resets:  # a new timeline: monotonic again from here
            last_stamp = None
        check(batch)
        if poll:
            clock.now += 7
            check(sync.poll())
        stats = sync.stats
        for spec in specs:
            counts = stats[spec.name]
            assert counts.received == pushed[spec.name]
            assert counts.used == used_per_input[spec.name]
            assert counts.received == counts.used + counts.dropped + counts.queued
            assert counts.queued <= spec.queue_size
        assert (stats.sets, stats.partial_sets) == (sets, partial)
