"""Ego-motion compensation: move every point of a sweep into the sensor frame at one target time.

Each point ``p_i`` was measured in the sensor frame at its own time ``t_i``; the sensor's pose in a
fixed frame (map, odom) is known at sorted sample times. The compensated point is

    p_target = inverse(T(target_time)) @ T(t_i) @ p_i

with ``T(t)`` interpolated between the two samples that bracket ``t``: translation linearly,
rotation by quaternion slerp along the shorter arc (normalised linear interpolation where the two
rotations are within about 3.6 degrees of each other, where slerp's ``sin`` ratio loses precision).

Policy: a point time or the target time outside ``[pose_times_ns[0], pose_times_ns[-1]]`` raises
:class:`GeometryError` naming the table's range and the offending times; nothing is extrapolated or
clamped silently. A pose table of one sample covers only its own stamp. Points with a non-finite
coordinate come out non-finite, in place (the output is aligned with the input).

Arithmetic is float64 throughout; the result is rounded to float32 once. A lidar sweep has about a
thousand distinct firing times for 10^5 points, so the Numba kernel computes the interpolated
motion once per run of equal consecutive stamps (firing order) and keeps recent stamps' motions in
a small hashed memo (any order); both give the numbers of computing it afresh for every point.
Quaternions, per-interval slerp angles and the target pose are prepared once in numpy and shared
by every implementation, so the only per-point transcendental functions are the two ``sin`` of
slerp: the kernel and the reference differ only where numpy's and LLVM's ``sin`` round differently
(an ulp of float64, far below a micrometre), so their float32 results are equal or one float32
ulp apart.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from mmfusion_ros.errors import GeometryError

__all__ = ['compensate_ego_motion', 'compensate_ego_motion_baseline', 'compensate_ego_motion_reference']

# Points per parallel work item: at least this many, and about four items per thread (each item
# builds its own memo). The output does not depend on it: the motion is a function of the stamp.
_MIN_CHUNK_POINTS = 4096
_CHUNKS_PER_THREAD = 4
_MEMO_BITS = 12  # 4096 memo slots per work item, hashed by stamp (Fibonacci hashing)
_MEMO_SLOTS = 1 << _MEMO_BITS
_MEMO_HASH = 0x9E3779B97F4A7C15
_LINEAR_BELOW_DOT = 0.9995  # quaternion dot above which slerp falls back to normalised lerp
_ROTATION_TOLERANCE = 1e-6


class _PoseTable(NamedTuple):
    """The pose samples as every implementation reads them (see _pose_table)."""

    times_ns: np.ndarray  # (T,) int64 strictly increasing, T >= 2 (a one-sample table is doubled)
    first_ns: int  # the range the table covers: point and target times must lie in it
    last_ns: int
    quaternions: np.ndarray  # (T, 4) float64 (w, x, y, z), unit, consecutive ones with dot >= 0
    translations: np.ndarray  # (T, 3) float64
    interval: np.ndarray  # (T - 1, 3) float64 per interval: theta, sin(theta), 1.0 where linear
    target_rotation_t: np.ndarray  # (3, 3) float64: R(target)^T, maps fixed-frame offsets into it
    target_translation: np.ndarray  # (3,) float64 t(target)


def _quaternions_from_rotations(rotations: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation matrices -> (T, 4) unit quaternions (w, x, y, z); Shepperd's method."""
    m = rotations
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    trace = m00 + m11 + m22
    candidates = np.empty((4,) + trace.shape + (4,))  # (case, T, wxyz)
    s = 2.0 * np.sqrt(np.maximum(trace + 1.0, 1e-300))
    candidates[0] = np.stack([s / 4, (m[:, 2, 1] - m[:, 1, 2]) / s, (m[:, 0, 2] - m[:, 2, 0]) / s,
                              (m[:, 1, 0] - m[:, 0, 1]) / s], axis=1)
    s = 2.0 * np.sqrt(np.maximum(1.0 + m00 - m11 - m22, 1e-300))
    candidates[1] = np.stack([(m[:, 2, 1] - m[:, 1, 2]) / s, s / 4, (m[:, 0, 1] + m[:, 1, 0]) / s,
                              (m[:, 0, 2] + m[:, 2, 0]) / s], axis=1)
    s = 2.0 * np.sqrt(np.maximum(1.0 + m11 - m00 - m22, 1e-300))
    candidates[2] = np.stack([(m[:, 0, 2] - m[:, 2, 0]) / s, (m[:, 0, 1] + m[:, 1, 0]) / s, s / 4,
                              (m[:, 1, 2] + m[:, 2, 1]) / s], axis=1)
    s = 2.0 * np.sqrt(np.maximum(1.0 + m22 - m00 - m11, 1e-300))
    candidates[3] = np.stack([(m[:, 1, 0] - m[:, 0, 1]) / s, (m[:, 0, 2] + m[:, 2, 0]) / s,
                              (m[:, 1, 2] + m[:, 2, 1]) / s, s / 4], axis=1)
    case = np.where(trace > 0, 0, np.argmax(np.stack([m00, m11, m22], axis=1), axis=1) + 1)
    q = candidates[case, np.arange(len(trace))]
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _rotations_from_quaternions(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3); the formula every kernel uses."""
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)], axis=-1),
        np.stack([2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)], axis=-1),
        np.stack([2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def _interpolated_quaternions(table_q: np.ndarray, interval: np.ndarray, k: np.ndarray,
                              alpha: np.ndarray) -> np.ndarray:
    """(n, 4) slerp (or normalised lerp) of samples k and k + 1 at fractions alpha; numpy form."""
    q0 = table_q[k]  # (n, 4)
    q1 = table_q[k + 1]
    theta, sin_theta, linear = interval[k, 0], interval[k, 1], interval[k, 2]
    # Slerp weights; the linear rows are recomputed below (where sin_theta may be 0).
    safe_sin = np.where(linear != 0.0, 1.0, sin_theta)
    w0 = np.sin((1.0 - alpha) * theta) / safe_sin
    w1 = np.sin(alpha * theta) / safe_sin
    q = w0[:, None] * q0 + w1[:, None] * q1
    lerp = q0 + alpha[:, None] * (q1 - q0)
    norm = np.sqrt(lerp[:, 0] * lerp[:, 0] + lerp[:, 1] * lerp[:, 1] + lerp[:, 2] * lerp[:, 2]
                   + lerp[:, 3] * lerp[:, 3])
    lerp = lerp / norm[:, None]
    return np.where((linear != 0.0)[:, None], lerp, q)


def _bracket(times_ns: np.ndarray, query_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval index k (samples k, k + 1 bracket the query) and the fraction alpha in [0, 1]."""
    k = np.clip(np.searchsorted(times_ns, query_ns, side='right') - 1, 0, len(times_ns) - 2)
    alpha = (query_ns - times_ns[k]).astype(np.float64) / (times_ns[k + 1] - times_ns[k]).astype(np.float64)
    return k, alpha


