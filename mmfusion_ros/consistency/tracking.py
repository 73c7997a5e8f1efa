"""Objects followed across frames, and the temporal filter that confirms their flags.

A disagreement flag from one frame is noisy: one missed camera detection, one empty radar scan. The
consistency stage therefore raises a flag only when it persists on the same *object* over a few
frames, and clears it when it stops. That needs objects associated across frames:

- ``Tracker``: a small multi-object tracker. Detections arrive in the vehicle (base) frame; the
  vehicle moves, so every track lives in a world-fixed frame (``base_to_fixed``). Each frame it
  predicts every track to the new stamp (constant velocity), associates detections to tracks by
  centre distance within a per-track gate (Hungarian when scipy is installed, greedy otherwise),
  updates the matched tracks, coasts the others and starts tracks for what is left. Each track's
  velocity is a constant-velocity Kalman filter on its centre that also takes the network's
  velocity as a measurement, so the output velocity blends motion over time with the network's
  single-frame estimate, each weighted by its noise. Where the radar measured the object's doppler,
  that radial ground speed is a third measurement (``H = [0, 0, los_x, los_y]``). A young track
  (fewer than ``doppler_gate_hits`` detections) takes it as it is: its velocity is the network's
  single-frame guess, whose errors are heavy-tailed (a car that just appeared at 13.7 m/s was called
  5.5: no Gaussian gate around that guess admits the truth), and nothing established yet to check
  the doppler against. From then on the doppler is taken only within ``doppler_gate_sigmas`` of what
  the track predicts along the line of sight: an established track whose motion over frames
  disagrees gates it out, and the disagreement stays for the consistency check to flag.
- ``FlagFilter``: per (track, flag) persistence: raised when present in ``raise_frames`` of the
  track's last ``window`` frames, cleared after ``clear_frames`` consecutive frames without it.

Why 2 of 3 by default: a flag that is present on a single frame never reaches two presences in any
window of three, so a one-frame glitch can not raise it; a real fault is raised on its second raw
flag. With per-frame raw recall ``p`` the flag is raised within 3 frames of the fault's start with
probability ``p**3 + 3 p**2 (1 - p)``: 0.972 at ``p = 0.9`` and >= 0.95 for ``p >= 0.865``, which
meets the 0.95-within-3-frames target where 3 of 3 (0.729 at ``p = 0.9``) would not.

Typical use, once per frame::

    tracked = tracker.update(detections, base_to_fixed)
    flag_filter.forget(tracked.ended)
    flags = flag_filter.update(tracked.detection_track_ids, raw_flags)

Conventions: ``velocities`` of detections are over the ground, expressed in the base frame's axes
(what the network and the simulator's ground truth give), so they are rotated, never compensated
for ego motion. Track ids are ``'t<n>'``, never reused within one ``Tracker``, not even after a reset.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..config import TrackingSection
from ..types import NS_PER_S, Detections3D, RigidTransform

try:  # scipy is optional: without it association is greedy by cost, which is what it finds in most frames
    from scipy.optimize import linear_sum_assignment
except ImportError:  # pragma: no cover - depends on the environment
    linear_sum_assignment = None

__all__ = ['FlagFilter', 'TrackedFrame', 'Tracker']

# A detection whose centre lies within this share of the wider box's width of a detection already
# assigned this frame overlaps it heavily: a second detection of the same object, not a new one.
DUPLICATE_WIDTH_FRACTION = 0.5
_GATE_SIGMAS = 2.0  # the gate also grows by this many std of the track's predicted position
_INFEASIBLE = 1e9  # the cost of a gated-out pair in the assignment matrix


@dataclass(frozen=True, eq=False)
class TrackedFrame:
    """Every live track at one stamp: the input detections' rows first, in order, then coasting tracks.

    Rows ``[0, num_detections)`` are the input detections; rows after that are the tracks not seen
    this frame (``predicted`` True), placed where their velocity predicts them. All positions and
    velocities are in the detections' (base) frame.
    """

    stamp_ns: int
    frame_id: str
    num_detections: int  # N input rows; M = len(self) - N coasting tracks follow
    track_ids: tuple[str, ...]  # (N + M,) 't<n>'; '' for a detection that can not be tracked (non-finite centre)
    labels: tuple[str, ...]  # (N + M,) the track's majority class (a detection's own label may differ)
    ages: np.ndarray  # (N + M,) int32 frames since the track began, 1 on its first
    hits: np.ndarray  # (N + M,) int32 frames the track was detected
    missed: np.ndarray  # (N + M,) int32 consecutive frames without a detection (0 for detection rows)
    confirmed: np.ndarray  # (N + M,) bool hits reached min_hits
    predicted: np.ndarray  # (N + M,) bool the row is a prediction (coasting), not a detection
    duplicate: np.ndarray  # (N + M,) bool a second detection of a track matched this frame (the track ignored it)
    centers: np.ndarray  # (N + M, 3) float64 detected centre, or the predicted one for coasting rows
    sizes: np.ndarray  # (N + M, 3) float64 length, width, height
    yaws: np.ndarray  # (N + M,) float64
    velocities: np.ndarray  # (N + M, 2) float64 smoothed vx, vy over the ground, m/s; NaN: not yet known
    doppler_used: np.ndarray  # (N + M,) bool the row's doppler passed the gate into its track's velocity
    ended: tuple[str, ...] = ()  # tracks that ended at this frame (all of them on a reset)
    reset: bool = False  # the tracker started afresh at this frame (time went backwards or jumped)

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def detection_track_ids(self) -> tuple[str, ...]:
        """The track id of each input detection, in input order."""
        return self.track_ids[:self.num_detections]


@dataclass(eq=False)
class _Tracks:
    """The tracker's state, one row per live track, in the fixed frame."""

    ids: list[str] = field(default_factory=list)
    majority: list[str] = field(default_factory=list)  # the class reported for the track
    votes: list[dict[str, int]] = field(default_factory=list)  # class histogram of its detections
    state: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (M, 4) x, y, vx, vy
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))  # (M, 4, 4)
    z: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) last detected centre height
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (M, 3) last detected size
    yaws: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) last detected yaw, fixed frame
    ages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    missed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    velocity_known: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # measured, or two hits

    def __len__(self) -> int:
        return len(self.ids)

    def keep(self, mask: np.ndarray) -> None:
        self.ids = [v for v, k in zip(self.ids, mask) if k]
        self.majority = [v for v, k in zip(self.majority, mask) if k]
        self.votes = [v for v, k in zip(self.votes, mask) if k]
        for name in ('state', 'covariance', 'z', 'sizes', 'yaws', 'ages', 'hits', 'missed', 'velocity_known'):
            setattr(self, name, getattr(self, name)[mask])


