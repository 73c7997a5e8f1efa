"""Parameters: frozen dataclasses per stage, composed into one, loaded from ROS-form YAML.

A parameter file is what ``ros2 launch`` passes to the node, and the same file serves ``mmfusion
replay`` and the DDS node::

    /**:
      ros__parameters:
        frames: {fixed: map, base: base_link}
        grid: {x_range: [-51.2, 51.2], y_range: [-51.2, 51.2], z_range: [-5.0, 3.0], cell_size: 0.4}
        sensors:
          lidar_top: {modality: lidar, topic: /LIDAR_TOP, type: sensor_msgs/msg/PointCloud2, ...}

ROS 2 parameters are scalars and arrays of scalars nested in dicts, so the sensors are a dict keyed
by sensor name, never a list of dicts. Every key is checked against the dataclass it fills: an
unknown key or a value of the wrong type is a ``ConfigError`` whose message starts with the key path
(``sensors.cam_front.rate_hz: expected a number, got 'fast'``). Values derived from others (the grid
shape) are computed once, in ``__post_init__``, and can not be set in the file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from .errors import ConfigError

__all__ = [
    'CONFIG_DIR',
    'DEFAULT_CONFIG',
    'CalibrationSection',
    'ConsistencySection',
    'FramesConfig',
    'FusionConfig',
    'GridConfig',
    'HealthSection',
    'ModelSection',
    'OutputsSection',
    'RefineSection',
    'SensorConfig',
    'SyncSection',
    'TrackingSection',
    'config_from_dict',
    'load_config',
    'read_yaml',
]



def _config_dir() -> Path:
    """``config/`` of a source checkout, else where pip or colcon installed it (share/mmfusion_ros)."""
    checkout = Path(__file__).resolve().parents[1] / 'config'
    installed = Path(sys.prefix) / 'share' / 'mmfusion_ros' / 'config'
    return checkout if (checkout / 'default.yaml').is_file() else installed


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / 'default.yaml'

Modality = Literal['camera', 'lidar', 'radar']
MODALITIES: tuple[str, ...] = typing.get_args(Modality)

# Message types each modality can be read from.
SENSOR_TYPES: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    'camera': ('sensor_msgs/msg/CompressedImage', 'sensor_msgs/msg/Image'),
    'lidar': ('sensor_msgs/msg/PointCloud2',),
    'radar': ('sensor_msgs/msg/PointCloud2', 'radar_msgs/msg/RadarScan'),
})


@dataclass(frozen=True)
class SensorConfig:
    """One input stream: where it comes from and how its clock relates to the others."""

    modality: Modality
    topic: str
    type: str
    frame_id: str = ''  # expected header.frame_id; empty accepts what the messages say
    rate_hz: float = 10.0  # nominal rate, for staleness and rate diagnostics
    offset_ms: float = 0.0  # added to the message stamps: a known constant clock offset
    info_topic: str = ''  # cameras: the CameraInfo topic (required for cameras)

    def __post_init__(self) -> None:
        if not self.topic.startswith('/'):
            raise ConfigError(f'topic: {self.topic!r} must be absolute (start with "/")')
        if self.type not in SENSOR_TYPES[self.modality]:
            raise ConfigError(f'type: {self.modality} reads {", ".join(SENSOR_TYPES[self.modality])}, '
                              f'not {self.type!r}')
        if not self.rate_hz > 0:
            raise ConfigError(f'rate_hz: must be positive, got {self.rate_hz}')
        if self.modality == 'camera' and not self.info_topic.startswith('/'):
            raise ConfigError(f'info_topic: cameras need an absolute CameraInfo topic, got '
                              f'{self.info_topic!r}')
        if self.modality != 'camera' and self.info_topic:
            raise ConfigError(f'info_topic: only cameras have one ({self.modality} has {self.info_topic!r})')

    @property
    def offset_ns(self) -> int:
        return round(self.offset_ms * 1e6)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic this sensor reads (the data topic, then CameraInfo for cameras)."""
        return (self.topic, self.info_topic) if self.info_topic else (self.topic,)


@dataclass(frozen=True)
class FramesConfig:
    fixed: str = 'map'  # the frame the world stands still in (time-aware lookups go through it)
    base: str = 'base_link'  # the vehicle frame; detections are published in it

    def __post_init__(self) -> None:
        for name in ('fixed', 'base'):
            if not getattr(self, name):
                raise ConfigError(f'{name}: frame name must not be empty')


@dataclass(frozen=True)
class GridConfig:
    """The bird's-eye-view grid in the base frame; every modality lifts onto this one grid."""

    x_range: tuple[float, float] = (-51.2, 51.2)  # metres, [min, max)
    y_range: tuple[float, float] = (-51.2, 51.2)
    z_range: tuple[float, float] = (-5.0, 3.0)
    cell_size: float = 0.4  # metres per BEV cell, both axes
    shape: tuple[int, int] = field(init=False)  # derived: (rows along y, columns along x)

    def __post_init__(self) -> None:
        if not self.cell_size > 0:
            raise ConfigError(f'cell_size: must be positive, got {self.cell_size}')
        cells = []
        for name in ('y_range', 'x_range'):
            low, high = getattr(self, name)
            if not high > low:
                raise ConfigError(f'{name}: needs min < max, got [{low}, {high}]')
            count = (high - low) / self.cell_size
            if abs(count - round(count)) > 1e-6:
                raise ConfigError(f'{name}: extent {high - low:g} m is not a whole number of '
                                  f'{self.cell_size:g} m cells')
            cells.append(round(count))
        low, high = self.z_range
        if not high > low:
            raise ConfigError(f'z_range: needs min < max, got [{low}, {high}]')
        object.__setattr__(self, 'shape', (cells[0], cells[1]))