def _out_of_range_error(what: str, first_ns: int, last_ns: int, bad_ns: np.ndarray) -> GeometryError:
    return GeometryError(f'{what}: {len(bad_ns)} time(s) outside the pose table [{first_ns}, {last_ns}] ns '
                         f'(earliest {int(bad_ns.min())}, latest {int(bad_ns.max())})')


def _check_point_times(table: _PoseTable, point_times_ns: np.ndarray) -> None:
    outside = (point_times_ns < table.first_ns) | (point_times_ns > table.last_ns)
    if np.any(outside):
        raise _out_of_range_error('point_times_ns', table.first_ns, table.last_ns, point_times_ns[outside])


def _pose_table(pose_times_ns: np.ndarray, sensor_to_fixed: np.ndarray, target_time_ns: int) -> _PoseTable:
    """Validate the pose samples and prepare what every implementation reads."""
    times = np.asarray(pose_times_ns)
    poses = np.asarray(sensor_to_fixed, np.float64)
    if times.ndim != 1 or len(times) == 0 or not np.issubdtype(times.dtype, np.integer):
        raise GeometryError(f'pose_times_ns: expected a non-empty (T,) integer array, got {times.dtype} '
                            f'{times.shape}')
    times = times.astype(np.int64)
    if poses.shape != (len(times), 4, 4):
        raise GeometryError(f'sensor_to_fixed: expected shape ({len(times)}, 4, 4), got {poses.shape}')
    if np.any(np.diff(times) <= 0):
        bad = int(np.flatnonzero(np.diff(times) <= 0)[0])
        raise GeometryError(f'pose_times_ns: not strictly increasing at index {bad + 1} '
                            f'({int(times[bad])} then {int(times[bad + 1])})')
    if not np.all(np.isfinite(poses)):
        raise GeometryError('sensor_to_fixed: has non-finite entries')
    if not np.all(poses[:, 3] == [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError('sensor_to_fixed: every pose\'s last row must be [0, 0, 0, 1]')
    rotations = poses[:, :3, :3]
    orthonormality = np.abs(rotations @ rotations.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    if np.any(orthonormality > _ROTATION_TOLERANCE) or np.any(np.linalg.det(rotations) <= 0):
        bad = int(np.flatnonzero((orthonormality > _ROTATION_TOLERANCE) | (np.linalg.det(rotations) <= 0))[0])
        raise GeometryError(f'sensor_to_fixed[{bad}]: not a proper rotation:\n{rotations[bad]}')
    target = np.int64(target_time_ns)
    first_ns, last_ns = int(times[0]), int(times[-1])
    if not first_ns <= target <= last_ns:
        raise _out_of_range_error('target_time_ns', first_ns, last_ns, np.array([target]))
    if len(times) == 1:  # one sample covers its own stamp: interpolate between two copies of it
        times = np.array([times[0], times[0] + 1], np.int64)
        poses = np.concatenate([poses, poses])
        rotations = poses[:, :3, :3]

    quaternions = _quaternions_from_rotations(rotations)  # (T, 4)
    # Flip signs so consecutive samples lie in one hemisphere: slerp then takes the shorter arc.
    same_side = np.sign(np.sum(quaternions[1:] * quaternions[:-1], axis=1))
    quaternions[1:] *= np.cumprod(np.where(same_side < 0, -1.0, 1.0))[:, None]
    dots = np.clip(np.sum(quaternions[1:] * quaternions[:-1], axis=1), -1.0, 1.0)
    theta = np.arccos(dots)
    interval = np.stack([theta, np.sin(theta), (dots > _LINEAR_BELOW_DOT).astype(np.float64)], axis=1)
    translations = np.ascontiguousarray(poses[:, :3, 3])

    k, alpha = _bracket(times, np.array([target]))
    target_q = _interpolated_quaternions(quaternions, interval, k, alpha)[0]
    target_rotation = _rotations_from_quaternions(target_q)
    target_translation = translations[k[0]] + alpha[0] * (translations[k[0] + 1] - translations[k[0]])
    return _PoseTable(times, first_ns, last_ns, np.ascontiguousarray(quaternions), translations,
                      np.ascontiguousarray(interval),
                      np.ascontiguousarray(target_rotation.T), target_translation)


def _checked_points(points: np.ndarray, point_times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise GeometryError(f'points: expected shape (N, 3), got {points.shape}')
    if points.dtype != np.float32:
        raise GeometryError(f'points: expected float32, got {points.dtype}')
    times = np.asarray(point_times_ns)
    if times.shape != (len(points),) or not np.issubdtype(times.dtype, np.integer):
        raise GeometryError(f'point_times_ns: expected ({len(points)},) integers, got {times.dtype} {times.shape}')
    return np.ascontiguousarray(points), np.ascontiguousarray(times, np.int64)


# ---------------------------------------------------------------------------------------------------
# Reference: numpy, vectorised over points.


def compensate_ego_motion_reference(points: np.ndarray, point_times_ns: np.ndarray, pose_times_ns: np.ndarray,
                                    sensor_to_fixed: np.ndarray, target_time_ns: int) -> np.ndarray:
    """Plain numpy version of :func:`compensate_ego_motion`."""
    points, point_times = _checked_points(points, point_times_ns)
    table = _pose_table(pose_times_ns, sensor_to_fixed, target_time_ns)
    _check_point_times(table, point_times)
    k, alpha = _bracket(table.times_ns, point_times)  # (N,), (N,)
    rotation = _rotations_from_quaternions(_interpolated_quaternions(table.quaternions, table.interval,
                                                                     k, alpha))  # (N, 3, 3)
    t0 = table.translations[k]  # (N, 3)
    translation = t0 + alpha[:, None] * (table.translations[k + 1] - t0)
    a = table.target_rotation_t
    offset = translation - table.target_translation  # (N, 3) in the fixed frame
    # motion = [a @ rotation | a @ offset], written out term by term in the kernels' order.
    motion = np.empty((len(points), 3, 4))
    for row in range(3):
        for col in range(3):
            motion[:, row, col] = (a[row, 0] * rotation[:, 0, col] + a[row, 1] * rotation[:, 1, col]
                                   + a[row, 2] * rotation[:, 2, col])
        motion[:, row, 3] = a[row, 0] * offset[:, 0] + a[row, 1] * offset[:, 1] + a[row, 2] * offset[:, 2]
    px, py, pz = (points[:, axis].astype(np.float64) for axis in range(3))
    out = np.empty((len(points), 3), np.float32)
    for row in range(3):
        out[:, row] = motion[:, row, 0] * px + motion[:, row, 1] * py + motion[:, row, 2] * pz + motion[:, row, 3]
    return out


# ---------------------------------------------------------------------------------------------------
# Numba: prange over chunks of points; the motion is recomputed only when the time stamp changes.


def interpolated_motion(k, alpha, quaternions, translations, interval, target_rotation_t, target_translation,
                        motion):
    """Write the 3x4 ``inverse(T(target)) @ T(t)`` for ``t`` at fraction ``alpha`` of segment ``k``.

    Plain Python on purpose: the CPU kernel compiles it with ``njit`` and the CUDA kernel as a
    device function, so both run the same arithmetic in the same order as the reference.
    """
    theta = interval[k, 0]
    if interval[k, 2] != 0.0:
        qw = quaternions[k, 0] + alpha * (quaternions[k + 1, 0] - quaternions[k, 0])
        qx = quaternions[k, 1] + alpha * (quaternions[k + 1, 1] - quaternions[k, 1])
        qy = quaternions[k, 2] + alpha * (quaternions[k + 1, 2] - quaternions[k, 2])
        qz = quaternions[k, 3] + alpha * (quaternions[k + 1, 3] - quaternions[k, 3])
        norm = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        qw, qx, qy, qz = qw / norm, qx / norm, qy / norm, qz / norm
    else:
        w0 = math.sin((1.0 - alpha) * theta) / interval[k, 1]
        w1 = math.sin(alpha * theta) / interval[k, 1]
        qw = w0 * quaternions[k, 0] + w1 * quaternions[k + 1, 0]
        qx = w0 * quaternions[k, 1] + w1 * quaternions[k + 1, 1]
        qy = w0 * quaternions[k, 2] + w1 * quaternions[k + 1, 2]
        qz = w0 * quaternions[k, 3] + w1 * quaternions[k + 1, 3]
    r00 = 1.0 - 2.0 * (qy * qy + qz * qz)
    r01 = 2.0 * (qx * qy - qz * qw)
    r02 = 2.0 * (qx * qz + qy * qw)
    r10 = 2.0 * (qx * qy + qz * qw)
    r11 = 1.0 - 2.0 * (qx * qx + qz * qz)
    r12 = 2.0 * (qy * qz - qx * qw)
    r20 = 2.0 * (qx * qz - qy * qw)
    r21 = 2.0 * (qy * qz + qx * qw)
    r22 = 1.0 - 2.0 * (qx * qx + qy * qy)
    offset_x = translations[k, 0] + alpha * (translations[k + 1, 0] - translations[k, 0]) - target_translation[0]
    offset_y = translations[k, 1] + alpha * (translations[k + 1, 1] - translations[k, 1]) - target_translation[1]
    offset_z = translations[k, 2] + alpha * (translations[k + 1, 2] - translations[k, 2]) - target_translation[2]
    a = target_rotation_t
    for row in range(3):
        motion[row, 0] = a[row, 0] * r00 + a[row, 1] * r10 + a[row, 2] * r20
        motion[row, 1] = a[row, 0] * r01 + a[row, 1] * r11 + a[row, 2] * r21
        motion[row, 2] = a[row, 0] * r02 + a[row, 1] * r12 + a[row, 2] * r22
        motion[row, 3] = a[row, 0] * offset_x + a[row, 1] * offset_y + a[row, 2] * offset_z


_interpolated_motion = njit(cache=True, fastmath=False, error_model='numpy', inline='always')(interpolated_motion)


@njit(cache=True, fastmath=False, error_model='numpy')
def _motion_at(time_ns: int, times_ns: np.ndarray, quaternions: np.ndarray, translations: np.ndarray,
               interval: np.ndarray, target_rotation_t: np.ndarray, target_translation: np.ndarray,
               motion: np.ndarray) -> None:
    """Write the 3x4 ``inverse(T(target)) @ T(time)`` into ``motion``; same order as the reference."""
    num_samples = times_ns.shape[0]
    k = min(max(np.searchsorted(times_ns, time_ns, side='right') - 1, 0), num_samples - 2)
    alpha = np.float64(time_ns - times_ns[k]) / np.float64(times_ns[k + 1] - times_ns[k])
    _interpolated_motion(k, alpha, quaternions, translations, interval, target_rotation_t, target_translation,
                         motion)


@njit(parallel=True, cache=True, fastmath=False, error_model='numpy')
def _compensate_kernel(points: np.ndarray, point_times_ns: np.ndarray, times_ns: np.ndarray,
                       quaternions: np.ndarray, translations: np.ndarray, interval: np.ndarray,
                       target_rotation_t: np.ndarray, target_translation: np.ndarray, first_time: int,
                       last_time: int, chunk_points: int) -> tuple[np.ndarray, int]:
    num_points = points.shape[0]  # points: (N, 3) float32; point_times_ns: (N,) int64
    num_samples = times_ns.shape[0]  # times_ns: (T,) int64; quaternions (T, 4); translations (T, 3)
    assert point_times_ns.shape[0] == num_points, 'one time per point'
    assert num_samples >= 2 and interval.shape[0] == num_samples - 1, 'pose table needs T >= 2 samples'
    num_chunks = (num_points + chunk_points - 1) // chunk_points
    out = np.empty((num_points, 3), np.float32)  # (N, 3)
    outside_per_chunk = np.zeros(num_chunks, np.int64)
    # Runs of equal stamps inside a chunk share one motion, and a memo keeps the motion of recent
    # stamps; either way the numbers are those of computing the motion afresh for every point.
    for chunk in prange(num_chunks):
        # Per-chunk memo of the motion by stamp (direct-mapped: a slot holds the last stamp hashed
        # to it). Firing-order sweeps mostly hit the run fast path below; shuffled ones hit the memo.
        memo_time = np.full(_MEMO_SLOTS, first_time - 1, np.int64)  # (S,) first_time - 1: empty
        memo_motion = np.empty((_MEMO_SLOTS, 3, 4), np.float64)  # (S, 3, 4) inverse(T(target)) @ T(stamp)
        outside = 0
        run_start = chunk * chunk_points
        chunk_stop = min(run_start + chunk_points, num_points)
        while run_start < chunk_stop:
            time_ns = point_times_ns[run_start]
            run_stop = run_start + 1  # a run: consecutive points with the same stamp share one motion
            while run_stop < chunk_stop and point_times_ns[run_stop] == time_ns:
                run_stop += 1
            if time_ns < first_time or time_ns > last_time:
                outside += run_stop - run_start
                run_start = run_stop
                continue
            slot = np.intp((np.uint64(time_ns) * np.uint64(_MEMO_HASH)) >> np.uint64(64 - _MEMO_BITS))
            motion = memo_motion[slot]
            if memo_time[slot] != time_ns:
                _motion_at(time_ns, times_ns, quaternions, translations, interval, target_rotation_t,
                           target_translation, motion)
                memo_time[slot] = time_ns
            m00, m01, m02, m03 = motion[0, 0], motion[0, 1], motion[0, 2], motion[0, 3]
            m10, m11, m12, m13 = motion[1, 0], motion[1, 1], motion[1, 2], motion[1, 3]
            m20, m21, m22, m23 = motion[2, 0], motion[2, 1], motion[2, 2], motion[2, 3]
            for i in range(run_start, run_stop):
                px = np.float64(points[i, 0])
                py = np.float64(points[i, 1])
                pz = np.float64(points[i, 2])
                out[i, 0] = np.float32(m00 * px + m01 * py + m02 * pz + m03)
                out[i, 1] = np.float32(m10 * px + m11 * py + m12 * pz + m13)
                out[i, 2] = np.float32(m20 * px + m21 * py + m22 * pz + m23)
            run_start = run_stop
        outside_per_chunk[chunk] = outside
    return out, outside_per_chunk.sum()


def _chunk_points(num_points: int) -> int:
    work_items = _CHUNKS_PER_THREAD * numba.get_num_threads()
    return max(_MIN_CHUNK_POINTS, -(-num_points // work_items))


def compensate_ego_motion(points: np.ndarray, point_times_ns: np.ndarray, pose_times_ns: np.ndarray,
                          sensor_to_fixed: np.ndarray, target_time_ns: int) -> np.ndarray:
    """(N, 3) float32: every point moved into the sensor frame at ``target_time_ns``.

    ``points``: (N, 3) float32 in the sensor frame at their own times ``point_times_ns`` (N,) int64.
    ``pose_times_ns``: (T,) strictly increasing int64; ``sensor_to_fixed``: (T, 4, 4) float64 poses
    of the sensor in a fixed frame at those times. Times outside the table raise GeometryError.
    """
    points, point_times = _checked_points(points, point_times_ns)
    table = _pose_table(pose_times_ns, sensor_to_fixed, target_time_ns)
    out, outside = _compensate_kernel(points, point_times, table.times_ns, table.quaternions, table.translations,
                                      table.interval, table.target_rotation_t, table.target_translation,
                                      table.first_ns, table.last_ns, _chunk_points(len(points)))
    if outside:
        _check_point_times(table, point_times)
    return out


def compensate_ego_motion_baseline(points: np.ndarray, point_times_ns: np.ndarray, pose_times_ns: np.ndarray,
                                   sensor_to_fixed: np.ndarray, target_time_ns: int) -> np.ndarray:
    """Benchmark baseline: torch, motion per distinct time (``unique``), gathered and applied batched.

    Pose arithmetic in float64 (fixed-frame coordinates need it), the per-point product in float32.
    """
    import torch

    points, point_times = _checked_points(points, point_times_ns)
    table = _pose_table(pose_times_ns, sensor_to_fixed, target_time_ns)
    times = torch.from_numpy(point_times)
    distinct, inverse = torch.unique(times, return_inverse=True)  # (U,), (N,)
    if len(distinct) and (int(distinct[0]) < table.first_ns or int(distinct[-1]) > table.last_ns):
        _check_point_times(table, point_times)
    sample_times = torch.from_numpy(table.times_ns)
    k = (torch.searchsorted(sample_times, distinct, right=True) - 1).clamp(0, len(sample_times) - 2)
    alpha = (distinct - sample_times[k]).double() / (sample_times[k + 1] - sample_times[k]).double()  # (U,)
    quaternions = torch.from_numpy(table.quaternions)
    interval = torch.from_numpy(table.interval)
    q0, q1 = quaternions[k], quaternions[k + 1]  # (U, 4)
    theta, sin_theta, linear = interval[k, 0], interval[k, 1], interval[k, 2] != 0
    safe_sin = torch.where(linear, torch.ones_like(sin_theta), sin_theta)
    slerp = ((torch.sin((1 - alpha) * theta) / safe_sin)[:, None] * q0
             + (torch.sin(alpha * theta) / safe_sin)[:, None] * q1)
    lerp = q0 + alpha[:, None] * (q1 - q0)
    q = torch.where(linear[:, None], lerp / lerp.norm(dim=1, keepdim=True), slerp)
    w, x, y, z = q.unbind(dim=1)
    rotation = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], dim=1).reshape(-1, 3, 3)
    translations = torch.from_numpy(table.translations)
    offset = translations[k] + alpha[:, None] * (translations[k + 1] - translations[k]) \
        - torch.from_numpy(table.target_translation)
    a = torch.from_numpy(table.target_rotation_t)
    motion = torch.cat([a @ rotation, (offset @ a.T)[:, :, None]], dim=2).float()  # (U, 3, 4)
    per_point = motion[inverse]  # (N, 3, 4)
    xyz = torch.from_numpy(points)
    out = torch.bmm(per_point[:, :, :3], xyz[:, :, None])[:, :, 0] + per_point[:, :, 3]
    return out.numpy()
