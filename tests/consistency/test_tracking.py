"""Tracker and FlagFilter on synthetic scenes: objects moving at constant velocity, a moving ego."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from mmfusion_ros.config import FusionConfig, TrackingSection, config_from_dict
from mmfusion_ros.consistency import tracking
from mmfusion_ros.consistency.tracking import FlagFilter, TrackedFrame, Tracker
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.types import NS_PER_S, Detections3D, RigidTransform

DT = 0.1  # 10 Hz
T0 = 1_700_000_000 * NS_PER_S
SIZES = {'car': (4.5, 1.9, 1.6), 'truck': (8.0, 2.5, 3.2), 'bus': (11.0, 2.9, 3.3), 'pedestrian': (0.7, 0.7, 1.8)}


@dataclass(frozen=True)
class Actor:
    start: tuple[float, float]  # (x, y) in the fixed frame at t = 0
    velocity: tuple[float, float]  # over the ground, fixed frame, m/s
    label: str = 'car'

    def at(self, t: float) -> np.ndarray:
        return np.array([self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t, 0.8])


def ego_pose(t: float, speed: float = 10.0, yaw_rate: float = 0.1) -> RigidTransform:
    """base_to_fixed of an ego driving an arc from the origin."""
    yaw = yaw_rate * t
    x = speed / yaw_rate * math.sin(yaw) if yaw_rate else speed * t
    y = speed / yaw_rate * (1 - math.cos(yaw)) if yaw_rate else 0.0
    c, s = math.cos(yaw), math.sin(yaw)
    return RigidTransform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), np.array([x, y, 0.0]))


def observe(actors: list[Actor], t: float, pose: RigidTransform, rng: np.random.Generator | None = None,
            noise_m: float = 0.1, network_velocity: bool = True, velocity_noise: float = 0.0) -> Detections3D:
    """What a detector reports at ``t``: the actors in the base frame, in the given order."""
    to_base = pose.inverse()
    rng = rng or np.random.default_rng(0)
    if not actors:
        return Detections3D.empty(stamp(t), 'base_link')
    centers = to_base.apply(np.array([a.at(t) for a in actors]))
    centers[:, :2] += rng.normal(0, noise_m, (len(actors), 2))
    velocities = np.array([a.velocity for a in actors], float) @ to_base.rotation[:2, :2].T
    velocities += rng.normal(0, velocity_noise, velocities.shape) if velocity_noise else 0.0
    if not network_velocity:
        velocities[:] = np.nan
    yaws = np.array([math.atan2(a.velocity[1], a.velocity[0]) for a in actors])
    return Detections3D(stamp(t), 'base_link', centers, np.array([SIZES[a.label] for a in actors]), yaws,
                        velocities, tuple(a.label for a in actors), np.full(len(actors), 0.9))


def stamp(t: float) -> int:
    return T0 + round(t * NS_PER_S)


def run(tracker: Tracker, actors: list[Actor], frames: int, **kwargs) -> list[TrackedFrame]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(frames):
        pose = ego_pose(k * DT)
        out.append(tracker.update(observe(actors, k * DT, pose, rng, **kwargs), pose.matrix))
    return out


@pytest.fixture(params=['hungarian', 'greedy'])
def assignment(request, monkeypatch):
    """Run a test with scipy's Hungarian assignment and with the greedy fallback."""
    if request.param == 'greedy':
        monkeypatch.setattr(tracking, 'linear_sum_assignment', None)
    elif tracking.linear_sum_assignment is None:
        pytest.skip('scipy is not installed')
    return request.param


# --- Tracker ------------------------------------------------------------------------------------------


def test_ids_stay_with_objects_for_50_frames_while_the_ego_drives_an_arc(assignment):
    actors = [Actor((20, 5), (8, 0)), Actor((30, -4), (-6, 1), 'truck'), Actor((15, 8), (0, -1.2), 'pedestrian'),
              Actor((40, 3.5), (9, 0.5))]
    frames = run(Tracker(), actors, 50)
    ids = np.array([f.track_ids for f in frames])  # (50, 4)
    assert all(len(set(column)) == 1 for column in ids.T), 'an object changed id'
    assert len(set(ids[0])) == 4
    assert all(not f.ended and not f.predicted.any() and not f.duplicate.any() for f in frames)
    assert not frames[0].confirmed.any() and frames[1].confirmed.all()
    assert frames[-1].ages.tolist() == [50] * 4 and frames[-1].hits.tolist() == [50] * 4
    assert frames[-1].labels == ('car', 'truck', 'pedestrian', 'car')