@dataclass(frozen=True)
class ModelSection:
    """Which network runs: a preset of ``model/config.py`` on this file's grid, and its weights."""

    preset: Literal['cpu', 'gpu'] = 'cpu'  # cpu: the real-time model; gpu: full resolution
    fuser: Literal['conv', 'gated'] = 'gated'
    weights: str = ''  # weights file; empty: the weights shipped in the package
    device: Literal['auto', 'cpu', 'cuda'] = 'auto'  # auto: CUDA when torch sees a GPU


@dataclass(frozen=True)
class SyncSection:
    """How sensor messages are grouped into frames (``sync/approximate.py``)."""

    trigger: str = ''  # the sensor whose messages start frames; empty: the first lidar
    # Sensors a frame waits for (their message nearest the trigger, within slop), at most timeout_ms;
    # the others join with their newest data the moment the trigger arrives (no added latency).
    wait_for: tuple[str, ...] = ()
    slop_ms: float = 60.0  # members lie within this of the trigger's stamp (inclusive)
    timeout_ms: float = 120.0  # after this (in the node's clock) a frame goes out without late sensors
    queue_size: int = 16  # per input; overflow drops the oldest, counted
    reset_on_backwards_ms: float = 500.0  # a stamp this far behind its input's newest resets (a looped bag)
    lidar_sweeps: int = 3  # sweeps of each lidar accumulated into a frame (deskewed, aged)
    radar_sweeps: int = 5  # scans of each radar accumulated into a frame

    def __post_init__(self) -> None:
        if not self.slop_ms >= 0 or not self.timeout_ms > 0 or not self.reset_on_backwards_ms >= 0:
            raise ConfigError(f'slop_ms, timeout_ms, reset_on_backwards_ms: need slop >= 0, timeout > 0, '
                              f'reset >= 0, got {self.slop_ms}, {self.timeout_ms}, {self.reset_on_backwards_ms}')
        if self.queue_size < 1 or self.lidar_sweeps < 1 or self.radar_sweeps < 1:
            raise ConfigError(f'queue_size, lidar_sweeps, radar_sweeps: must be >= 1, got {self.queue_size}, '
                              f'{self.lidar_sweeps}, {self.radar_sweeps}')


@dataclass(frozen=True)
class OutputsSection:
    """Output topics. ``~`` is the node's name (``namespace`` outside ROS: replay, DDS)."""

    namespace: str = '/mmfusion'
    objects: str = '~/output/objects'  # vision_msgs/msg/Detection3DArray
    disagreements: str = '~/output/disagreements'  # diagnostic_msgs/msg/DiagnosticArray, one status per flagged object
    markers: str = '~/output/markers'  # visualization_msgs/msg/MarkerArray, coloured by agreement
    diagnostics: str = '/diagnostics'  # diagnostic_msgs/msg/DiagnosticArray: sensors, sync, timing
    processing_time: str = '~/debug/processing_time_ms'  # std_msgs/msg/Float64
    pipeline_latency: str = '~/debug/pipeline_latency_ms'  # std_msgs/msg/Float64: sensor stamp -> publish
    score_threshold: float = 0.3  # detections below this are not published
    diagnostics_period_s: float = 1.0  # /diagnostics at most this often

    def __post_init__(self) -> None:
        if not self.namespace.startswith('/'):
            raise ConfigError(f'namespace: must be absolute (start with "/"), got {self.namespace!r}')
        for name in ('objects', 'disagreements', 'markers', 'diagnostics', 'processing_time', 'pipeline_latency'):
            topic = getattr(self, name)
            if not (topic.startswith('/') or topic.startswith('~/')):
                raise ConfigError(f'{name}: a topic starts with "/" or "~/", got {topic!r}')
        if not 0 <= self.score_threshold < 1 or not self.diagnostics_period_s > 0:
            raise ConfigError(f'score_threshold, diagnostics_period_s: need 0 <= threshold < 1 and a positive '
                              f'period, got {self.score_threshold}, {self.diagnostics_period_s}')

    def resolve(self, topic: str, node: str | None = None) -> str:
        """``~/x`` -> ``<node or namespace>/x``; absolute topics stay as they are."""
        base = (node or self.namespace).rstrip('/')
        return base + topic[1:] if topic.startswith('~/') else topic


