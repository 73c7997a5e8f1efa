"""Key-frame assembly over a recording: one ``Frame`` per key stamp, from messages in log order.

The keys are the ground-truth stamps when the recording carries ground truth (a simulator bag:
evaluation and training score exactly the annotated instants), else the lidar sweeps' stamps. For
each key ``t`` the assembler gathers, from what it has buffered:

- lidar: the newest ``lidar_sweeps`` sweeps of every lidar with stamp <= t (+ a quarter period of
  stamp jitter; such a sweep has age 0), each point
  moved by ego motion at its own firing time (the cloud's ``time`` field, seconds after the stamp,
  when it has one) into the fixed frame, then into the base frame at ``t``; ``dt`` is the sweep's age.
  The lidar is absent when its newest sweep is older than 1.5 sweep periods.
- cameras: per camera, the image nearest to ``t`` within one frame period, with its latest
  CameraInfo and the camera-to-base transform through the fixed frame (image stamp -> ``t``).
- radar: per radar, its newest ``radar_sweeps`` scans within that many periods before ``t``, points
  and compensated velocities rotated into base axes at ``t``.

A key is assembled once the log time passes ``t + lookahead`` (so the image just after ``t`` is in).
Anything that cannot be used (undecodable message, no calibration, no transform) is counted in
``stats`` by reason and the sensor is named in ``Frame.missing``; the frame goes on with the rest.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..config import FusionConfig, SensorConfig
from ..errors import DecodeError, GeometryError, TransformError
from ..frame import LIDAR_FIELDS, RADAR_FIELDS, CameraView, Frame
from ..geometry.motion import compensate_ego_motion
from ..msgs.typestore import deserialize
from ..msgs.decode import (
    decode_camera_info,
    decode_compressed_image,
    decode_detections,
    decode_diagnostics,
    decode_image,
    decode_pointcloud,
    decode_radar,
    decode_tf,
)
from ..types import CameraImage, CameraIntrinsics, Detections3D, DiagnosticStatus, RigidTransform
from .tf_buffer import TfBuffer

__all__ = ['FAULTS_TOPIC', 'GROUND_TRUTH_TOPIC', 'KeyframeAssembler', 'bag_frames']

GROUND_TRUTH_TOPIC = '/mmfusion/ground_truth'
FAULTS_TOPIC = '/mmfusion/faults'
NS = 1_000_000_000
POSE_SAMPLES = 8  # ego poses sampled across a sweep for its motion compensation


@dataclass
class _Sample:
    stamp_ns: int
    raw: bytes
    msgtype: str
    decoded: Any = None  # filled on first use; a failure is remembered as a string
    tried: bool = False
    origin: np.ndarray | None = None  # radar: the sensor's position in the fixed frame at the scan's stamp


@dataclass
class _Stream:
    sensor: str
    config: SensorConfig
    samples: list[_Sample] = field(default_factory=list)  # sorted by stamp
    frame_id: str = ''  # the frame its messages name (header.frame_id), once one is decoded

    def add(self, sample: _Sample) -> None:
        bisect.insort_right(self.samples, sample, key=lambda s: s.stamp_ns)

    def prune(self, before_ns: int) -> None:
        self.samples = [s for s in self.samples if s.stamp_ns >= before_ns]


class KeyframeAssembler:
    """Feed messages in log order with ``push``; it returns the frames whose keys are complete."""

    def __init__(self, config: FusionConfig, *, lidar_sweeps: int = 3, radar_sweeps: int = 5,
                 keys: str = 'auto', lookahead_s: float = 0.2, with_ground_truth: bool = True,
                 every: int = 1, reset_on_backwards_ns: int | None = None) -> None:
        if keys not in ('auto', 'ground_truth', 'lidar', 'external'):
            raise ValueError(f"keys: expected 'auto', 'ground_truth', 'lidar' or 'external', got {keys!r}")
        self.config = config
        self.lidar_sweeps = int(lidar_sweeps)
        self.radar_sweeps = int(radar_sweeps)
        self.keys = keys
        self.lookahead_ns = round(lookahead_s * NS)
        self.with_ground_truth = with_ground_truth
        if int(every) < 1:
            raise ValueError(f'every: must be at least 1, got {every}')
        self.every = int(every)  # assemble only every n-th key (the others cost nothing)
        self._keys_seen = 0
        self.tf = TfBuffer()
        self.stats: collections.Counter[str] = collections.Counter()
        self._streams = {name: _Stream(name, s) for name, s in config.sensors.items()}
        self._by_topic = {s.topic: self._streams[name] for name, s in config.sensors.items()}
        self._info_topic = {s.info_topic: name for name, s in config.sensors.items() if s.info_topic}
        self._intrinsics: dict[str, CameraIntrinsics] = {}
        self._truth: dict[int, Detections3D] = {}
        self._faults: dict[int, tuple[DiagnosticStatus, ...]] = {}
        self._pending: list[int] = []  # key stamps not yet assembled, sorted
        self._seen_truth = False
        self._last_log_ns = -1
        # /tf going back by more than this (a looped recording) resets everything; None: never
        self.reset_on_backwards_ns = reset_on_backwards_ns
        self.time_resets = 0
        self._tf_newest_ns: int | None = None

    # -- feeding -----------------------------------------------------------------------------------

    def push(self, topic: str, msgtype: str, raw: bytes, log_ns: int) -> list[Frame]:
        """Take one message; return the frames that became complete (oldest first)."""
        self._last_log_ns = max(self._last_log_ns, int(log_ns))
        try:
            self.take(topic, msgtype, raw)
        except DecodeError:
            self.stats[f'undecodable {topic}'] += 1
        return self._ready(self._last_log_ns - self.lookahead_ns)

    def finish(self) -> list[Frame]:
        """The frames still pending at the end of the recording."""
        return self._ready(None)

    def take(self, topic: str, msgtype: str, raw: bytes) -> tuple[str, int] | None:
        """Buffer one message; for a sensor's data message, its (sensor, corrected stamp).

        TF, CameraInfo, ground truth and faults are absorbed here. With ``keys='external'`` (the
        runtime, whose synchronizer decides the frames) nothing becomes a key by itself: the caller
        assembles with ``assemble(t)`` and releases history with ``prune``. A header that cannot be
        read is a ``DecodeError``; the rest of a message is decoded only when a frame uses it.
        """
        if topic in ('/tf', '/tf_static'):
            transforms = decode_tf(raw, static=topic == '/tf_static', topic=topic)
            if topic == '/tf' and transforms:
                self._watch_tf_time(max(t.stamp_ns for t in transforms))
            for transform in transforms:
                try:
                    self.tf.add(transform)
                except TransformError:
                    self.stats['rejected transform'] += 1
            return None
        if topic == GROUND_TRUTH_TOPIC:
            truth = decode_detections(raw, topic)
            self._seen_truth = True
            if self.with_ground_truth:
                self._truth[truth.stamp_ns] = truth
            if self.keys in ('auto', 'ground_truth'):
                self._add_key(truth.stamp_ns)
            return None
        if topic == FAULTS_TOPIC:
            stamp, statuses = decode_diagnostics(raw, topic)
            self._faults[stamp] = tuple(statuses)
            return None
        if topic in self._info_topic:
            self._intrinsics[self._info_topic[topic]] = decode_camera_info(raw, topic)
            return None
        stream = self._by_topic.get(topic)
        if stream is None:
            return None
        deserialize(raw, msgtype, topic)  # a cut or garbled message must not lend its stamp to a frame
        stamp = _header_stamp(raw, topic) + stream.config.offset_ns
        stream.add(_Sample(stamp, raw, msgtype))
        if stream.config.modality == 'lidar' and (self.keys == 'lidar' or (self.keys == 'auto'
                                                                         and not self._seen_truth)):
            self._add_key(stamp)
        return stream.sensor, stamp

    def _add_key(self, stamp_ns: int) -> None:
        if self._pending and stamp_ns <= self._pending[-1]:
            if stamp_ns not in self._pending:
                self.stats['key out of order'] += 1
            return
        self._pending.append(stamp_ns)

    # -- assembling --------------------------------------------------------------------------------

    def _ready(self, until_ns: int | None) -> list[Frame]:
        frames = []
        done = None
        while self._pending and (until_ns is None or self._pending[0] <= until_ns):
            key = done = self._pending.pop(0)
            if self.keys == 'auto' and self._seen_truth and key not in self._truth and self.with_ground_truth:
                continue  # lidar keys taken before the first ground truth arrived
            self._keys_seen += 1
            if (self._keys_seen - 1) % self.every == 0:
                frames.append(self.assemble(key))
        if done is not None:
            self.prune(done)
        return frames

    def _watch_tf_time(self, newest_ns: int) -> None:
        threshold = self.reset_on_backwards_ns
        if threshold is not None and self._tf_newest_ns is not None and newest_ns < self._tf_newest_ns - threshold:
            self.reset()
            self.time_resets += 1
        self._tf_newest_ns = newest_ns if self._tf_newest_ns is None else max(self._tf_newest_ns, newest_ns)

    def reset(self) -> None:
        """Forget buffered messages and /tf history (time went backwards: a looped bag).

        The static tree and the cameras' CameraInfo stay: a loop of the same recording repeats them
        only at its start, which may already have passed when the jump is noticed.
        """
        self.tf.clear_dynamic()
        self._tf_newest_ns = None
        for stream in self._streams.values():
            stream.samples.clear()
        self._truth.clear()
        self._faults.clear()
        self._pending.clear()

    def prune(self, done_ns: int) -> None:
        """Release what no frame after ``done_ns`` can use."""
        keep_ns = done_ns - 2 * NS  # longer than any accumulation window
        for stream in self._streams.values():
            stream.prune(keep_ns)
        self._truth = {k: v for k, v in self._truth.items() if k > done_ns}
        self._faults = {k: v for k, v in self._faults.items() if k >= keep_ns}

    def assemble(self, t: int, missing: dict[str, str] | None = None) -> Frame:
        """The frame at ``t`` from what is buffered; ``missing`` names sensors to leave out, and why."""
        missing = dict(missing or {})
        mounts: dict[str, RigidTransform] = {}
        scans: dict[str, int] = {}
        lidar, lidar_sensor, _ = self._clouds(t, 'lidar', missing, mounts, scans)
        radar, radar_sensor, radar_origin = self._clouds(t, 'radar', missing, mounts, scans)
        try:
            pose = self.tf.lookup(self.config.frames.fixed, self.config.frames.base, t, extrapolation_ns=NS // 100)
        except TransformError:
            pose = None
        cameras = []
        for name in self.config.sensors_of('camera'):
            view = self._camera(t, name, missing)
            if view is not None:
                cameras.append(view)
        for sensor, why in missing.items():
            self.stats[f'{sensor}: {why.split(" (")[0]}'] += 1
        faults = self._faults.get(t, ())
        return Frame(t, self.config.frames.base, tuple(cameras), lidar, radar, self._truth.get(t), faults, missing,
                     pose, mounts, lidar_sensor, radar_sensor, tuple(self.config.sensors_of('lidar')),
                     tuple(self.config.sensors_of('radar')), radar_origin, scans)

    def _to_base(self, t: int, frame_id: str, stamp: int) -> RigidTransform:
        return self.tf.lookup_through(self.config.frames.base, t, frame_id, stamp, self.config.frames.fixed,
                                      extrapolation_ns=NS // 100)

    def _decoded(self, sample: _Sample, stream: _Stream) -> Any:
        if not sample.tried:
            try:
                sample.decoded = _decode(sample, stream, self)
                sample.tried = True
            except (DecodeError, GeometryError) as err:  # the message itself: it will not get better
                sample.decoded = str(err).split('\n')[0]
                sample.tried = True
            except TransformError as err:  # its poses may still arrive: try again for the next frame
                return str(err).split('\n')[0]
        return sample.decoded

    @property
    def tf_newest_ns(self) -> int | None:
        """The newest /tf stamp taken since the start or the last reset (None: no /tf yet)."""
        return self._tf_newest_ns

    def _camera(self, t: int, name: str, missing: dict[str, str]) -> CameraView | None:
        if name in missing:
            return None
        stream = self._streams[name]
        period = round(NS / stream.config.rate_hz)
        near = [s for s in stream.samples if abs(s.stamp_ns - t) <= period]
        if not near:
            missing[name] = 'no image within one period'
            return None
        sample = min(near, key=lambda s: (abs(s.stamp_ns - t), s.stamp_ns))
        intrinsics = self._intrinsics.get(name)
        if intrinsics is None:
            missing[name] = 'no camera_info'
            return None
        image = self._decoded(sample, stream)
        if isinstance(image, str):
            missing[name] = f'undecodable image ({image})'
            return None
        if (image.width, image.height) != (intrinsics.width, intrinsics.height):
            missing[name] = f'image {image.width}x{image.height} does not match camera_info'
            return None
        try:
            to_base = self._to_base(t, image.frame_id or stream.config.frame_id, sample.stamp_ns)
        except TransformError as err:
            missing[name] = f'no transform ({err})'
            return None
        return CameraView(name, sample.stamp_ns, image.pixels, intrinsics, to_base)

    def _clouds(self, t: int, modality: str, missing: dict[str, str], mounts: dict[str, RigidTransform],
                scans: dict[str, int]) -> tuple[np.ndarray | None, ...]:
        """(rows, which sensor each row came from, for radar where that sensor was when it scanned the
        row) of the modality's sensors, or Nones; ``scans`` gets each used sensor's newest scan stamp."""
        sweeps_wanted = self.lidar_sweeps if modality == 'lidar' else self.radar_sweeps
        parts = []
        sources = []
        origins = []  # radar: each scan's sensor position at its stamp, in the base frame at t, per row
        to_base: RigidTransform | None = None
        for index, (name, sensor) in enumerate(self.config.sensors_of(modality).items()):
            if name in missing:
                continue
            stream = self._streams[name]
            period = round(NS / sensor.rate_hz)
            # A scan stamped up to a quarter period after the key is the key's own (stamp jitter).
            window = [s for s in stream.samples
                      if t - sweeps_wanted * period - period // 2 < s.stamp_ns <= t + period // 4]
            window = window[-sweeps_wanted:]
            newest_limit = period * 3 // 2 if modality == 'lidar' else sweeps_wanted * period
            if not window or t - window[-1].stamp_ns > newest_limit:
                missing[name] = 'no recent scan'
                continue
            if to_base is None:
                try:
                    to_base = self.tf.lookup(self.config.frames.base, self.config.frames.fixed, t,
                                             extrapolation_ns=NS // 100)
                except TransformError as err:
                    missing[name] = f'no transform ({err})'
                    continue
            used = 0
            for sample in window:
                cloud = self._decoded(sample, stream)  # (N, F) in the fixed frame, or why not
                if isinstance(cloud, str):
                    self.stats[f'{name}: unusable scan'] += 1
                    continue
                points = cloud.copy()
                points[:, :3] = to_base.apply(cloud[:, :3])
                if modality == 'radar':
                    velocity = np.zeros((len(points), 3))
                    velocity[:, :2] = cloud[:, 3:5]
                    points[:, 3:5] = (velocity @ to_base.rotation.T)[:, :2]
                    origin = to_base.apply(sample.origin[None])[0] if sample.origin is not None else np.zeros(3)
                    origins.append(np.broadcast_to(origin, (len(points), 3)))
                points[:, -1] = max(0, t - sample.stamp_ns) / NS
                parts.append(points)
                sources.append(np.full(len(points), index, np.int16))
                used += 1
                scans[name] = sample.stamp_ns  # the newest usable scan, with or without returns
            if not used:
                missing[name] = 'no usable scan'
                continue
            try:
                mounts[name] = self.tf.lookup(self.config.frames.base, stream.frame_id or sensor.frame_id, t,
                                              extrapolation_ns=NS // 100)
            except TransformError:
                pass  # the mount is for health checks; the points are placed already
        if not parts:
            return None, None, None
        origin_rows = np.vstack(origins).astype(np.float32) if origins else None
        return np.vstack(parts).astype(np.float32), np.concatenate(sources), origin_rows


def _header_stamp(raw: bytes, topic: str) -> int:
    # Every sensor message starts with a std_msgs/Header: 4 bytes of CDR encapsulation, then
    # sec (int32) and nanosec (uint32), little- or big-endian as the encapsulation says.
    if len(raw) < 12:
        raise DecodeError(f'{topic}: message of {len(raw)} bytes is too short for a header')
    order = '<' if raw[1] in (1, 3) else '>'
    sec, nanosec = np.frombuffer(raw[4:12], dtype=np.dtype(f'{order}i4')).tolist()
    return int(sec) * NS + int(nanosec) % (1 << 32)


def _decode(sample: _Sample, stream: _Stream, assembler: KeyframeAssembler) -> Any:
    """Decode a sample once: images to CameraImage; clouds to (N, F) rows in the fixed frame."""
    config, topic = stream.config, stream.config.topic
    if config.modality == 'camera':
        image: CameraImage = (decode_compressed_image(sample.raw, topic) if sample.msgtype.endswith('CompressedImage')
                              else decode_image(sample.raw, topic))
        if image.encoding != 'rgb8':
            raise DecodeError(f'{topic}: {image.encoding} image; the camera encoder needs colour')
        return image
    fixed = assembler.config.frames.fixed
    tf = assembler.tf
    if config.modality == 'lidar':
        cloud = decode_pointcloud(sample.raw, topic)
        frame_id = stream.frame_id = cloud.frame_id or config.frame_id
        xyz = cloud.xyz
        times = np.full(len(xyz), sample.stamp_ns, np.int64)
        if 'time' in cloud.fields and len(xyz):
            offsets = np.nan_to_num(np.asarray(cloud.fields['time'], np.float64).reshape(-1), nan=0.0)
            times = sample.stamp_ns + np.round(offsets * NS).astype(np.int64)
        first, last = int(times.min(initial=sample.stamp_ns)), int(times.max(initial=sample.stamp_ns))
        pose_times = first + np.unique(np.linspace(0, last - first, POSE_SAMPLES).round().astype(np.int64))  # exact ends
        poses = np.stack([tf.lookup(fixed, frame_id, int(s), extrapolation_ns=NS // 100).matrix for s in pose_times])
        if len(pose_times) == 1:
            in_fixed = RigidTransform.from_matrix(poses[0]).apply(xyz.astype(np.float64))
        else:
            deskewed = compensate_ego_motion(xyz, times, pose_times, poses, int(pose_times[0]))
            in_fixed = RigidTransform.from_matrix(poses[0]).apply(deskewed.astype(np.float64))
        intensity = np.zeros(len(xyz), np.float32)
        if 'intensity' in cloud.fields:
            raw_intensity = np.asarray(cloud.fields['intensity']).reshape(-1)
            intensity = raw_intensity.astype(np.float32)
            if raw_intensity.dtype.kind in 'iu' or (len(intensity) and np.nanmax(intensity) > 1.0):
                intensity = intensity / 255.0
            intensity = np.clip(np.nan_to_num(intensity), 0.0, 1.0)
        rows = np.zeros((len(xyz), len(LIDAR_FIELDS)), np.float64)
        rows[:, :3] = in_fixed
        rows[:, 3] = intensity
        return rows
    radar = decode_radar(sample.raw, sample.msgtype, topic)
    frame_id = stream.frame_id = radar.frame_id or config.frame_id
    pose = tf.lookup(fixed, frame_id, sample.stamp_ns, extrapolation_ns=NS // 100)
    rows = np.zeros((len(radar), len(RADAR_FIELDS)), np.float64)
    rows[:, :3] = pose.apply(radar.xyz.astype(np.float64))
    velocity = np.zeros((len(radar), 3))
    velocity[:, :2] = np.nan_to_num(radar.velocity_comp, nan=0.0)
    rows[:, 3:5] = (velocity @ pose.rotation.T)[:, :2]
    rows[:, 5] = radar.rcs
    sample.origin = pose.translation.copy()
    return rows


def bag_frames(paths: str | Path | Sequence[str | Path], config: FusionConfig, *, lidar_sweeps: int = 3,
               radar_sweeps: int = 5, keys: str = 'auto', recover: bool = False,
               every: int = 1) -> Iterator[Frame]:
    """Frames of a recording, in time order (every ``every``-th key)."""
    from ..io.bag import BagReader

    assembler = KeyframeAssembler(config, lidar_sweeps=lidar_sweeps, radar_sweeps=radar_sweeps, keys=keys,
                                  every=every)
    with BagReader(paths, recover=recover) as reader:
        for message in reader.messages():
            yield from assembler.push(message.topic, message.msgtype, message.raw, message.stamp_ns)
    yield from assembler.finish()