class Tracker:
    """Multi-object tracker in a world-fixed frame; see the module docstring."""

    def __init__(self, config: TrackingSection = TrackingSection()) -> None:
        self.config = config
        self._tracks = _Tracks()
        self._last_stamp: int | None = None
        self._next_id = 0

    def reset(self, restart_ids: bool = False) -> tuple[str, ...]:
        """Forget every track; returns the ids that ended. Ids keep counting (a consumer that saw t7
        before time jumped must not see another t7), unless ``restart_ids``: a new run from scratch,
        whose ids then equal any other run's over the same input."""
        ended = tuple(self._tracks.ids)
        self._tracks = _Tracks()
        self._last_stamp = None
        if restart_ids:
            self._next_id = 0
        return ended

    def update(self, detections: Detections3D, base_to_fixed: np.ndarray | None = None,
               doppler: tuple[np.ndarray, np.ndarray] | None = None) -> TrackedFrame:
        """Associate ``detections`` (base frame, at ``detections.stamp_ns``) with the tracks.

        ``base_to_fixed`` (4, 4) maps base points into the fixed frame at the detections' stamp;
        None treats the base frame as fixed (a parked vehicle, or detections already in a fixed frame).
        ``doppler``: per detection, the radar's radial ground speed (N,) in m/s (NaN: none) and its
        line of sight (N, 2), a unit vector in the base frame's axes.
        """
        cfg = self.config
        pose = RigidTransform.identity() if base_to_fixed is None else RigidTransform.from_matrix(base_to_fixed)
        stamp = int(detections.stamp_ns)
        N = len(detections)

        ended: list[str] = []
        reset = False
        dt = 0.0
        if self._last_stamp is not None:
            dt = (stamp - self._last_stamp) / NS_PER_S
            if dt < 0 or dt > cfg.max_gap_s:  # a looped bag, a seek, a long outage: old tracks mean nothing
                ended.extend(self.reset())
                reset, dt = True, 0.0
        self._last_stamp = stamp

        tracks = self._tracks
        self._predict(dt)

        # Detections in the fixed frame; velocities over the ground are only rotated.
        centers = pose.apply(detections.centers) if N else np.zeros((0, 3))  # (N, 3)
        net_velocity = detections.velocities @ pose.rotation[:2, :2].T  # (N, 2), NaN rows stay NaN
        yaws = detections.yaws + np.arctan2(pose.rotation[1, 0], pose.rotation[0, 0])
        finite = np.isfinite(centers).all(axis=1)
        rows = np.flatnonzero(finite)

        row_track = np.full(N, -1)  # (N,) index into tracks after this frame, -1 untracked
        duplicate = np.zeros(N, bool)
        pairs = self._associate(centers[rows], detections.sizes[rows], [detections.labels[i] for i in rows], dt)
        matched_tracks = np.zeros(len(tracks), bool)
        for r, t in pairs:
            row_track[rows[r]] = t
            matched_tracks[t] = True

        radial = np.full(N, np.nan)
        line_of_sight = np.zeros((N, 2))
        if doppler is not None:
            radial[:] = np.asarray(doppler[0], np.float64).reshape(N)
            line_of_sight = np.asarray(doppler[1], np.float64).reshape(N, 2) @ pose.rotation[:2, :2].T
        doppler_used = np.zeros(N, bool)

        # Update matched tracks.
        if pairs:
            det = np.array([rows[r] for r, _ in pairs])
            trk = np.array([t for _, t in pairs])
            self._correct(trk, centers[det, :2], net_velocity[det])
            doppler_used[det] = self._correct_radial(trk, radial[det], line_of_sight[det],
                                                     tracks.hits[trk] + 1 >= cfg.doppler_gate_hits)
            tracks.z[trk] = centers[det, 2]
            tracks.sizes[trk] = detections.sizes[det]
            tracks.yaws[trk] = yaws[det]
            tracks.hits[trk] += 1
            tracks.missed[trk] = 0
            tracks.velocity_known[trk] |= np.isfinite(net_velocity[det]).all(axis=1) | (tracks.hits[trk] >= 2)
            for i, t in zip(det, trk):
                self._vote(t, detections.labels[i])
        tracks.missed[~matched_tracks] += 1

        # What is left: a second detection of an object assigned this frame, or a new object.
        claimed = [i for i in rows if row_track[i] >= 0]
        for i in sorted((i for i in rows if row_track[i] < 0), key=lambda i: -detections.scores[i]):
            twin = self._twin(i, claimed, centers, detections.sizes)
            if twin is not None:
                row_track[i] = row_track[twin]
                duplicate[i] = True
            else:
                row_track[i] = self._birth(centers[i], detections.sizes[i], yaws[i], net_velocity[i],
                                           detections.labels[i])
                doppler_used[i] = self._correct_radial(np.array([row_track[i]]), radial[i:i + 1],
                                                       line_of_sight[i:i + 1],
                                                       np.array([cfg.doppler_gate_hits <= 1]))[0]
            claimed.append(i)

        # End tracks: unconfirmed ones on their first miss (clutter), confirmed ones after max_missed.
        seen = np.concatenate([matched_tracks, np.ones(len(tracks) - len(matched_tracks), bool)])  # + births
        confirmed = tracks.hits >= cfg.min_hits
        alive = seen | (confirmed & (tracks.missed <= cfg.max_missed))
        ended.extend(tid for tid, a in zip(tracks.ids, alive) if not a)
        remap = np.cumsum(alive) - 1  # old track index -> index after removal
        row_track = np.where(row_track >= 0, remap[np.maximum(row_track, 0)], -1)
        coasting = remap[np.flatnonzero(alive & ~seen)]
        tracks.keep(alive)
        tracks.ages += 1
        return self._tracked_frame(detections, pose, row_track, duplicate, doppler_used, coasting, tuple(ended), reset)

    # --- filter -----------------------------------------------------------------------------------

    def _predict(self, dt: float) -> None:
        """Constant velocity to the new stamp; white acceleration noise grows the covariance."""
        tracks = self._tracks
        if not len(tracks) or dt == 0:
            return
        F = np.eye(4)
        F[0, 2] = F[1, 3] = dt
        q = self.config.acceleration_noise_mps2 ** 2
        Q = np.zeros((4, 4))
        Q[[0, 1], [0, 1]] = q * dt ** 4 / 4
        Q[[0, 1, 2, 3], [2, 3, 0, 1]] = q * dt ** 3 / 2
        Q[[2, 3], [2, 3]] = q * dt ** 2
        tracks.state = tracks.state @ F.T  # (M, 4)
        tracks.covariance = F @ tracks.covariance @ F.T + Q  # (M, 4, 4)

    def _correct(self, trk: np.ndarray, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Kalman update of tracks ``trk`` with detected positions (K, 2) and network velocities (K, 2)."""
        tracks = self._tracks
        x, P = tracks.state[trk], tracks.covariance[trk]  # (K, 4), (K, 4, 4)
        x, P = _measure(x, P, slice(0, 2), positions, self.config.position_noise_m ** 2)
        has_velocity = np.isfinite(velocities).all(axis=1)
        if has_velocity.any():
            x[has_velocity], P[has_velocity] = _measure(x[has_velocity], P[has_velocity], slice(2, 4),
                                                        velocities[has_velocity],
                                                        self.config.network_velocity_noise_mps ** 2)
        tracks.state[trk], tracks.covariance[trk] = x, P

    def _correct_radial(self, trk: np.ndarray, radial: np.ndarray, line_of_sight: np.ndarray,
                        gated: np.ndarray) -> np.ndarray:
        """Kalman update of tracks ``trk`` (K,) with radial ground speeds (K,) along unit lines of sight
        (K, 2), fixed frame; those ``gated`` (K,) only within the gate. Returns (K,) bool: which were taken."""
        cfg, tracks = self.config, self._tracks
        taken = np.isfinite(radial) & np.isfinite(line_of_sight).all(axis=1) & (cfg.doppler_gate_sigmas > 0)
        if not taken.any():
            return taken
        rows = np.flatnonzero(taken)
        t = trk[rows]
        x, P = tracks.state[t], tracks.covariance[t]  # (K, 4), (K, 4, 4)
        H = np.zeros((len(t), 4))
        H[:, 2:] = line_of_sight[rows]
        innovation = radial[rows] - np.sum(H * x, axis=1)  # (K,)
        S = np.einsum('ki,kij,kj->k', H, P, H) + cfg.doppler_noise_mps ** 2  # (K,)
        inside = ~gated[rows] | (innovation ** 2 <= cfg.doppler_gate_sigmas ** 2 * S)
        taken[rows[~inside]] = False
        if inside.any():
            gain = np.einsum('kij,kj->ki', P[inside], H[inside]) / S[inside, None]  # (K', 4)
            x[inside] += gain * innovation[inside, None]
            P[inside] -= gain[:, :, None] * np.einsum('kj,kjl->kl', H[inside], P[inside])[:, None, :]
            # Velocity stays unknown where it was: the doppler gives one component of it.
            tracks.state[t], tracks.covariance[t] = x, 0.5 * (P + P.transpose(0, 2, 1))
        return taken

    # --- association ------------------------------------------------------------------------------

    def _associate(self, centers: np.ndarray, sizes: np.ndarray, labels: Sequence[str],
                   dt: float) -> list[tuple[int, int]]:
        """(row of ``centers``, track) pairs: least total cost, every pair within its track's gate."""
        cfg, tracks = self.config, self._tracks
        K, M = len(centers), len(tracks)
        if K == 0 or M == 0:
            return []
        distance = np.linalg.norm(centers[:, None, :2] - tracks.state[None, :, :2], axis=2)  # (K, M)
        speed = np.linalg.norm(tracks.state[:, 2:], axis=1)  # (M,)
        sigma = np.sqrt(0.5 * (tracks.covariance[:, 0, 0] + tracks.covariance[:, 1, 1]))  # (M,)
        length = np.maximum(sizes[:, None, 0], tracks.sizes[None, :, 0])  # (K, M)
        gate = (np.maximum(cfg.gate_min_m, cfg.gate_length_fraction * length)
                + cfg.gate_speed_fraction * speed[None, :] * dt + _GATE_SIGMAS * sigma[None, :])
        mismatch = np.array([[label != majority for majority in tracks.majority] for label in labels])
        cost = np.where(distance <= gate, distance + cfg.class_mismatch_penalty_m * mismatch, _INFEASIBLE)
        if linear_sum_assignment is not None:
            rows, cols = linear_sum_assignment(cost)
            candidates = zip(rows.tolist(), cols.tolist())
        else:
            candidates = _greedy(cost)
        return [(r, t) for r, t in candidates if cost[r, t] < _INFEASIBLE]

    def _twin(self, i: int, claimed: Sequence[int], centers: np.ndarray, sizes: np.ndarray) -> int | None:
        """The assigned detection that ``i`` overlaps heavily, if any (the nearest)."""
        if not claimed:
            return None
        others = np.asarray(claimed)
        distance = np.linalg.norm(centers[others, :2] - centers[i, :2], axis=1)
        limit = DUPLICATE_WIDTH_FRACTION * np.maximum(sizes[others, 1], sizes[i, 1])
        inside = distance < limit
        return int(others[inside][np.argmin(distance[inside])]) if inside.any() else None

    # --- track life -------------------------------------------------------------------------------

    def _birth(self, center: np.ndarray, size: np.ndarray, yaw: float, velocity: np.ndarray, label: str) -> int:
        cfg, tracks = self.config, self._tracks
        known = bool(np.isfinite(velocity).all())
        v_std = cfg.network_velocity_noise_mps if known else cfg.unknown_velocity_noise_mps
        state = np.array([center[0], center[1], *(velocity if known else (0.0, 0.0))])
        covariance = np.diag([cfg.position_noise_m ** 2] * 2 + [v_std ** 2] * 2)
        tracks.ids.append(f't{self._next_id}')
        self._next_id += 1
        tracks.majority.append(label)
        tracks.votes.append({label: 1})
        tracks.state = np.vstack([tracks.state, state[None]])
        tracks.covariance = np.concatenate([tracks.covariance, covariance[None]])
        tracks.z = np.append(tracks.z, center[2])
        tracks.sizes = np.vstack([tracks.sizes, size[None]])
        tracks.yaws = np.append(tracks.yaws, yaw)
        tracks.ages = np.append(tracks.ages, np.int32(0))  # counted up with every track at the frame's end
        tracks.hits = np.append(tracks.hits, np.int32(1))
        tracks.missed = np.append(tracks.missed, np.int32(0))
        tracks.velocity_known = np.append(tracks.velocity_known, known)
        return len(tracks) - 1

    def _vote(self, t: int, label: str) -> None:
        """Count one class vote; the majority changes only when another class has strictly more."""
        votes = self._tracks.votes[t]
        votes[label] = votes.get(label, 0) + 1
        if votes[label] > votes[self._tracks.majority[t]]:
            self._tracks.majority[t] = label

    def _tracked_frame(self, detections: Detections3D, pose: RigidTransform, row_track: np.ndarray,
                       duplicate: np.ndarray, doppler_used: np.ndarray, coasting: np.ndarray,
                       ended: tuple[str, ...], reset: bool) -> TrackedFrame:
        tracks = self._tracks
        N, M = len(detections), len(coasting)
        tracked = row_track >= 0
        idx = np.concatenate([np.maximum(row_track, 0), coasting]).astype(int)  # (N + M,) track per row
        valid = np.concatenate([tracked, np.ones(M, bool)])
        to_base = pose.inverse()
        fixed_to_base_yaw = np.arctan2(to_base.rotation[1, 0], to_base.rotation[0, 0])

        velocity = tracks.state[idx, 2:] @ to_base.rotation[:2, :2].T if len(tracks) else np.zeros((len(idx), 2))
        known = tracks.velocity_known[idx] if len(tracks) else np.zeros(len(idx), bool)
        velocity = np.where((valid & known)[:, None], velocity, np.nan)

        centers, sizes, yaws = detections.centers, detections.sizes, detections.yaws
        if M:
            coast_fixed = np.column_stack([tracks.state[coasting, :2], tracks.z[coasting]])
            centers = np.vstack([centers, to_base.apply(coast_fixed)])
            sizes = np.vstack([sizes, tracks.sizes[coasting]])
            yaws = np.concatenate([yaws, np.angle(np.exp(1j * (tracks.yaws[coasting] + fixed_to_base_yaw)))])

        def per_row(values: np.ndarray, fill: object) -> np.ndarray:
            return np.where(valid, values[idx], fill) if len(tracks) else np.full(len(idx), fill)

        hits = per_row(tracks.hits, 0).astype(np.int32)
        return TrackedFrame(
            stamp_ns=int(detections.stamp_ns),
            frame_id=detections.frame_id,
            num_detections=N,
            track_ids=tuple(tracks.ids[t] if v else '' for t, v in zip(idx, valid)),
            labels=tuple(tracks.majority[t] if v else detections.labels[r] for r, (t, v) in enumerate(zip(idx, valid))),
            ages=per_row(tracks.ages, 0).astype(np.int32),
            hits=hits,
            missed=per_row(tracks.missed, 0).astype(np.int32),
            confirmed=hits >= self.config.min_hits,
            predicted=np.concatenate([np.zeros(N, bool), np.ones(M, bool)]),
            duplicate=np.concatenate([duplicate, np.zeros(M, bool)]),
            centers=np.asarray(centers, np.float64).reshape(-1, 3),
            sizes=np.asarray(sizes, np.float64).reshape(-1, 3),
            yaws=np.asarray(yaws, np.float64),
            velocities=velocity.reshape(-1, 2),
            doppler_used=np.concatenate([doppler_used, np.zeros(M, bool)]),
            ended=ended,
            reset=reset,
        )


def _measure(x: np.ndarray, P: np.ndarray, part: slice, z: np.ndarray, r2: float) -> tuple[np.ndarray, np.ndarray]:
    """Kalman update of states (K, 4) with a direct measurement (K, 2) of ``x[:, part]``, noise ``r2 * I``."""
    S = P[:, part, part] + r2 * np.eye(2)  # (K, 2, 2) innovation covariance
    gain = P[:, :, part] @ np.linalg.inv(S)  # (K, 4, 2)
    x = x + (gain @ (z - x[:, part])[:, :, None])[:, :, 0]
    P = P - gain @ P[:, part, :]
    return x, 0.5 * (P + P.transpose(0, 2, 1))


def _greedy(cost: np.ndarray) -> list[tuple[int, int]]:
    """Pairs by increasing cost, each row and column used once (the fallback without scipy)."""
    used_rows, used_cols, pairs = set(), set(), []
    for flat in np.argsort(cost, axis=None, kind='stable'):
        r, c = divmod(int(flat), cost.shape[1])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


@dataclass(eq=False)
class _FlagState:
    scores: deque[float]  # raw score per frame of the window (0 where absent)
    present: deque[bool]  # per frame of the window
    raised: bool = False
    clean: int = 0  # consecutive frames without the flag while raised
    raised_at: int = 0  # the track's update count when it was raised


@dataclass(eq=False)
class _TrackFlags:
    flags: dict[str, _FlagState] = field(default_factory=dict)
    updates: int = 0  # frames this track was passed to update
    last_frame: int = 0  # the filter's frame count when it last was


class FlagFilter:
    """Per (track, flag) persistence of raw per-frame flags; see the module docstring.

    A track's window counts only the frames it was passed in: a coasting track (no detection, so no
    evidence either way) holds its flags. Tracks not passed for more than ``max_missed + 1`` frames,
    or named in ``forget``, are dropped.
    """

    def __init__(self, config: TrackingSection = TrackingSection()) -> None:
        self.config = config
        self._tracks: dict[str, _TrackFlags] = {}
        self._frame = 0

    def update(self, track_ids: Sequence[str], raw_flags: Sequence[Sequence[str]],
               raw_scores: Sequence[Mapping[str, float]] | None = None) -> tuple[tuple[str, ...], ...]:
        """The filtered flags of each row (sorted by name), given this frame's raw flags per row.

        ``raw_scores`` gives each row's score per raw flag (a flag without one scores 1). Rows of one
        track (a duplicate detection) are merged: the union of their flags, the highest score. Rows
        with an empty track id are untracked and get no flags.
        """
        cfg = self.config
        if len(raw_flags) != len(track_ids) or (raw_scores is not None and len(raw_scores) != len(track_ids)):
            raise ValueError(f'FlagFilter.update: {len(track_ids)} track ids but {len(raw_flags)} flag rows'
                             + ('' if raw_scores is None else f' and {len(raw_scores)} score rows'))
        self._frame += 1
        merged: dict[str, dict[str, float]] = {}
        for row, (track_id, flags) in enumerate(zip(track_ids, raw_flags)):
            if not track_id:
                continue
            scores = merged.setdefault(track_id, {})
            for flag in flags:
                score = 1.0 if raw_scores is None else float(raw_scores[row].get(flag, 1.0))
                if not np.isfinite(score):
                    raise ValueError(f'FlagFilter.update: row {row} ({track_id}) flag {flag!r} has score {score}')
                scores[flag] = max(score, scores.get(flag, -np.inf))

        for track_id, scores in merged.items():
            track = self._tracks.setdefault(track_id, _TrackFlags())
            track.updates += 1
            track.last_frame = self._frame
            for flag in set(track.flags) | set(scores):
                state = track.flags.get(flag) or _FlagState(deque(maxlen=cfg.window), deque(maxlen=cfg.window))
                track.flags[flag] = state
                present = flag in scores
                state.scores.append(scores.get(flag, 0.0))
                state.present.append(present)
                if state.raised:
                    state.clean = 0 if present else state.clean + 1
                    state.raised = state.clean < cfg.clear_frames
                elif sum(state.present) >= cfg.raise_frames:
                    state.raised, state.clean, state.raised_at = True, 0, track.updates
                if not state.raised and not any(state.present):
                    del track.flags[flag]  # nothing left to remember

        stale = [t for t, track in self._tracks.items() if self._frame - track.last_frame > cfg.max_missed + 1]
        self.forget(stale)
        return tuple(self._raised(track_id) for track_id in track_ids)

    def _raised(self, track_id: str) -> tuple[str, ...]:
        track = self._tracks.get(track_id)
        return tuple(sorted(f for f, s in track.flags.items() if s.raised)) if track else ()

    def score(self, track_id: str, flag: str) -> float:
        """Mean raw score of ``flag`` over the track's window (absent frames count 0); 0 when unknown."""
        state = self._state(track_id, flag)
        return float(np.mean(state.scores)) if state is not None else 0.0

    def frames_since_raised(self, track_id: str, flag: str) -> int | None:
        """The track's frames since ``flag`` was raised (0 on the frame it was); None while not raised."""
        state = self._state(track_id, flag)
        if state is None or not state.raised:
            return None
        return self._tracks[track_id].updates - state.raised_at

    def forget(self, track_ids: Sequence[str]) -> None:
        """Drop the state of tracks that ended."""
        for track_id in track_ids:
            self._tracks.pop(track_id, None)

    def reset(self) -> None:
        self._tracks.clear()

    def _state(self, track_id: str, flag: str) -> _FlagState | None:
        track = self._tracks.get(track_id)
        return track.flags.get(flag) if track else None