@dataclass(frozen=True)
class ConsistencySection:
    """Per-detection modality support and disagreement flags (``consistency/``)."""

    support_score: float = 0.15  # a modality's own head above this at an object supports it
    camera_support_score: float = 0.05  # the camera's (weaker) head: 97 % of seen objects score above this
    camera_dark_mean: float = 70.0  # grey level (0-255): a darker image (night) is not expected to show objects
    min_lidar_points: int = 3  # current-sweep lidar points in the box that count as lidar support
    # The box grown by this on every side for that count (not in height): lidar returns lie on its faces,
    # and a box placed a few decimetres deep (seen measured: 0.4 m on a bus) holds none of them.
    lidar_margin_m: float = 0.5
    min_radar_points: int = 1  # radar returns in the box (grown by radar_margin_m) that count as support
    radar_margin_m: float = 1.0
    # Where a modality is expected to see an object (absence elsewhere is no disagreement).
    camera_range_m: float = 45.0  # a car is 10 pixels wide there in a 400-pixel, 70-degree image
    camera_small_range_m: float = 30.0  # pedestrians and cyclists: 0.6 m is 5 pixels at 30 m
    lidar_range_m: float = 50.0  # a car's returns thin out to a few beyond (12 % of cars unseen at 50-60 m)
    # Nearer, the lidar is expected to see an object whose size at its range should give it at least
    # lidar_expected_points returns: the beams its height spans (lidar_beam_spacing_deg apart) times
    # the firings across its width (lidar_azimuth_step_deg apart). The defaults are a 32-beam lidar's
    # (41.3 degrees of beams, 1084 firings a turn): a pedestrian is expected to 35 m or so, a car to 50.
    lidar_beam_spacing_deg: float = 1.33
    lidar_azimuth_step_deg: float = 0.33
    lidar_expected_points: float = 6.0
    radar_range_m: float = 50.0  # beyond, returns of a car thin out to none in many scans
    radar_pedestrian_range_m: float = 25.0  # pedestrians reflect little: radar is expected only nearer
    radar_hfov_deg: float = 120.0  # each radar's horizontal field of view (which radar covers an object)
    # Line of sight, judged in directions sight_bin_deg wide, against returns nearer than the object by
    # sight_margin_m. The lidar: hidden where occluded_fraction of the directions across it that a
    # beam came back from stopped nearer. A radar (bumper height): hidden where, in occluded_fraction
    # of them, radar_sight_min_points lidar returns rise from the radar so high that a ray over them
    # shows less than radar_sight_visible_m of the object's height, or leaves its beam (radar_vfov_deg):
    # a median barrier, a parked car, a wall the roof lidar looks over.
    sight_bin_deg: float = 1.0
    sight_margin_m: float = 1.0
    radar_vfov_deg: float = 10.0
    radar_sight_visible_m: float = 0.5
    radar_sight_min_points: int = 2
    occluded_fraction: float = 0.7  # an object this much hidden behind nearer ones is not expected
    # A healthy modality is said to miss a tracked object only once it has seen it in this many frames:
    # geometry alone does not know a barrier below a radar or a shadow (0: wherever geometry expects it).
    missing_after_sightings: int = 1
    # Conflicts.
    velocity_tolerance_mps: float = 2.5  # radar doppler vs the object's radial velocity, plus 25 % of its speed
    min_doppler_returns: int = 2
    doppler_agreement: float = 0.25  # share of an object's returns that must move as it does
    position_tolerance_m: float = 2.5  # a modality's own peak this far from the fused centre (or half its length)
    radar_position_tolerance_m: float = 4.0  # radar places objects coarsely (azimuth noise, sparse returns)
    radar_class_conflicts: bool = False  # radar tells car from truck poorly: its class is no evidence by default
    min_position_score: float = 0.5  # ... when its own head is at least this sure
    class_margin: float = 0.35  # a modality's best class beats the fused class by this much
    min_class_score: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.support_score < 1 or self.min_lidar_points < 1 or self.min_radar_points < 1 \
                or self.radar_margin_m < 0 or self.lidar_margin_m < 0:
            raise ConfigError(f'support_score in (0, 1), min points >= 1, margins >= 0: got {self.support_score}, '
                              f'{self.min_lidar_points}, {self.min_radar_points}, {self.radar_margin_m}, '
                              f'{self.lidar_margin_m}')
        for name in ('camera_range_m', 'camera_small_range_m', 'lidar_range_m', 'radar_range_m', 'radar_pedestrian_range_m',
                     'lidar_beam_spacing_deg', 'lidar_azimuth_step_deg', 'velocity_tolerance_mps', 'position_tolerance_m',
                     'radar_position_tolerance_m', 'radar_hfov_deg', 'radar_vfov_deg', 'sight_bin_deg'):
            if not getattr(self, name) > 0:
                raise ConfigError(f'{name}: must be positive, got {getattr(self, name)}')
        if not self.lidar_expected_points >= 0:
            raise ConfigError(f'lidar_expected_points: must be >= 0 (0: the range alone), got {self.lidar_expected_points}')
        for name in ('occluded_fraction', 'min_position_score', 'class_margin', 'min_class_score',
                     'camera_support_score', 'doppler_agreement'):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f'{name}: must be in (0, 1], got {getattr(self, name)}')
        for name in ('sight_margin_m', 'radar_sight_visible_m'):
            if not getattr(self, name) >= 0:
                raise ConfigError(f'{name}: must be >= 0, got {getattr(self, name)}')
        if isinstance(self.radar_sight_min_points, bool) or not isinstance(self.radar_sight_min_points, int) \
                or self.radar_sight_min_points < 1:
            raise ConfigError(f'radar_sight_min_points: must be an integer >= 1, got {self.radar_sight_min_points!r}')
        if self.min_doppler_returns < 1:
            raise ConfigError(f'min_doppler_returns: must be >= 1, got {self.min_doppler_returns}')
        if self.missing_after_sightings < 0:
            raise ConfigError(f'missing_after_sightings: must be >= 0, got {self.missing_after_sightings}')