def test_crossing_objects_keep_their_ids(assignment):
    # A drives +x along y = 0 and passes x = 0 at t = 2.0 s; B drives +y along x = 0 and passes y = 0 at
    # t = 2.3 s: at 2.0 s they are 2.4 m apart, inside each other's gates. No network velocity either.
    actors = [Actor((-20, 0), (10, 0)), Actor((0, -18.4), (0, 8))]
    tracker = Tracker()
    rng = np.random.default_rng(3)
    seen = []
    for k in range(45):
        pose = RigidTransform.identity()
        detections = observe(actors[::-1] if k % 2 else actors, k * DT, pose, rng, network_velocity=False)
        ids = tracker.update(detections, None).detection_track_ids
        seen.append(ids[::-1] if k % 2 else ids)
    assert len(set(seen)) == 1 and len(set(seen[0])) == 2


def test_a_detection_missing_for_one_frame_coasts_and_keeps_its_id():
    actors = [Actor((10, 0), (5, 0)), Actor((20, 6), (-3, 0))]
    tracker = Tracker()
    rng = np.random.default_rng(1)
    frames = []
    for k in range(12):
        pose = ego_pose(k * DT)
        visible = actors if k != 8 else actors[:1]
        frames.append(tracker.update(observe(visible, k * DT, pose, rng), pose.matrix))
    gap = frames[8]
    assert gap.num_detections == 1 and len(gap) == 2
    assert gap.predicted.tolist() == [False, True] and gap.missed.tolist() == [0, 1]
    assert gap.track_ids[1] == frames[7].track_ids[1]
    truth = ego_pose(0.8).inverse().apply(actors[1].at(0.8)[None])[0]
    assert np.linalg.norm(gap.centers[1, :2] - truth[:2]) < 0.3, 'coasting row is not where the track went'
    assert frames[9].track_ids == frames[7].track_ids and frames[9].missed.tolist() == [0, 0]
    assert not any(f.ended for f in frames)


def test_a_confirmed_track_ends_after_max_missed_frames_and_a_tentative_one_at_once():
    config = TrackingSection(max_missed=2)
    tracker = Tracker(config)
    actor = [Actor((10, 0), (5, 0))]
    frames = [tracker.update(observe(actor, k * DT, RigidTransform.identity()), None) for k in range(3)]
    first = frames[0].track_ids[0]
    empty = [tracker.update(Detections3D.empty(stamp(k * DT), 'base_link'), None) for k in range(3, 6)]
    assert [f.track_ids for f in empty[:2]] == [(first,), (first,)] and empty[2].ended == (first,)
    assert len(empty[2]) == 0
    blip = tracker.update(observe([Actor((-10, 0), (0, 0))], 0.6, RigidTransform.identity()), None)
    gone = tracker.update(Detections3D.empty(stamp(0.7), 'base_link'), None)
    assert gone.ended == blip.track_ids and len(gone) == 0


@pytest.mark.parametrize('network_velocity', [False, True])
def test_smoothed_velocity_converges_to_the_truth(network_velocity):
    # 10 frames at 10 Hz, 0.1 m position noise (and 1 m/s network velocity noise where there is one):
    # even a least-squares line through all 10 positions has 0.11 m/s std per axis, so about 5 % of
    # runs land beyond 0.3 m/s whatever the filter; ask for 90 % within 0.3 m/s and a median of 0.2.
    truth = np.array([8.0, -3.0])
    errors = []
    for seed in range(50):
        tracker = Tracker()
        rng = np.random.default_rng(seed)
        actor = [Actor((15, 4), tuple(truth))]
        for k in range(10):
            pose = ego_pose(k * DT)
            tracked = tracker.update(observe(actor, k * DT, pose, rng, noise_m=0.1, network_velocity=network_velocity,
                                             velocity_noise=1.0), pose.matrix)
        truth_base = pose.inverse().rotation[:2, :2] @ truth  # the output is in the base frame
        errors.append(float(np.linalg.norm(tracked.velocities[0] - truth_base)))
    assert np.mean(np.array(errors) < 0.3) >= 0.9 and np.median(errors) < 0.2, errors


