"""The simulation loop: sensor ticks in time order, rendered, faulted, encoded, written.

Every sensor ticks at its own rate (from the fusion parameter file) with its own phase and a small
jitter, so stamps are not aligned and synchronisation has real work to do. For each tick the sensor
renders the world at its true time; faults then change what it records (never the ground truth) and
may shift its stamp or drop the message.

What a recording holds (topics from the fusion parameter file, frames from its sensors):

| topic | type | when |
| --- | --- | --- |
| each lidar's topic | sensor_msgs/PointCloud2 (x y z intensity ring time) | each sweep; stamp = sweep start |
| each camera's topic + info_topic | CompressedImage (jpeg) + CameraInfo | each frame |
| each radar's topic | PointCloud2 (x y z doppler rcs vx vy vx_comp vy_comp) | each scan |
| /tf | map -> base_link | at every sensor tick's true time |
| /tf_static | base_link -> every sensor frame (nominal calibration) | once, at the start |
| /mmfusion/ground_truth | vision_msgs/Detection3DArray in base_link | at each lidar sweep's true start |
| /mmfusion/faults | diagnostic_msgs/DiagnosticArray, one status per active fault | with the ground truth |

Ground-truth velocity is the actor's velocity over the ground, expressed in base_link axes (as
nuScenes annotates it), carried as in ``mmfusion_ros/msgs/README.md``.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ..config import FusionConfig
from ..errors import ConfigError
from ..io.bag import BagWriter
from ..io.json_file import write_json
from ..msgs.encode import (
    encode_camera_info,
    encode_compressed_image,
    encode_detections,
    encode_diagnostics,
    encode_pointcloud,
    encode_radar,
    encode_tf,
)
from ..types import CameraImage, Detections3D, PointCloud, RadarPoints, RigidTransform, TransformStamped
from .faults import FaultInjector, FaultSchedule, affected_objects, fault_statuses, pose_error, stamp_offset_ns
from .scenario import Scenario
from .sensors import render_camera, render_lidar, render_radar
from .world import World
from .world_gen import generate_world

__all__ = ['FAULTS_TOPIC', 'GROUND_TRUTH_TOPIC', 'Simulation', 'SimulationStats', 'Sink', 'record_bag', 'record_dataset']

GROUND_TRUTH_TOPIC = '/mmfusion/ground_truth'
FAULTS_TOPIC = '/mmfusion/faults'
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
GROUND_TRUTH_RANGE_M = 80.0  # actors farther than this from the ego are not annotated
JITTER_S = 0.001  # 1 sigma of each tick's deviation from its nominal time


class Sink(Protocol):
    """Where encoded messages go (a BagWriter satisfies it)."""

    def add_topic(self, name: str, msgtype: str, *, qos: str | None = None) -> None: ...

    def write(self, topic: str, stamp_ns: int, raw: bytes) -> None: ...


class Tick(NamedTuple):
    t: float  # true time, seconds from the scene start
    order: int  # tie-break: sensor order in the config
    sensor: str


@dataclass
class SimulationStats:
    sweeps: int = 0  # lidar sweeps written (the frame count)
    messages: dict[str, int] = field(default_factory=dict)  # per topic
    bytes_written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # per sensor, by faults
    sim_s: float = 0.0
    wall_s: float = 0.0

    def count(self, topic: str, raw: bytes) -> None:
        self.messages[topic] = self.messages.get(topic, 0) + 1
        self.bytes_written += len(raw)


class Simulation:
    """One scene: a world from a scenario and seed, the rig and topics, and a fault schedule."""

    def __init__(self, scenario: Scenario, config: FusionConfig, faults: FaultSchedule, seed: int) -> None:
        self.scenario = scenario
        self.config = config
        self.faults = faults
        self.seed = seed
        self.rig = scenario.rig
        missing = [name for name in config.sensors if name not in self.rig.sensors]
        if missing:
            raise ConfigError(f'sensors: the simulator rig has no mount for {", ".join(missing)}; '
                              f'it has {", ".join(self.rig.sensors)}')
        self.world: World = generate_world(scenario, seed)
        self._injector = FaultInjector(faults, seed, self.rig)
        self._rng = np.random.default_rng([seed, 1])

    def stamp_ns(self, t: float) -> int:
        return self.scenario.start_ns + round(t * 1e9)

    def ticks(self, duration_s: float) -> Iterator[Tick]:
        """Every sensor's ticks in time order: own rate, own phase, small jitter, all seeded."""
        heap: list[Tick] = []
        streams = {}
        for order, (name, sensor) in enumerate(self.config.sensors.items()):
            rng = np.random.default_rng([self.seed, 2, order])
            period = 1.0 / sensor.rate_hz
            streams[name] = (rng, period)
            heapq.heappush(heap, Tick(float(rng.uniform(0, period)), order, name))
        while heap:
            tick = heapq.heappop(heap)
            if tick.t >= duration_s:
                continue
            yield tick
            rng, period = streams[tick.sensor]
            nominal = tick.t + period
            heapq.heappush(heap, Tick(max(nominal + float(rng.normal(0, JITTER_S)), tick.t + period / 2),
                                      tick.order, tick.sensor))

    def run(self, sink: Sink, *, duration_s: float | None = None, sweeps: int | None = None,
            progress: Callable[[float], None] | None = None) -> SimulationStats:
        """Simulate until ``duration_s`` of scene time or ``sweeps`` lidar sweeps, writing to ``sink``."""
        duration = self.scenario.duration_s if duration_s is None else duration_s
        if sweeps is not None:
            lidar_rate = min(s.rate_hz for s in self.config.sensors_of('lidar').values())
            duration = (sweeps + 0.5) / lidar_rate
        stats = SimulationStats()
        start = time.perf_counter()
        self._declare_topics(sink)
        self._write(sink, stats, TF_STATIC_TOPIC, self.stamp_ns(0.0), encode_tf(self._static_transforms()))
        for tick in self.ticks(duration):
            if sweeps is not None and stats.sweeps >= sweeps and tick.sensor in self.config.sensors_of('lidar'):
                break
            self._tick(sink, stats, tick)
            if progress is not None:
                progress(tick.t)
        stats.sim_s = duration
        stats.wall_s = time.perf_counter() - start
        return stats

    # -- per tick -----------------------------------------------------------------------------

    def _tick(self, sink: Sink, stats: SimulationStats, tick: Tick) -> None:
        sensor = self.config.sensors[tick.sensor]
        t = tick.t
        self._write(sink, stats, TF_TOPIC, self.stamp_ns(t), encode_tf([self._ego_transform(t)]))
        if sensor.modality == 'lidar':
            # Ground truth and the fault record follow the lidar's true time, whatever happens to it.
            self._write_ground_truth(sink, stats, t)
        if self._injector.drop(tick.sensor, t):
            stats.dropped[tick.sensor] = stats.dropped.get(tick.sensor, 0) + 1
            return
        active = self.faults.active(tick.sensor, t)
        error = pose_error(active, self.rig)
        stamp = self.stamp_ns(t) + stamp_offset_ns(active) + sensor.offset_ns
        frame_id = sensor.frame_id or tick.sensor
        if sensor.modality == 'lidar':
            snapshot = self.world.snapshot(t)
            cloud, _ = render_lidar(self.world, self.rig, tick.sensor, t, self._rng, pose_error=error,
                                    sweep_s=1.0 / sensor.rate_hz, snapshot=snapshot)
            cloud = self._injector.lidar(tick.sensor, t, _restamp(cloud, stamp, frame_id))
            self._write(sink, stats, sensor.topic, stamp, encode_pointcloud(cloud))
        elif sensor.modality == 'camera':
            snapshot = self.world.snapshot(t)
            pixels = render_camera(snapshot, self.world, self.rig, tick.sensor, t,
                                   lighting=self.scenario.lighting, pose_error=error)
            pixels = self._injector.camera(tick.sensor, t, pixels)
            intrinsics = self.rig.camera.intrinsics(frame_id)
            image = CameraImage(stamp, frame_id, pixels, 'rgb8', intrinsics)
            self._write(sink, stats, sensor.topic, stamp,
                        encode_compressed_image(image, 'jpeg', self.rig.camera.jpeg_quality))
            self._write(sink, stats, sensor.info_topic, stamp, encode_camera_info(intrinsics, stamp))
        else:
            snapshot = self.world.snapshot(t)
            radar, _ = render_radar(snapshot, self.world, self.rig, tick.sensor, t, self._rng, pose_error=error)
            radar = self._injector.radar(tick.sensor, t, _restamp(radar, stamp, frame_id))
            self._write(sink, stats, sensor.topic, stamp, encode_radar(radar, sensor.type))

    def ground_truth(self, t: float) -> Detections3D:
        """Actors within range of the ego at time ``t``, in base_link."""
        rotation, translation = self.world.ego_pose(t)
        ego_yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        centers, sizes, yaws, velocities, labels, ids = [], [], [], [], [], []
        for actor in self.world.actors:
            centre, yaw, velocity = actor.box_at(t)
            local = rotation.T @ (centre - translation)
            if np.hypot(local[0], local[1]) > GROUND_TRUTH_RANGE_M:
                continue
            centers.append(local)
            sizes.append(actor.size)
            yaws.append(_wrap(yaw - ego_yaw))
            velocities.append(rotation[:2, :2].T @ velocity)
            labels.append(actor.label)
            ids.append(str(actor.track_id))
        if not centers:
            return Detections3D.empty(self.stamp_ns(t), self.config.frames.base)
        return Detections3D(self.stamp_ns(t), self.config.frames.base, np.array(centers), np.array(sizes),
                            np.array(yaws), np.array(velocities), tuple(labels), np.ones(len(centers)),
                            tuple(ids))

    def _write_ground_truth(self, sink: Sink, stats: SimulationStats, t: float) -> None:
        truth = self.ground_truth(t)
        stamp = self.stamp_ns(t)
        self._write(sink, stats, GROUND_TRUTH_TOPIC, stamp, encode_detections(truth))
        stats.sweeps += 1
        active = []
        for fault in self.faults.active_any(t):
            sensor_to_base = self.rig.sensor_to_base(fault.sensor)
            centres = sensor_to_base.inverse().apply(truth.centers) if len(truth) else np.zeros((0, 3))
            active.append((fault, affected_objects(fault, centres, truth.ids, self.rig)))
        self._write(sink, stats, FAULTS_TOPIC, stamp,
                    encode_diagnostics(stamp, fault_statuses(active, self.scenario.start_ns)))

    # -- transforms ---------------------------------------------------------------------------

    def _ego_transform(self, t: float) -> TransformStamped:
        rotation, translation = self.world.ego_pose(t)
        return TransformStamped(self.stamp_ns(t), self.config.frames.fixed, self.config.frames.base,
                                RigidTransform(rotation, translation))

    def _static_transforms(self) -> list[TransformStamped]:
        return [TransformStamped(self.stamp_ns(0.0), self.config.frames.base, s.frame_id or name,
                                 self.rig.sensor_to_base(name), static=True)
                for name, s in self.config.sensors.items()]

    def _declare_topics(self, sink: Sink) -> None:
        sink.add_topic(TF_STATIC_TOPIC, 'tf2_msgs/msg/TFMessage', qos='static')
        sink.add_topic(TF_TOPIC, 'tf2_msgs/msg/TFMessage')
        sink.add_topic(GROUND_TRUTH_TOPIC, 'vision_msgs/msg/Detection3DArray')
        sink.add_topic(FAULTS_TOPIC, 'diagnostic_msgs/msg/DiagnosticArray')
        for sensor in self.config.sensors.values():
            sink.add_topic(sensor.topic, sensor.type, qos='sensor_data')
            if sensor.info_topic:
                sink.add_topic(sensor.info_topic, 'sensor_msgs/msg/CameraInfo', qos='sensor_data')

    @staticmethod
    def _write(sink: Sink, stats: SimulationStats, topic: str, stamp_ns: int, raw: bytes) -> None:
        sink.write(topic, stamp_ns, raw)
        stats.count(topic, raw)