@dataclass(frozen=True)
class CalibrationSection:
    """Online calibration health: camera extrinsic drift and clock offsets (``consistency/calibration.py``)."""

    # Camera drift by edge alignment: rotations about the camera body axes searched on a grid of
    # +-drift_search_deg in yaw and pitch (drift_step_deg), +-drift_roll_search_deg in roll
    # (drift_roll_step_deg; 0: roll is not searched).
    drift_search_deg: float = 2.0
    drift_step_deg: float = 0.25
    drift_roll_search_deg: float = 0.0
    drift_roll_step_deg: float = 1.0
    # Axes whose estimate sets the state; the others are estimated and reported only. Roll moves the
    # image least and pitch is placed only within the lidar's ring gap: on clean simulated drives their
    # estimates reach 1.5-2 degrees over a 6-image window, yaw's stay within 0.5.
    drift_judged_axes: tuple[str, ...] = ('yaw',)
    drift_cameras_per_frame: int = 2  # cameras whose drift is updated each frame, in turn (0: all)
    drift_window_frames: int = 6  # scored frames (distinct images) whose score surfaces are averaged
    drift_min_frames: int = 4  # scored frames before a drift is reported
    drift_max_edge_points: int = 400  # lidar edge samples scored per frame (an even subsample beyond)
    drift_min_edge_points: int = 30  # a frame with fewer is skipped
    drift_min_discontinuity: float = 0.1  # relative depth step that makes a lidar return an edge
    drift_edge_alpha: float = 0.3  # edge image: share of the sharp edge, the rest is its spread
    drift_edge_decay: float = 0.9  # spread: per pixel of distance from the edge
    drift_confidence_sigma: float = 8.0  # the estimate must beat the nominal by this many standard errors
    drift_degraded_deg: float = 0.75  # of the judged axes' estimate
    # A judged axis's peak must fall, one grid step to either side, by this share of its score (the
    # two falls summed); a flatter peak is a ridge the estimate slides along: unresolved. 0: no check.
    drift_min_sharpness: float = 0.01
    drift_failed_deg: float = 1.5
    # Radar clock offsets. 'static': from the radar's returns of the standing world against the lidar's
    # surfaces while the vehicle moves (StaticOffsetEstimator). 'tracks': from returns against tracked
    # objects (TimeOffsetEstimator; on the clean demo drive the returns' mean position, the near face
    # of a car and not its centre, read as offsets of over 150 ms on three radars). 'off': none.
    radar_offsets: Literal['static', 'tracks', 'off'] = 'static'
    static_offset_window_frames: int = 10  # radar scans whose scores are summed (0.8 s at 13 Hz)
    static_offset_min_returns: int = 60  # standing returns in the window before an estimate counts ...
    static_offset_min_scans: int = 6  # ... from at least this many scans
    static_offset_max_speed_mps: float = 0.5  # a return whose compensated velocity is below this stands
    static_offset_search_ms: float = 150.0  # candidate offsets: +- this ...
    static_offset_step_ms: float = 5.0  # ... in these steps
    static_offset_sigma_m: float = 0.2  # a moved return this far from the nearest lidar point scores e^-1/2
    static_offset_min_gain: float = 1.05  # the best offset's score over zero's and any rival peak's, to count
    static_offset_separation_ms: float = 25.0  # offsets farther than this from the best are a rival peak
    static_offset_degraded_ms: float = 20.0
    static_offset_confirm_scans: int = 6  # consecutive scans that must call the clock off
    # Also score a scan's returns on moving tracked objects against the lidar's points of them (each
    # moved by its track's velocity): the clock shows at a crossing where the vehicle waits.
    static_offset_moving_objects: bool = True
    # Clock offsets from matched (observation, reference track) pairs (radar_offsets: tracks).
    offset_window_frames: int = 40
    offset_min_pairs: int = 10  # moving pairs needed for an estimate
    offset_min_speed_mps: float = 2.0  # slower pairs (relative to the ego) carry no timing information
    offset_max_stderr_ms: float = 10.0  # a state other than ok needs a standard error at most this
    offset_fit_bias: bool = False  # fit a constant displacement along with the offset
    offset_degraded_ms: float = 30.0
    offset_failed_ms: float = 150.0

    def __post_init__(self) -> None:
        if self.radar_offsets not in ('static', 'tracks', 'off'):
            raise ConfigError(f"radar_offsets: expected one of static, tracks, off, got {self.radar_offsets!r}")
        for name in ('drift_window_frames', 'drift_min_frames', 'drift_max_edge_points', 'drift_min_edge_points',
                     'offset_window_frames', 'offset_min_pairs', 'static_offset_window_frames',
                     'static_offset_min_returns', 'static_offset_min_scans', 'static_offset_confirm_scans'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f'{name}: must be an integer >= 1, got {value!r}')
        if self.static_offset_min_scans > self.static_offset_window_frames:
            raise ConfigError(f'static_offset_min_scans: {self.static_offset_min_scans} exceeds '
                              f'static_offset_window_frames ({self.static_offset_window_frames})')
        if not 2 <= self.drift_min_frames <= self.drift_window_frames:
            raise ConfigError(f'drift_min_frames: must be in [2, drift_window_frames = {self.drift_window_frames}], '
                              f'got {self.drift_min_frames}')
        if self.drift_min_edge_points > self.drift_max_edge_points:
            raise ConfigError(f'drift_min_edge_points: {self.drift_min_edge_points} exceeds drift_max_edge_points '
                              f'({self.drift_max_edge_points})')
        if not 0 < self.drift_search_deg <= 10:
            raise ConfigError(f'drift_search_deg: must be in (0, 10], got {self.drift_search_deg}')
        if not 0 < self.drift_step_deg <= self.drift_search_deg:
            raise ConfigError(f'drift_step_deg: must be in (0, drift_search_deg = {self.drift_search_deg}], '
                              f'got {self.drift_step_deg}')
        if not 0 <= self.drift_roll_search_deg <= 10:
            raise ConfigError(f'drift_roll_search_deg: must be in [0, 10], got {self.drift_roll_search_deg}')
        if self.drift_roll_search_deg > 0 and not 0 < self.drift_roll_step_deg <= self.drift_roll_search_deg:
            raise ConfigError(f'drift_roll_step_deg: must be in (0, drift_roll_search_deg = '
                              f'{self.drift_roll_search_deg}], got {self.drift_roll_step_deg}')
        axes = ('roll', 'pitch', 'yaw')
        if not self.drift_judged_axes or any(a not in axes for a in self.drift_judged_axes):
            raise ConfigError(f'drift_judged_axes: expected one or more of {", ".join(axes)}, '
                              f'got {list(self.drift_judged_axes)}')
        if 'roll' in self.drift_judged_axes and self.drift_roll_search_deg == 0:
            raise ConfigError('drift_judged_axes: roll is judged but not searched (drift_roll_search_deg is 0)')
        if self.drift_cameras_per_frame < 0:
            raise ConfigError(f'drift_cameras_per_frame: must be an integer >= 0, got {self.drift_cameras_per_frame!r}')
        for name in ('drift_min_discontinuity', 'drift_edge_alpha', 'drift_edge_decay'):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f'{name}: must be in (0, 1), got {getattr(self, name)}')
        if not 0 <= self.drift_min_sharpness < 1:
            raise ConfigError(f'drift_min_sharpness: must be in [0, 1), got {self.drift_min_sharpness}')
        for name in ('drift_confidence_sigma', 'drift_degraded_deg', 'offset_min_speed_mps', 'offset_max_stderr_ms',
                     'offset_degraded_ms', 'static_offset_max_speed_mps', 'static_offset_search_ms',
                     'static_offset_step_ms', 'static_offset_sigma_m', 'static_offset_degraded_ms',
                     'static_offset_separation_ms'):
            if not getattr(self, name) > 0:
                raise ConfigError(f'{name}: must be positive, got {getattr(self, name)}')
        if not self.static_offset_step_ms <= self.static_offset_search_ms:
            raise ConfigError(f'static_offset_step_ms: {self.static_offset_step_ms} exceeds static_offset_search_ms '
                              f'({self.static_offset_search_ms})')
        if not self.static_offset_min_gain >= 1.0:
            raise ConfigError(f'static_offset_min_gain: must be >= 1, got {self.static_offset_min_gain}')
        for low, high in (('drift_degraded_deg', 'drift_failed_deg'), ('offset_degraded_ms', 'offset_failed_ms'),
                          ('static_offset_degraded_ms', 'offset_failed_ms')):
            if not getattr(self, high) > getattr(self, low):
                raise ConfigError(f'{high}: {getattr(self, high)} must exceed {low} ({getattr(self, low)})')


