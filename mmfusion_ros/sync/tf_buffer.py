"""A time-aware transform tree: where each frame was, relative to its parent, at any buffered stamp.

Sensors fire at different instants while the car moves, so the lidar-to-camera transform of a frame
is not the static mounting chain: the lidar at its stamp and the camera at its stamp have to be
related through a frame the world stands still in (``map``, ``odom``). This buffer keeps, per edge of
the tree, a short time-sorted history of poses (like tf2's ``BufferCore``) and answers

- ``lookup(target, source, stamp)``: both frames at one stamp, and
- ``lookup_through(target, t_target, source, t_source, fixed)``: tf2's "advanced" lookup,
  ``target@t_target <- fixed <- source@t_source``.

Between two samples of an edge the pose is interpolated (translation linearly, rotation by slerp);
outside an edge's samples the lookup fails rather than extrapolates, except within an optional
tolerance, where the nearest sample is held. Static edges hold at every stamp.

A frame has one parent. Re-publishing a static edge replaces it (that is how a corrected
``/tf_static`` arrives); giving a frame a different parent on ``/tf``, mixing static and dynamic
samples for one frame, or closing a loop is a ``TransformError``: in a recording each means two
publishers disagree about the tree, and no choice between them would be safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mmfusion_ros.errors import TransformError
from mmfusion_ros.types import NS_PER_S, RigidTransform, TransformStamped

__all__ = [
    'DEFAULT_CACHE_NS',
    'TfBuffer',
]

DEFAULT_CACHE_NS = 10 * NS_PER_S

_INITIAL_CAPACITY = 16


class _EdgeHistory:
    """Time-sorted poses of one child in its parent, in preallocated arrays.

    Valid samples are rows ``[lo, hi)``; appending in time order (the usual case) writes at ``hi``,
    pruning only advances ``lo``, and the arrays are compacted or grown when ``hi`` reaches the end.
    """

    __slots__ = ('parent', 'stamps', 'translations', 'quaternions', 'lo', 'hi')

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.stamps = np.empty(_INITIAL_CAPACITY, np.int64)
        self.translations = np.empty((_INITIAL_CAPACITY, 3), np.float64)
        self.quaternions = np.empty((_INITIAL_CAPACITY, 4), np.float64)  # x, y, z, w
        self.lo = 0
        self.hi = 0

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def first(self) -> int:
        return int(self.stamps[self.lo])

    @property
    def last(self) -> int:
        return int(self.stamps[self.hi - 1])

    def insert(self, stamp: int, translation: np.ndarray, quaternion: np.ndarray) -> None:
        lo, hi = self.lo, self.hi
        if hi > lo and stamp <= self.stamps[hi - 1]:
            pos = lo + int(np.searchsorted(self.stamps[lo:hi], stamp, side='left'))
            if pos < hi and self.stamps[pos] == stamp:  # same stamp again: the newer sample wins
                self.translations[pos] = translation
                self.quaternions[pos] = quaternion
                return
        else:
            pos = hi
        if hi == len(self.stamps):
            self._make_room()  # moves row lo to row 0
            pos -= lo
            lo, hi = self.lo, self.hi
        if pos < hi:  # out of order: shift the later samples one row (numpy handles the overlap)
            self.stamps[pos + 1:hi + 1] = self.stamps[pos:hi]
            self.translations[pos + 1:hi + 1] = self.translations[pos:hi]
            self.quaternions[pos + 1:hi + 1] = self.quaternions[pos:hi]
        self.stamps[pos] = stamp
        self.translations[pos] = translation
        self.quaternions[pos] = quaternion
        self.hi = hi + 1

    def prune(self, oldest: int) -> None:
        """Drop samples older than ``oldest``, always keeping the newest one."""
        keep_from = self.lo + int(np.searchsorted(self.stamps[self.lo:self.hi], oldest, side='left'))
        self.lo = min(keep_from, self.hi - 1)

    def _make_room(self) -> None:
        """Compact to the start, doubling the capacity when more than half is in use."""
        count = len(self)
        capacity = len(self.stamps) * 2 if count * 2 > len(self.stamps) else len(self.stamps)
        for name in ('stamps', 'translations', 'quaternions'):
            old = getattr(self, name)
            new = np.empty((capacity, *old.shape[1:]), old.dtype)
            new[:count] = old[self.lo:self.hi]
            setattr(self, name, new)
        self.lo, self.hi = 0, count

    def at(self, stamp: int, tolerance: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Translation and rotation matrix at ``stamp``, or None outside the samples (+ tolerance).

        Reads views of the arrays: nothing is copied but the two bracketing rows.
        """
        stamps = self.stamps[self.lo:self.hi]
        first, last = int(stamps[0]), int(stamps[-1])
        if stamp < first - tolerance or stamp > last + tolerance:
            return None
        if stamp <= first:
            return self._row(self.lo)
        if stamp >= last:
            return self._row(self.hi - 1)
        right = int(np.searchsorted(stamps, stamp, side='left'))
        if int(stamps[right]) == stamp:
            return self._row(self.lo + right)
        i0, i1 = self.lo + right - 1, self.lo + right
        t0, t1 = int(self.stamps[i0]), int(self.stamps[i1])
        ratio = (stamp - t0) / (t1 - t0)
        translation = self.translations[i0] + ratio * (self.translations[i1] - self.translations[i0])
        quaternion = _slerp(self.quaternions[i0], self.quaternions[i1], ratio)
        return translation, _rotation_matrix(quaternion)

    def _row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.translations[index].copy(), _rotation_matrix(self.quaternions[index])