def _doppler_of(actor: Actor, t: float, pose: RigidTransform, bias: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The radar's view of one actor from the base origin: radial ground speed and line of sight (base)."""
    to_base = pose.inverse()
    center = to_base.apply(actor.at(t)[None])[0, :2]
    los = center / np.linalg.norm(center)
    velocity = to_base.rotation[:2, :2] @ np.asarray(actor.velocity, float)
    return np.array([float(los @ velocity) + bias]), los[None]


def test_a_young_track_takes_the_radar_doppler_over_a_wrong_network_velocity():
    # A car driving away at 14 m/s; the network calls it 6 m/s. The doppler (radial: the car is
    # straight ahead) pulls the track's velocity to the truth from its first frame.
    actor = Actor((25, 0), (14, 0))
    pose = RigidTransform.identity()
    detections = observe([actor], 0.0, pose)
    detections = Detections3D(detections.stamp_ns, detections.frame_id, detections.centers, detections.sizes,
                              detections.yaws, np.array([[6.0, 0.0]]), detections.labels, detections.scores)
    without = Tracker().update(detections, None)
    with_doppler = Tracker().update(detections, None, _doppler_of(actor, 0.0, pose))
    assert without.velocities[0, 0] == pytest.approx(6.0)
    assert with_doppler.doppler_used[0]
    assert abs(with_doppler.velocities[0, 0] - 14.0) < 0.5
    off = Tracker(TrackingSection(doppler_gate_sigmas=0.0)).update(detections, None, _doppler_of(actor, 0.0, pose))
    assert not off.doppler_used[0] and off.velocities[0, 0] == pytest.approx(6.0)


def test_an_established_track_gates_out_a_doppler_that_contradicts_its_motion():
    actor = Actor((20, 5), (10, 0))
    tracker = Tracker()
    for k in range(12):
        pose = ego_pose(k * DT)
        tracked = tracker.update(observe([actor], k * DT, pose, velocity_noise=0.5), pose.matrix,
                                 _doppler_of(actor, k * DT, pose))
        assert tracked.doppler_used[0]  # a doppler that agrees is taken every frame
    pose = ego_pose(12 * DT)
    before = tracker._tracks.state[0, 2:].copy()
    tracked = tracker.update(observe([actor], 12 * DT, pose), pose.matrix, _doppler_of(actor, 12 * DT, pose, bias=-6.0))
    assert not tracked.doppler_used[0]  # 6 m/s off: not this object's motion
    truth_base = pose.inverse().rotation[:2, :2] @ np.array([10.0, 0.0])
    assert np.linalg.norm(tracked.velocities[0] - truth_base) < 0.5
    assert np.linalg.norm(tracker._tracks.state[0, 2:] - before) < 0.5


def test_missing_or_broken_doppler_is_not_a_measurement():
    actor = Actor((15, 4), (8, 0))
    detections = observe([actor], 0.0, RigidTransform.identity())
    for radial, los in ((np.array([np.nan]), np.array([[1.0, 0.0]])), (np.array([3.0]), np.array([[np.nan, 0.0]]))):
        tracked = Tracker().update(detections, None, (radial, los))
        assert not tracked.doppler_used[0]
        np.testing.assert_allclose(tracked.velocities[0], [8, 0])
    assert Tracker().update(Detections3D.empty(0, 'base_link'), None, (np.zeros(0), np.zeros((0, 2)))).doppler_used.shape == (0,)


def test_velocity_is_unknown_until_measured_or_seen_twice():
    tracker = Tracker()
    actor = [Actor((15, 4), (8, 0))]
    first = tracker.update(observe(actor, 0.0, RigidTransform.identity(), network_velocity=False), None)
    assert np.isnan(first.velocities).all()
    second = tracker.update(observe(actor, DT, RigidTransform.identity(), network_velocity=False), None)
    assert np.isfinite(second.velocities).all()
    with_network = Tracker().update(observe(actor, 0.0, RigidTransform.identity()), None)
    np.testing.assert_allclose(with_network.velocities[0], [8, 0])


def test_a_new_object_gets_a_new_id():
    tracker = Tracker()
    old = [Actor((10, 0), (5, 0))]
    for k in range(5):
        before = tracker.update(observe(old, k * DT, ego_pose(k * DT)), ego_pose(k * DT).matrix)
    arrival = old + [Actor((-5, -20), (0, 6))]
    first = tracker.update(observe(arrival, 0.5, ego_pose(0.5)), ego_pose(0.5).matrix)
    assert first.track_ids[0] == before.track_ids[0]
    assert first.track_ids[1] not in before.track_ids and first.track_ids[1]
    assert first.confirmed.tolist() == [True, False] and first.ages.tolist() == [6, 1]
    second = tracker.update(observe(arrival, 0.6, ego_pose(0.6)), ego_pose(0.6).matrix)
    assert second.track_ids == first.track_ids and second.confirmed.all()


def test_a_second_detection_of_one_object_is_a_duplicate_not_a_new_track():
    tracker = Tracker()
    actor = Actor((10, 0), (5, 0))
    for k in range(3):
        before = tracker.update(observe([actor], k * DT, RigidTransform.identity()), None)
    double = observe([actor, actor], 0.3, RigidTransform.identity(), noise_m=0.0)
    double = Detections3D(double.stamp_ns, 'base_link', double.centers + [[0, 0, 0], [0.4, 0.3, 0]], double.sizes,
                          double.yaws, double.velocities, double.labels, np.array([0.9, 0.5]))
    tracked = tracker.update(double, None)
    assert tracked.track_ids == before.track_ids * 2
    assert tracked.duplicate.tolist() == [False, True] and tracked.hits.tolist() == [4, 4]
    assert tracker.update(observe([actor], 0.4, RigidTransform.identity()), None).track_ids == before.track_ids


def test_a_truck_seen_once_as_a_bus_keeps_its_track_and_class():
    tracker = Tracker()
    actor = Actor((10, 0), (5, 0), 'truck')
    frames = []
    for k in range(6):
        detections = observe([actor], k * DT, RigidTransform.identity())
        if k == 3:
            detections = Detections3D(detections.stamp_ns, 'base_link', detections.centers, detections.sizes,
                                      detections.yaws, detections.velocities, ('bus',), detections.scores)
        frames.append(tracker.update(detections, None))
    assert len({f.track_ids for f in frames}) == 1
    assert all(f.labels == ('truck',) for f in frames)


def test_time_going_backwards_resets_the_tracker():
    tracker = Tracker()
    actors = [Actor((10, 0), (5, 0)), Actor((20, 6), (-3, 0))]
    for k in range(5):
        before = tracker.update(observe(actors, k * DT, RigidTransform.identity()), None)
    looped = tracker.update(observe(actors, 0.0, RigidTransform.identity()), None)
    assert looped.reset and set(looped.ended) == set(before.track_ids)
    assert not set(looped.track_ids) & set(before.track_ids), 'ids are reused after a reset'
    assert looped.hits.tolist() == [1, 1] and not looped.confirmed.any()
    resumed = tracker.update(observe(actors, DT, RigidTransform.identity()), None)
    assert resumed.track_ids == looped.track_ids and not resumed.reset


def test_a_long_gap_resets_the_tracker():
    tracker = Tracker(TrackingSection(max_gap_s=1.0))
    actor = [Actor((10, 0), (5, 0))]
    before = tracker.update(observe(actor, 0.0, RigidTransform.identity()), None)
    after = tracker.update(observe(actor, 2.0, RigidTransform.identity()), None)
    assert after.reset and after.ended == before.track_ids and after.track_ids != before.track_ids


def test_empty_frames_pass_through():
    tracker = Tracker()
    empty = tracker.update(Detections3D.empty(T0, 'base_link'), None)
    assert len(empty) == 0 and empty.num_detections == 0 and empty.velocities.shape == (0, 2)
    assert empty.centers.shape == (0, 3) and not empty.ended
    actor = [Actor((10, 0), (5, 0))]
    tracked = tracker.update(observe(actor, DT, RigidTransform.identity()), None)
    assert tracked.track_ids == ('t0',)
    flags = FlagFilter()
    assert flags.update((), ()) == ()


def test_a_detection_with_a_non_finite_centre_is_untracked():
    tracker = Tracker()
    detections = observe([Actor((10, 0), (5, 0)), Actor((20, 0), (5, 0))], 0.0, RigidTransform.identity())
    centers = detections.centers.copy()
    centers[1, 0] = np.nan
    detections = Detections3D(detections.stamp_ns, 'base_link', centers, detections.sizes, detections.yaws,
                              detections.velocities, detections.labels, detections.scores)
    tracked = tracker.update(detections, None)
    assert tracked.track_ids == ('t0', '') and np.isnan(tracked.velocities[1]).all()
    assert FlagFilter().update(tracked.track_ids, [('only_lidar',), ('only_lidar',)]) == ((), ())


def test_an_invalid_base_to_fixed_is_rejected():
    with pytest.raises(ValueError, match='not a 4x4 rigid transform'):
        Tracker().update(Detections3D.empty(T0, 'base_link'), np.eye(3))


# --- FlagFilter ---------------------------------------------------------------------------------------


def feed(pattern: str, flag: str = 'missing_in_camera', config: TrackingSection = TrackingSection()) -> list[bool]:
    """Raised-or-not per frame for one track whose raw flag follows ``pattern`` ('x' present, '.' absent)."""
    flags = FlagFilter(config)
    return [flag in flags.update(['t0'], [(flag,) if c == 'x' else ()])[0] for c in pattern]


def test_a_single_frame_glitch_never_raises_a_flag():
    assert not any(feed('x.........'))
    assert not any(feed('..x..x..x..x..x'))  # repeated, but never twice in three frames


def test_a_flag_present_in_two_of_three_frames_raises_on_its_second_frame():
    assert feed('x.x') == [False, False, True]
    assert feed('xx') == [False, True]
    assert feed('.x.x') == [False, False, False, True]


def test_a_raised_flag_clears_after_two_clean_frames():
    assert feed('xx.x..x') == [False, True, True, True, True, False, False]
    assert feed('xxx..', config=TrackingSection(clear_frames=1)) == [False, True, True, False, False]


def test_a_fault_is_raised_within_three_frames_at_90_percent_raw_recall():
    rng = np.random.default_rng(0)
    trials = 2000
    raised = 0
    for _ in range(trials):
        pattern = ''.join('x' if rng.random() < 0.9 else '.' for _ in range(3))
        raised += any(feed(pattern))
    assert raised / trials >= 0.95


def test_filtered_score_and_frames_since_raised():
    flags = FlagFilter()
    scores = [{'only_lidar': 0.6}, {}, {'only_lidar': 0.9}]
    for s in scores:
        flags.update(['t3'], [tuple(s)], [s])
    assert flags.score('t3', 'only_lidar') == pytest.approx(0.5)
    assert flags.frames_since_raised('t3', 'only_lidar') == 0
    flags.update(['t3'], [('only_lidar',)])  # no score given: counts 1
    assert flags.frames_since_raised('t3', 'only_lidar') == 1
    assert flags.score('t3', 'only_lidar') == pytest.approx((0 + 0.9 + 1) / 3)
    assert flags.frames_since_raised('t3', 'missing_in_radar') is None and flags.score('t9', 'x') == 0.0


def test_flags_follow_the_track_when_row_order_changes():
    actors = [Actor((10, 0), (5, 0)), Actor((20, 6), (-3, 0)), Actor((30, -6), (2, 1))]
    tracker, flags = Tracker(), FlagFilter()
    rng = np.random.default_rng(5)
    for k in range(8):
        order = rng.permutation(3)
        pose = ego_pose(k * DT)
        tracked = tracker.update(observe([actors[i] for i in order], k * DT, pose, rng), pose.matrix)
        raw = [('missing_in_radar',) if i == 1 else () for i in order]
        filtered = flags.update(tracked.detection_track_ids, raw)
        expected = [('missing_in_radar',) if i == 1 and k >= 1 else () for i in order]
        assert list(filtered) == expected, f'frame {k}'


def test_rows_of_one_track_are_merged_and_a_coasting_track_holds_its_flags():
    flags = FlagFilter()
    flags.update(['t1', 't1'], [('only_radar',), ()], [{'only_radar': 0.4}, {}])
    assert flags.update(['t1', 't1'], [(), ('only_radar',)]) == (('only_radar',), ('only_radar',))
    for _ in range(3):  # t1 coasts: not passed, neither cleared nor forgotten (max_missed 3)
        flags.update(['t2'], [()])
    assert flags.update(['t1'], [()]) == (('only_radar',),)


def test_forgotten_and_stale_tracks_lose_their_flags():
    flags = FlagFilter(TrackingSection(max_missed=1))
    flags.update(['t1', 't2'], [('only_radar',)] * 2)
    flags.update(['t1', 't2'], [('only_radar',)] * 2)
    flags.forget(['t1'])
    assert flags.frames_since_raised('t1', 'only_radar') is None
    assert flags.frames_since_raised('t2', 'only_radar') == 0
    flags.update([], [])
    flags.update([], [])
    flags.update([], [])  # three frames without t2 > max_missed + 1
    assert flags.update(['t2'], [()]) == ((),)


def test_flag_filter_rejects_mismatched_rows():
    with pytest.raises(ValueError, match='2 track ids but 1 flag rows'):
        FlagFilter().update(['t1', 't2'], [()])
    with pytest.raises(ValueError, match='and 1 score rows'):
        FlagFilter().update(['t1', 't2'], [(), ()], [{}])
    with pytest.raises(ValueError, match="'only_lidar' has score nan"):
        FlagFilter().update(['t1'], [('only_lidar',)], [{'only_lidar': float('nan')}])


# --- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('key, value, message', [
    ('max_missed', -1, 'max_missed: must be an integer >= 0'),
    ('min_hits', 0, 'min_hits: must be an integer >= 1'),
    ('window', 0, 'window: must be an integer >= 1'),
    ('clear_frames', 0, 'clear_frames: must be an integer >= 1'),
    ('raise_frames', 4, r'raise_frames: 4 can not exceed window \(3\)'),
    ('gate_min_m', 0.0, 'gate_min_m: must be positive'),
    ('position_noise_m', -0.1, 'position_noise_m: must be positive'),
    ('max_gap_s', 0.0, 'max_gap_s: must be positive'),
    ('gate_length_fraction', -0.5, 'gate_length_fraction: must be >= 0'),
    ('class_mismatch_penalty_m', -1.0, 'class_mismatch_penalty_m: must be >= 0'),
    ('doppler_noise_mps', 0.0, 'doppler_noise_mps: must be positive'),
    ('doppler_gate_sigmas', -1.0, 'doppler_gate_sigmas: must be >= 0'),
    ('doppler_gate_hits', 0, 'doppler_gate_hits: must be an integer >= 1'),
])
def test_tracking_section_names_the_invalid_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        TrackingSection(**{key: value})


def test_tracking_section_loads_from_parameters():
    lidar = {'modality': 'lidar', 'topic': '/points', 'type': 'sensor_msgs/msg/PointCloud2'}
    config = config_from_dict(FusionConfig, {'sensors': {'lidar': lidar}, 'tracking': {'window': 4, 'raise_frames': 3}})
    assert config.tracking == TrackingSection(window=4, raise_frames=3)
    with pytest.raises(ConfigError, match=r'^tracking\.raise_frames: 5 can not exceed window'):
        config_from_dict(FusionConfig, {'sensors': {'lidar': lidar}, 'tracking': {'raise_frames': 5}})
    with pytest.raises(ConfigError, match=r'^tracking\.window: expected an integer'):
        config_from_dict(FusionConfig, {'sensors': {'lidar': lidar}, 'tracking': {'window': 2.5}})