@dataclass(frozen=True)
class TrackingSection:
    """Objects followed across frames and the temporal filter on their flags (``consistency/tracking.py``)."""

    # Track life.
    max_missed: int = 3  # a confirmed track coasts through this many frames without a detection, then ends
    min_hits: int = 2  # detections before a track is confirmed; a track not yet confirmed ends on its first miss
    max_gap_s: float = 1.0  # a frame this long after the previous one (or older than it) starts afresh
    # Association gate, in metres around each track's predicted centre (fixed frame):
    # max(gate_min_m, gate_length_fraction * box length) + gate_speed_fraction * speed * dt + 2 sigma.
    gate_min_m: float = 2.0
    gate_length_fraction: float = 0.5
    gate_speed_fraction: float = 0.5  # room for acceleration and turns, as a share of the predicted travel
    class_mismatch_penalty_m: float = 1.0  # added to the distance when the class differs (soft, never a veto)
    # Velocity smoothing: a constant-velocity Kalman filter on the centre, fed by positions and the network.
    position_noise_m: float = 0.2  # std of a detected centre
    acceleration_noise_mps2: float = 2.0  # std of the unmodelled acceleration (how fast velocity may change)
    network_velocity_noise_mps: float = 1.5  # std of the network's velocity: its weight in the blend
    unknown_velocity_noise_mps: float = 10.0  # std of a new track's velocity when the network gives none
    # The radar's doppler (an object's median radial ground speed) is a third measurement of the velocity,
    # along the line of sight: from a track's doppler_gate_hits-th detection on, only within
    # doppler_gate_sigmas of the track's prediction; before that, always. doppler_gate_sigmas 0: never.
    doppler_noise_mps: float = 0.3
    doppler_gate_sigmas: float = 3.0
    doppler_gate_hits: int = 3
    # Flag persistence: raised when present in raise_frames of the last window frames of a track,
    # cleared after clear_frames consecutive frames without it.
    raise_frames: int = 2
    window: int = 3
    clear_frames: int = 2

    def __post_init__(self) -> None:
        for name in ('max_missed', 'min_hits', 'raise_frames', 'window', 'clear_frames', 'doppler_gate_hits'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == 'max_missed' else 1):
                raise ConfigError(f'{name}: must be an integer >= {0 if name == "max_missed" else 1}, got {value!r}')
        for name in ('max_gap_s', 'gate_min_m', 'position_noise_m', 'acceleration_noise_mps2',
                     'network_velocity_noise_mps', 'unknown_velocity_noise_mps', 'doppler_noise_mps'):
            if not getattr(self, name) > 0:
                raise ConfigError(f'{name}: must be positive, got {getattr(self, name)}')
        for name in ('gate_length_fraction', 'gate_speed_fraction', 'class_mismatch_penalty_m', 'doppler_gate_sigmas'):
            if not getattr(self, name) >= 0:
                raise ConfigError(f'{name}: must be >= 0, got {getattr(self, name)}')
        if self.raise_frames > self.window:
            raise ConfigError(f'raise_frames: {self.raise_frames} can not exceed window ({self.window})')


@dataclass(frozen=True)
class RefineSection:
    """Long vehicles' boxes refined with the lidar's points after decoding (``model/refine.py``)."""

    enabled: bool = True
    # The classes refined, each with its typical length in metres: where the lidar sees only a long
    # vehicle's near end, the box is placed by that end and this length (the network's length when longer).
    lengths: Mapping[str, float] = field(default_factory=lambda: types.MappingProxyType({'truck': 9.0, 'bus': 12.0}))
    max_point_age_s: float = 0.02  # only the current sweep's points: older sweeps smear a moving vehicle
    min_points: int = 10  # fewer points on the vehicle: the box is left as the network gave it
    margin_m: float = 4.0  # points are looked for this far beyond either end of the box
    lateral_margin_m: float = 0.8  # and this far beyond its sides (the network is 0.4 m off across a truck, median)
    yaw_search_deg: float = 15.0  # the heading is fitted within this many degrees of the network's
    yaw_step_deg: float = 1.0
    both_ends_tolerance_m: float = 0.3  # a seen extent this close to the length or longer: both ends seen

    def __post_init__(self) -> None:
        for name, length in self.lengths.items():
            if not length > 0:
                raise ConfigError(f'lengths.{name}: must be positive, got {length}')
        for name in ('max_point_age_s', 'margin_m', 'lateral_margin_m', 'yaw_search_deg', 'both_ends_tolerance_m'):
            if not getattr(self, name) >= 0:
                raise ConfigError(f'{name}: must be >= 0, got {getattr(self, name)}')
        if not self.yaw_step_deg > 0:
            raise ConfigError(f'yaw_step_deg: must be positive, got {self.yaw_step_deg}')
        if isinstance(self.min_points, bool) or not isinstance(self.min_points, int) or self.min_points < 2:
            raise ConfigError(f'min_points: must be an integer >= 2, got {self.min_points!r}')