@dataclass(frozen=True)
class _StaticEdge:
    parent: str
    rotation: np.ndarray
    translation: np.ndarray


class TfBuffer:
    """Static and dynamic transforms by frame, queried at a stamp. Not thread-safe.

    ``cache_ns`` is how much history each dynamic edge keeps, counted back from its newest sample.
    """

    def __init__(self, cache_ns: int = DEFAULT_CACHE_NS) -> None:
        if int(cache_ns) < 0:
            raise TransformError(f'TfBuffer: cache_ns must be >= 0, got {cache_ns}')
        self.cache_ns = int(cache_ns)
        self._static: dict[str, _StaticEdge] = {}
        self._dynamic: dict[str, _EdgeHistory] = {}
        self._dropped_old = 0

    # -- filling -------------------------------------------------------------------------------

    def add(self, transform: TransformStamped) -> None:
        """Store one edge sample; static samples are kept forever, dynamic ones for ``cache_ns``."""
        child, parent = transform.child_frame, transform.parent_frame
        known_parent = self._parent(child)
        if transform.static:
            if child in self._dynamic:
                raise TransformError(f'static transform {parent!r} -> {child!r}: frame {child!r} '
                                     f'already has dynamic transforms from {known_parent!r} (/tf); '
                                     'a frame is either static or dynamic')
        elif child in self._static:
            raise TransformError(f'dynamic transform {parent!r} -> {child!r}: frame {child!r} already '
                                 f'has a static transform from {known_parent!r} (/tf_static); a '
                                 'frame is either static or dynamic')
        elif known_parent is not None and known_parent != parent:
            raise TransformError(f'transform {parent!r} -> {child!r}: frame {child!r} already has '
                                 f'parent {known_parent!r}; a frame has one parent')
        if known_parent != parent:
            self._check_no_loop(parent, child)
        rigid = transform.transform
        if transform.static:
            self._static[child] = _StaticEdge(parent, rigid.rotation, rigid.translation)
            return
        history = self._dynamic.get(child)
        if history is None:
            history = self._dynamic[child] = _EdgeHistory(parent)
        elif transform.stamp_ns < history.last - self.cache_ns:
            self._dropped_old += 1  # older than the cache window: it would be pruned at once
            return
        history.insert(int(transform.stamp_ns), rigid.translation, rigid.as_quaternion())
        history.prune(history.last - self.cache_ns)

    def add_many(self, transforms: Iterable[TransformStamped]) -> None:
        for transform in transforms:
            self.add(transform)

    def clear(self) -> None:
        self._static.clear()
        self._dynamic.clear()
        self._dropped_old = 0

    def clear_dynamic(self) -> None:
        """Forget the /tf history, keep the static tree (time jumped back: a looped recording)."""
        self._dynamic.clear()

    @property
    def dropped_old(self) -> int:
        """Dynamic samples ignored because they were older than their edge's cache window."""
        return self._dropped_old

    # -- queries -------------------------------------------------------------------------------

    def frames(self) -> list[str]:
        """Every frame named by a stored edge, sorted."""
        names = set(self._static) | set(self._dynamic)
        names.update(edge.parent for edge in self._static.values())
        names.update(edge.parent for edge in self._dynamic.values())
        return sorted(names)

    def time_range(self, child_frame: str) -> tuple[int, int] | None:
        """First and last buffered stamp of ``child_frame``'s dynamic edge (None if static/unknown)."""
        history = self._dynamic.get(child_frame)
        return (history.first, history.last) if history is not None else None

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int, *,
               extrapolation_ns: int = 0) -> RigidTransform:
        """The transform taking points of ``source_frame`` into ``target_frame`` at ``stamp_ns``.

        ``extrapolation_ns`` accepts stamps that far outside an edge's samples, holding the nearest
        sample; beyond it a ``TransformError`` names the edge and its buffered range.
        """
        rotation, translation = self._lookup(target_frame, source_frame, int(stamp_ns),
                                             int(extrapolation_ns))
        return RigidTransform(rotation, translation)

    def lookup_through(self, target_frame: str, target_stamp_ns: int, source_frame: str,
                       source_stamp_ns: int, fixed_frame: str, *,
                       extrapolation_ns: int = 0) -> RigidTransform:
        """Points of ``source_frame`` at ``source_stamp_ns`` into ``target_frame`` at
        ``target_stamp_ns``, going through ``fixed_frame``, which is assumed not to move between
        the two stamps (a world frame such as ``map`` or ``odom``).
        """
        tolerance = int(extrapolation_ns)
        r_src, t_src = self._lookup(fixed_frame, source_frame, int(source_stamp_ns), tolerance)
        r_tgt, t_tgt = self._lookup(target_frame, fixed_frame, int(target_stamp_ns), tolerance)
        return RigidTransform(r_tgt @ r_src, r_tgt @ t_src + t_tgt)

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int, *,
                      extrapolation_ns: int = 0) -> bool:
        try:
            self._lookup(target_frame, source_frame, int(stamp_ns), int(extrapolation_ns))
        except TransformError:
            return False
        return True

    # -- internals -----------------------------------------------------------------------------

    def _parent(self, frame: str) -> str | None:
        if (static := self._static.get(frame)) is not None:
            return static.parent
        if (history := self._dynamic.get(frame)) is not None:
            return history.parent
        return None

    def _is_known(self, frame: str) -> bool:
        if frame in self._static or frame in self._dynamic:
            return True
        return any(edge.parent == frame for edge in self._static.values()) or any(
            edge.parent == frame for edge in self._dynamic.values())

    def _check_no_loop(self, parent: str, child: str) -> None:
        frame: str | None = parent
        while frame is not None:
            if frame == child:
                raise TransformError(f'transform {parent!r} -> {child!r} would close a loop: '
                                     f'{parent!r} already descends from {child!r}')
            frame = self._parent(frame)

    def _chain(self, frame: str) -> list[str]:
        """``frame`` and its ancestors up to the root."""
        chain = [frame]
        while (parent := self._parent(chain[-1])) is not None:
            chain.append(parent)
        return chain

    def _lookup(self, target: str, source: str, stamp: int,
                tolerance: int) -> tuple[np.ndarray, np.ndarray]:
        if target == source:
            return np.eye(3), np.zeros(3)
        for frame in (target, source):
            if not self._is_known(frame):
                raise TransformError(f'unknown frame {frame!r} (looking up {source!r} -> '
                                     f'{target!r}); known frames: {", ".join(self.frames()) or "none"}')
        source_chain, target_chain = self._chain(source), self._chain(target)
        in_target = set(target_chain)
        common = next((f for f in source_chain if f in in_target), None)
        if common is None:
            raise TransformError(f'frames {source!r} and {target!r} are not connected (their roots '
                                 f'are {source_chain[-1]!r} and {target_chain[-1]!r}); known '
                                 f'frames: {", ".join(self.frames())}')
        r_src, t_src = self._to_ancestor(source_chain, common, stamp, tolerance)
        r_tgt, t_tgt = self._to_ancestor(target_chain, common, stamp, tolerance)
        # target <- common <- source: invert the target's chain
        r_inv = r_tgt.T
        return r_inv @ r_src, r_inv @ (t_src - t_tgt)

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp: int,
                     tolerance: int) -> tuple[np.ndarray, np.ndarray]:
        """Points of ``chain[0]`` into ``ancestor``: compose parent <- child edges up the chain."""
        rotation, translation = np.eye(3), np.zeros(3)
        for child in chain[:chain.index(ancestor)]:
            edge_r, edge_t = self._edge(child, stamp, tolerance)
            rotation, translation = edge_r @ rotation, edge_r @ translation + edge_t
        return rotation, translation

    def _edge(self, child: str, stamp: int, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
        static = self._static.get(child)
        if static is not None:
            return static.rotation, static.translation
        history = self._dynamic[child]
        pose = history.at(stamp, tolerance)
        if pose is None:
            first, last = history.first, history.last
            gap = first - stamp if stamp < first else stamp - last
            side = 'before' if stamp < first else 'after'
            raise TransformError(
                f'transform {history.parent!r} -> {child!r} at {stamp} ns is {gap / 1e6:.3f} ms '
                f'{side} its buffered range [{first}, {last}] ns ({len(history)} samples; '
                f'tolerance {tolerance / 1e6:g} ms)')
        return pose[1], pose[0]


def _rotation_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) to a 3x3 rotation matrix."""
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _slerp(q0: np.ndarray, q1: np.ndarray, ratio: float) -> np.ndarray:
    """Spherical interpolation along the shorter arc; a normalised lerp where the arc is tiny."""
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are the same rotation; take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + ratio * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - ratio) * theta) * q0 + np.sin(ratio * theta) * q1) / sin_theta