def _restamp(sample: PointCloud | RadarPoints, stamp_ns: int, frame_id: str) -> PointCloud | RadarPoints:
    return dataclasses.replace(sample, stamp_ns=stamp_ns, frame_id=frame_id)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def record_bag(simulation: Simulation, out: Path, *, storage: str = 'mcap', duration_s: float | None = None,
               sweeps: int | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Run one scene into a rosbag2 at ``out``; returns the figures ``mmfusion simulate`` reports.

    The bag appears under ``out`` only when the whole scene was written.
    """
    total = simulation.scenario.duration_s if duration_s is None else duration_s
    if sweeps is not None:
        lidar_rate = min(s.rate_hz for s in simulation.config.sensors_of('lidar').values())
        total = sweeps / lidar_rate
    with tqdm(total=round(total, 2), unit='sim s', disable=not show_progress, leave=False, mininterval=0.5,
              desc=out.name, bar_format='{l_bar}{bar}| {n:.1f}/{total:.1f} sim s [{elapsed}<{remaining}]') as bar:
        def advance(t: float) -> None:
            bar.update(max(0.0, min(t, total) - bar.n))

        with BagWriter(out, storage, overwrite=overwrite) as writer:
            stats = simulation.run(writer, duration_s=duration_s, sweeps=sweeps, progress=advance)
    size = sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) if out.is_dir() else out.stat().st_size
    return {
        'bag': str(out),
        'storage': storage,
        'scenario': simulation.scenario.name,
        'seed': simulation.seed,
        'faults': [f.type + '/' + f.sensor for f in simulation.faults.faults],
        'frames': stats.sweeps,
        'sim_s': round(stats.sim_s, 3),
        'wall_s': round(stats.wall_s, 3),
        'fps': round(stats.sweeps / stats.wall_s, 3) if stats.wall_s > 0 else 0.0,
        'realtime_factor': round(stats.sim_s / stats.wall_s, 4) if stats.wall_s > 0 else 0.0,
        'bag_bytes': size,
        'bytes_per_sim_s': round(size / stats.sim_s) if stats.sim_s > 0 else 0,
        'messages': dict(sorted(stats.messages.items())),
        'dropped_by_faults': dict(sorted(stats.dropped.items())),
    }


def record_dataset(out: Path, scenes: int, scenarios: Sequence[Scenario], schedules: Sequence[FaultSchedule],
                   config: FusionConfig, *, seed: int = 0, storage: str = 'mcap',
                   duration_s: float | None = None, sweeps: int | None = None) -> dict:
    """A training set: ``scenes`` bags in ``out`` (``scene_00000`` ...) and ``out/index.json``.

    Scene ``i`` runs ``scenarios[i % len(scenarios)]`` with seed ``seed + i``. Each scene is an
    ordinary bag, so training reads exactly the bytes a vehicle would publish; rendering dominates the
    cost, so a bag costs nothing measurable over a private format. The index is rewritten after every
    scene and finished scenes are kept, so an interrupted run picks up where it stopped.
    """
    index_path = out / 'index.json'
    index = json.loads(index_path.read_text()) if index_path.is_file() else {'scenes': []}
    for i in tqdm(range(scenes), desc='scenes', unit='scene'):
        name = f'scene_{i:05d}'
        if any(entry['bag'] == name for entry in index['scenes']) and (out / name).exists():
            continue
        k = i % len(scenarios)
        simulation = Simulation(scenarios[k], config, schedules[k], seed + i)
        result = record_bag(simulation, out / name, storage=storage, duration_s=duration_s, sweeps=sweeps,
                            overwrite=True)
        index['scenes'] = [e for e in index['scenes'] if e['bag'] != name] + [{**result, 'bag': name}]
        write_json(index_path, index)
    index['scenes'].sort(key=lambda entry: entry['bag'])
    index['frames'] = sum(entry['frames'] for entry in index['scenes'])
    write_json(index_path, index)
    return index