@dataclass(frozen=True)
class HealthSection:
    """Per-sensor health over a sliding window (``consistency/health.py``): thresholds per condition."""

    # Persistence, in updates of that sensor: a content condition is reported after confirm_frames updates
    # in a row and cleared after clear_frames clean ones; silence and rate need no confirmation.
    confirm_frames: int = 2
    clear_frames: int = 3
    reference_sweeps: int = 10  # healthy updates the lidar occupancy and radar ghost baselines span
    reference_min: int = 3  # healthy updates before those are judged ('warming_up' until then)
    # Message timing: periods from the sensor's rate_hz, else the median interval seen.
    silent_periods: float = 1.6  # no message for this many periods: 'silent' (failed)
    rate_window_s: float = 2.0  # the message rate is counted over this window
    rate_low_ratio: float = 0.6  # measured rate below this share of the nominal: 'rate_low' (degraded)
    rate_gap_periods: float = 1.5  # an interval longer than this many periods lost round(interval) - 1 messages
    rate_gap_window: int = 10  # 'rate_low' also when the last this many intervals lost ...
    rate_min_lost: int = 2  # ... at least this many messages
    # Camera content, on the image area-downsampled to at most camera_work_width columns.
    camera_work_width: int = 320
    blackout_max_mean: float = 10.0  # grey levels (0-255): mean at most this ...
    blackout_max_std: float = 4.0  # ... and spread at most this: 'blackout' (failed)
    # Mean |difference| to the previous image (full resolution, grey levels) up to which it is the same image
    # again ('frozen', failed, at once): a stuck driver republishes the same bytes (0.0); a real sensor's
    # noise changes more, and so does a moving noise-free render of a bare wall (0.08 to 0.1 per frame).
    frozen_max_change: float = 0.02
    # ... judged only where the image could have changed: where the lidar's returns in the camera's view
    # moved since its last image (this share of the view's cells gained, lost or moved a return by more
    # than frozen_view_change_m; a coarse grid of nearest depths). A noise-free render of a bus that
    # drives beside the vehicle at its speed, over a bare road, repeats exactly; so does a parked car's.
    frozen_view_change_m: float = 0.3
    frozen_view_change_share: float = 0.02
    saturation_level: int = 250  # a pixel whose three channels all reach this is saturated
    overexposed_fraction: float = 0.3  # saturated share: 'overexposed', degraded from here ...
    overexposed_failed_fraction: float = 0.7  # ... failed from here
    # Occlusion: blocks of the image with two-dimensional texture (which changes when it moves) that match
    # each of the last occlusion_window images while the scene moves, in regions of occlusion_min_region
    # or more: an opaque, textured patch on the lens (a featureless one reads like sky).
    occlusion_grid: tuple[int, int] = (32, 18)  # blocks across, down
    occlusion_window: int = 6  # images; also the delay before an occlusion can show
    # ... unless the blocks changed first and have matched this many images since (0: off; < occlusion_window)
    occlusion_onset_images: int = 2
    occlusion_max_change: float = 0.75  # grey levels, a block's mean |difference|: unchanged
    occlusion_min_texture: float = 1.5  # grey levels, sqrt of the smaller structure tensor eigenvalue
    # With the direction of travel known (odometry and the camera's calibration): this sqrt share of a
    # block's gradient energy must lie along the scene's motion for the block to count as texture that
    # ought to change (isotropic texture about 0.7; lane lines and kerbs running to the focus of
    # expansion 0.1-0.2: driving slides them along themselves)
    occlusion_min_flow_share: float = 0.3
    # With ego motion unknown, this share of the textured blocks must change by occlusion_moving_change or
    # more for the scene to count as moving: a standing vehicle's still surroundings are no occlusion.
    occlusion_moving_change: float = 2.0
    occlusion_min_moving: float = 0.5
    occlusion_min_region: float = 0.12  # share of the image in one region (scattered still blocks are distant scenery)
    occluded_fraction: float = 0.2  # stuck share: 'occluded', degraded from here (distant scenery holds still for 0.1)
    occluded_failed_fraction: float = 0.5  # ... failed from here
    # Lidar occupancy, by azimuth bins and by beam (ring, else elevation bins) of the sweep in the lidar
    # frame, against the per-bin median of the last reference_sweeps healthy sweeps.
    lidar_min_range_m: float = 1.0  # nearer returns (the vehicle's own body, the housing) are left out
    sector_bin_deg: float = 2.0
    sector_min_points: int = 5  # a bin is expected to fill when its reference has this many points
    sector_empty_ratio: float = 0.1  # an expected bin with fewer than this share of its reference is lost
    sector_min_deg: float = 10.0  # lost arcs narrower than this are ignored; wider: 'sector_loss' (degraded)
    sector_failed_deg: float = 180.0  # ... failed from this many degrees lost in all
    beam_bin_deg: float = 0.25  # without rings: beams closer than two bins in elevation merge into one
    beam_min_points: int = 20  # a beam is expected when its reference has this many points
    # ... and this share of the median expected beam's: without rings, a neighbour's returns spilling
    # into a bin between two beams (a ground beam as the vehicle pitches) are no beam of their own.
    beam_min_share: float = 0.1
    # An expected beam below this share of its reference is lost, when a beam above it still returns (an
    # open sky empties beams from the top down, so an empty top is no loss).
    beam_empty_ratio: float = 0.1
    beam_failed_fraction: float = 0.5  # 'beam_loss' is degraded, failed from this share of the beams
    # Scatter (rain, snow, spray, dust): returns off drops in free air near the sensor stand alone, where
    # returns of surfaces (the road, a car) come in scan lines. The share of the returns nearer than
    # scatter_range_m that are alone in their scatter_voxel_m cube: 'scatter', degraded from
    # scatter_fraction (clean simulated drives 0.002 to 0.007, the real nuScenes, KITTI and PJLab sweeps
    # 0.001 to 0.005; the simulator's heavy rain 0.012 to 0.034), failed from scatter_failed_fraction.
    # Fewer than scatter_min_points near returns: not judged. Once reference_min sweeps are learnt, also
    # scatter_ratio times the lidar's own ordinary share (a coarse scan pattern leaves more returns alone:
    # 0.027 for the test rig's 256 azimuth steps).
    scatter_range_m: float = 12.0
    scatter_voxel_m: float = 0.6
    scatter_min_points: int = 200
    scatter_fraction: float = 0.01
    scatter_ratio: float = 3.0
    scatter_failed_fraction: float = 0.2
    # Radar ghosts: returns that move (compensated speed above ghost_min_speed_mps) where the lidar shows
    # nothing, counted over ghost_window scans, against the count per scan learned from ordinary scans.
    # Standing clutter without lidar support (a kerb, a sign beyond the lidar's rings) is no ghost.
    ghost_window: int = 3  # scans (about 0.2 s at 13 Hz); 'ghosts' needs no further confirmation
    ghost_min_returns: int = 10  # fewer returns in the window: not judged
    ghost_reference_scans: int = 40  # ordinary scans the ghost count is judged against (about 3 s)
    ghost_min_speed_mps: float = 1.0
    ghost_place_m: float = 2.0  # suspects closer than this to one another are one place and count once
    # 'ghosts' (degraded): at least ghost_min_count such places in the window, a count the rate of the
    # ordinary scans reaches by chance with probability below ghost_p (the two counts' conditional
    # binomial test), and ghost_min_fraction of the window's returns
    ghost_min_count: int = 8
    ghost_p: float = 1e-3
    ghost_min_fraction: float = 0.05
    ghost_failed_fraction: float = 0.8  # ... failed from this share

    def __post_init__(self) -> None:
        for name in ('confirm_frames', 'clear_frames', 'reference_sweeps', 'reference_min', 'camera_work_width',
                     'occlusion_window', 'sector_min_points', 'beam_min_points', 'ghost_window', 'ghost_min_returns', 'ghost_reference_scans',
                     'ghost_min_count',
                     'scatter_min_points', 'rate_gap_window', 'rate_min_lost'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f'{name}: must be an integer >= 1, got {value!r}')
        if self.reference_min > self.reference_sweeps:
            raise ConfigError(f'reference_min: {self.reference_min} can not exceed reference_sweeps '
                              f'({self.reference_sweeps})')
        if not 0 <= self.occlusion_onset_images < self.occlusion_window or isinstance(self.occlusion_onset_images, bool):
            raise ConfigError(f'occlusion_onset_images: must be in [0, occlusion_window = {self.occlusion_window}), '
                              f'got {self.occlusion_onset_images!r}')
        if self.camera_work_width < 16 or min(self.occlusion_grid) < 2:
            raise ConfigError(f'camera_work_width, occlusion_grid: need >= 16 columns and a grid of at least '
                              f'2 x 2, got {self.camera_work_width}, {list(self.occlusion_grid)}')
        if not self.rate_gap_periods > 1:
            raise ConfigError(f'rate_gap_periods: must exceed 1 (a gap is longer than a period), got {self.rate_gap_periods}')
        for name in ('silent_periods', 'rate_window_s', 'blackout_max_mean', 'blackout_max_std', 'frozen_max_change',
                     'frozen_view_change_m',
                     'occlusion_max_change', 'occlusion_min_texture', 'occlusion_moving_change', 'sector_bin_deg',
                     'sector_min_deg', 'beam_bin_deg', 'ghost_min_speed_mps', 'ghost_place_m',
                     'lidar_min_range_m', 'scatter_range_m', 'scatter_voxel_m', 'scatter_ratio'):
            if not getattr(self, name) > 0:
                raise ConfigError(f'{name}: must be positive, got {getattr(self, name)}')
        for name in ('rate_low_ratio', 'overexposed_fraction', 'overexposed_failed_fraction', 'occlusion_min_moving',
                     'occlusion_min_region', 'occlusion_min_flow_share', 'occluded_fraction', 'occluded_failed_fraction', 'sector_empty_ratio',
                     'beam_empty_ratio', 'beam_min_share', 'frozen_view_change_share', 'beam_failed_fraction', 'ghost_p', 'ghost_min_fraction', 'ghost_failed_fraction', 'scatter_fraction',
                     'scatter_failed_fraction'):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f'{name}: must be in (0, 1], got {getattr(self, name)}')
        for low, high in (('overexposed_fraction', 'overexposed_failed_fraction'),
                          ('occluded_fraction', 'occluded_failed_fraction'), ('sector_min_deg', 'sector_failed_deg'),
                          ('scatter_fraction', 'scatter_failed_fraction')):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f'{high}: {getattr(self, high)} is below {low} ({getattr(self, low)})')
        if not 0 < self.saturation_level <= 255:
            raise ConfigError(f'saturation_level: must be in (0, 255], got {self.saturation_level}')
        if abs(360 / self.sector_bin_deg - round(360 / self.sector_bin_deg)) > 1e-6:
            raise ConfigError(f'sector_bin_deg: {self.sector_bin_deg} does not divide 360 degrees')
        if self.sector_failed_deg > 360:
            raise ConfigError(f'sector_failed_deg: at most 360, got {self.sector_failed_deg}')


@dataclass(frozen=True)
class FusionConfig:
    """Everything one node, replay or DDS bridge needs, composed from the stage configs."""

    sensors: Mapping[str, SensorConfig]
    frames: FramesConfig = FramesConfig()
    grid: GridConfig = GridConfig()
    model: ModelSection = ModelSection()
    sync: SyncSection = SyncSection()
    outputs: OutputsSection = OutputsSection()
    consistency: ConsistencySection = ConsistencySection()
    calibration: CalibrationSection = CalibrationSection()
    health: HealthSection = HealthSection()
    tracking: TrackingSection = TrackingSection()
    refine: RefineSection = RefineSection()

    def __post_init__(self) -> None:
        if not self.sensors:
            raise ConfigError('sensors: at least one sensor must be declared')
        seen: dict[str, str] = {}
        for name, sensor in self.sensors.items():
            for topic in sensor.topics:
                if topic in seen:
                    raise ConfigError(f'sensors.{name}.topic: {topic} is also read by sensor {seen[topic]}')
                seen[topic] = name
        for key, names in (('trigger', [self.sync.trigger] if self.sync.trigger else []),
                           ('wait_for', list(self.sync.wait_for))):
            unknown = [n for n in names if n not in self.sensors]
            if unknown:
                raise ConfigError(f'sync.{key}: {", ".join(map(repr, unknown))} is not a declared sensor '
                                  f'({", ".join(self.sensors)})')

    @property
    def trigger_sensor(self) -> str | None:
        """The sensor that starts frames: ``sync.trigger``, else the first lidar, else none."""
        if self.sync.trigger:
            return self.sync.trigger
        return next(iter(self.sensors_of('lidar')), None)

    def sensors_of(self, modality: str) -> dict[str, SensorConfig]:
        return {name: s for name, s in self.sensors.items() if s.modality == modality}


def load_config(path: str | Path | Sequence[str | Path] = DEFAULT_CONFIG, node_name: str = 'mmfusion') -> FusionConfig:
    """Read a ROS-form parameter file (or several, later ones overriding) into a ``FusionConfig``.

    The parameters are taken from the ``/**`` section, or from the section of ``node_name`` (with or
    without a leading slash or namespace), merged in that order as ROS 2 does; several files merge
    key by key in the order given, as ``ros2 run ... --params-file A --params-file B`` does.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    if not paths:
        raise ConfigError('no parameter file given')
    params: dict[str, Any] = {}
    for one in paths:
        params = _merge(params, _parameters(one, node_name))
    where = ' + '.join(map(str, paths))
    try:
        return config_from_dict(FusionConfig, params)
    except ConfigError as err:
        raise ConfigError(f'{where}: {err}') from None


def _parameters(path: Path, node_name: str) -> dict[str, Any]:
    document = read_yaml(path, 'parameter file')
    if not isinstance(document, dict):
        raise ConfigError(f'{path}: expected a mapping of node names to ros__parameters')
    params: dict[str, Any] = {}
    matched = False
    for key, section in document.items():
        if str(key) != '/**' and str(key).rsplit('/', 1)[-1] != node_name:
            continue
        if not isinstance(section, dict) or set(section) != {'ros__parameters'}:
            raise ConfigError(f'{path}: {key}: expected exactly one key, ros__parameters')
        body = section['ros__parameters']
        if not isinstance(body, dict):
            raise ConfigError(f'{path}: {key}.ros__parameters: expected a mapping')
        params = _merge(params, body)
        matched = True
    if not matched:
        raise ConfigError(f'{path}: no "/**" or "{node_name}" section with ros__parameters')
    return params


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``; unreadable files and bad YAML are one-line ConfigErrors."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f'{path}: cannot read {what} ({err.strerror or err})') from err
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' line {mark.line + 1}' if mark else ''
        raise ConfigError(f'{path}:{where} not valid YAML ({getattr(err, "problem", err)})') from err


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_dict(cls: type, data: Mapping[str, Any], path: str = '') -> Any:
    """Build dataclass ``cls`` from plain data, checking every key and type against its fields."""
    if not isinstance(data, Mapping):
        raise ConfigError(f'{path or "parameters"}: expected a mapping, got {_describe(data)}')
    hints = typing.get_type_hints(cls)
    settable = {f.name: f for f in dataclasses.fields(cls) if f.init}
    derived = {f.name for f in dataclasses.fields(cls) if not f.init}
    kwargs = {}
    for key, value in data.items():
        key_path = f'{path}.{key}' if path else str(key)
        if key in derived:
            raise ConfigError(f'{key_path}: is derived from other parameters and can not be set')
        if key not in settable:
            raise ConfigError(f'{key_path}: unknown parameter; expected one of {", ".join(sorted(settable))}')
        kwargs[key] = _convert(hints[key], value, key_path)
    missing = [name for name, f in settable.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f'{path + "." if path else ""}{missing[0]}: required parameter is missing')
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f'{path + "." if path else ""}{err}') from None


def _convert(hint: Any, value: Any, key_path: str) -> Any:
    """Check ``value`` against the annotation ``hint``; return it in the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, key_path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f'{key_path}: expected one of {", ".join(map(str, args))}, got {value!r}')
        return value
    if origin in (collections.abc.Mapping, dict) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f'{key_path}: expected a mapping, got {_describe(value)}')
        value_type = args[1] if args else Any
        return types.MappingProxyType({str(k): _convert(value_type, v, f'{key_path}.{k}')
                                       for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{key_path}: expected a list, got {_describe(value)}')
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f'{key_path}[{i}]') for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f'{key_path}: expected {len(args)} values, got {len(value)}')
        return tuple(_convert(a, v, f'{key_path}[{i}]') for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{key_path}: expected true or false, got {_describe(value)}')
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{key_path}: expected an integer, got {_describe(value)}')
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f'{key_path}: expected a finite number, got {_describe(value)}')
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f'{key_path}: expected a string, got {_describe(value)}')
        return value
    if hint is Any:
        return value
    raise ConfigError(f'{key_path}: parameters of type {hint} are not supported')


def _describe(value: Any) -> str:
    return f'{type(value).__name__} {value!r}' if not isinstance(value, (dict, list)) else type(value).__name__
