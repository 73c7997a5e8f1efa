"""Parameters of the fusion network: one frozen dataclass per stage, composed into ``ModelConfig``.

The defaults are the CPU real-time model: six cameras at 352x128 with stride-16 features, small
channel counts, every modality on the 128 x 128 grid of 0.8 m cells, and the head on every second
cell (64 x 64 heatmap cells of 1.6 m; the offsets regress the centre within its cell). The head at
the grid's own resolution roughly doubles the network's time on the 2-core CPU (about 50 ms
against 28 ms for the forward pass), which the 50 ms end-to-end budget does not allow; its cost is
that two objects of one class closer than about 1.6 m share one peak. ``gpu_model_config`` is the
full-resolution model (704x256 cameras at stride 8, wider channels, heatmap cells of about 0.4 m).
Both take the BEV grid from the fusion configuration (``FusionConfig.grid``) rather than stating
it again; the grid fixes the shape of every BEV map, and the head's ``output_stride`` the heatmap's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..config import FusionConfig, GridConfig
from ..errors import ConfigError, ModelError
from ..frame import LIDAR_FIELDS, RADAR_FIELDS

__all__ = [
    'CLASSES',
    'MODALITIES',
    'BevBackboneConfig',
    'CameraEncoderConfig',
    'FuserConfig',
    'HeadConfig',
    'ModelConfig',
    'ModelError',
    'PillarEncoderConfig',
    'cpu_model_config',
    'gpu_model_config',
    'model_config',
]

MODALITIES: tuple[str, str, str] = ('camera', 'lidar', 'radar')  # the order of health, present, gates
CLASSES: tuple[str, ...] = ('car', 'truck', 'bus', 'pedestrian', 'cyclist')

LIDAR_POINT_FIELDS = LIDAR_FIELDS  # every column a frame carries
RADAR_POINT_FIELDS = RADAR_FIELDS


def _positive(name: str, *values: float) -> None:
    for value in values:
        if not value > 0:
            raise ConfigError(f'{name}: must be positive, got {value}')


def _power_of_two(name: str, value: int) -> None:
    if value < 1 or value & (value - 1):
        raise ConfigError(f'{name}: must be a power of two, got {value}')


@dataclass(frozen=True)
class CameraEncoderConfig:
    """Image CNN, per-pixel depth distribution, and the lift onto the BEV grid (LSS)."""

    image_size: tuple[int, int] = (352, 128)  # (width, height) the images are resized to
    feature_stride: int = 16  # image pixels per feature pixel; the CNN has log2(stride) strided blocks
    backbone_channels: tuple[int, ...] = (16, 32, 48, 64)  # one strided conv block each
    depth_bins: tuple[float, float, float] = (1.0, 60.0, 1.0)  # (min, max, step) metres, max excluded
    channels: int = 32  # context channels lifted to BEV: the camera BEV map's channels
    num_depth_bins: int = field(init=False)  # derived from depth_bins
    feature_size: tuple[int, int] = field(init=False)  # derived (width, height) of the feature map

    def __post_init__(self) -> None:
        width, height = self.image_size
        _power_of_two('feature_stride', self.feature_stride)
        if self.feature_stride < 2 or 2 ** len(self.backbone_channels) != self.feature_stride:
            raise ConfigError(f'backbone_channels: {len(self.backbone_channels)} strided blocks give stride '
                              f'{2 ** len(self.backbone_channels)}, but feature_stride is {self.feature_stride}')
        if width % self.feature_stride or height % self.feature_stride or min(width, height) < 1:
            raise ConfigError(f'image_size: {width}x{height} is not a positive multiple of feature_stride '
                              f'{self.feature_stride}')
        _positive('backbone_channels', *self.backbone_channels)
        _positive('channels', self.channels)
        low, high, step = self.depth_bins
        if not (0 < low < high and step > 0):
            raise ConfigError(f'depth_bins: needs 0 < min < max and step > 0, got {list(self.depth_bins)}')
        object.__setattr__(self, 'num_depth_bins', len(self.depth_values()))
        object.__setattr__(self, 'feature_size', (width // self.feature_stride, height // self.feature_stride))

    def depth_values(self) -> np.ndarray:
        """(D,) float64 centre-free bin depths ``min, min + step, ...`` below ``max``."""
        low, high, step = self.depth_bins
        count = math.ceil((high - low) / step - 1e-9)
        return low + step * np.arange(count, dtype=np.float64)


@dataclass(frozen=True)
class PillarEncoderConfig:
    """PointPillars feature net over the padding-free pillars of one point-cloud modality."""

    point_fields: tuple[str, ...] = LIDAR_POINT_FIELDS  # the (N, F) input columns, x y z first
    max_points_per_pillar: int = 32  # more points in a pillar are dropped and counted by pillarize
    channels: int = 32  # the BEV map's channels
    sweeps: int = 3  # sweeps accumulated into one input (their age is the 'dt' field)

    def __post_init__(self) -> None:
        if tuple(self.point_fields[:3]) != ('x', 'y', 'z'):
            raise ConfigError(f'point_fields: must start with x, y, z, got {list(self.point_fields)}')
        if len(set(self.point_fields)) != len(self.point_fields):
            raise ConfigError(f'point_fields: names repeat in {list(self.point_fields)}')
        _positive('max_points_per_pillar', self.max_points_per_pillar)
        _positive('channels', self.channels)
        _positive('sweeps', self.sweeps)

    @property
    def num_point_fields(self) -> int:
        return len(self.point_fields)


@dataclass(frozen=True)
class FuserConfig:
    """How the per-modality BEV maps become one: concatenation + conv, or health-gated."""

    kind: Literal['conv', 'gated'] = 'gated'
    channels: int = 64  # fused BEV channels
    kernel_size: int = 1  # of the fusing conv; 1 on the CPU (the backbone's strided 3x3 follows), 3 as BEVFusion
    gate_hidden: int = 16  # hidden width of the gate MLP over (health, present)
    spatial_gate: bool = True  # also learn a per-cell gate from the maps themselves

    def __post_init__(self) -> None:
        if self.kind not in ('conv', 'gated'):
            raise ConfigError(f"kind: expected 'conv' or 'gated', got {self.kind!r}")
        _positive('channels', self.channels, self.gate_hidden)
        if self.kernel_size not in (1, 3, 5):
            raise ConfigError(f'kernel_size: expected 1, 3 or 5, got {self.kernel_size}')


@dataclass(frozen=True)
class BevBackboneConfig:
    """Strided-first BEV backbone: stages at growing strides, upsampled to the head and concatenated."""

    # Three stages on the CPU: 1.6, 3.2 and 6.4 m cells on the 0.8 m grid, so the deepest stage sees a
    # 12 m bus whole (with two, buses and trucks were told apart, and sized, from one end).
    channels: tuple[int, ...] = (48, 96, 128)  # per stage
    strides: tuple[int, ...] = (2, 2, 2)  # per stage, relative to the previous one
    blocks: tuple[int, ...] = (1, 2, 2)  # extra stride-1 conv blocks per stage
    neck_channels: int = 48  # per stage after upsampling; the head sees len(channels) * this

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.strides) == len(self.blocks) >= 1:
            raise ConfigError(f'channels: channels, strides and blocks need one entry per stage, got '
                              f'{len(self.channels)}, {len(self.strides)}, {len(self.blocks)}')
        for stride in self.strides:
            _power_of_two('strides', stride)
        _positive('channels', *self.channels, self.neck_channels)
        if min(self.blocks) < 0:
            raise ConfigError(f'blocks: must be >= 0, got {list(self.blocks)}')

    def stage_strides(self) -> tuple[int, ...]:
        """Each stage's stride relative to the BEV grid."""
        return tuple(int(np.prod(self.strides[:i + 1])) for i in range(len(self.strides)))


@dataclass(frozen=True)
class HeadConfig:
    """CenterPoint-style head and its decoding."""

    classes: tuple[str, ...] = CLASSES
    channels: int = 32  # hidden channels of the heatmap and regression branches
    output_stride: int = 2  # BEV grid cells per heatmap cell (power of two); see the module doc
    score_threshold: float = 0.3
    nms_kind: Literal['rotated', 'circle'] = 'rotated'
    nms_iou_threshold: float = 0.2  # rotated NMS: suppress IoU above this
    nms_radius: float = 1.0  # circle NMS: suppress centres within this many metres
    max_detections: int = 200  # peaks kept after top-K and after NMS
    gaussian_overlap: float = 0.1  # CenterPoint's min_overlap for the heatmap radius
    min_radius: int = 1  # heatmap cells (CenterPoint's 2 is for ~0.6 m cells; the CPU head's are 1.6 m)

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f'classes: need distinct class names, got {list(self.classes)}')
        _positive('channels', self.channels, self.max_detections)
        _power_of_two('output_stride', self.output_stride)
        if not 0 <= self.score_threshold < 1:
            raise ConfigError(f'score_threshold: must be in [0, 1), got {self.score_threshold}')
        if self.nms_kind not in ('rotated', 'circle'):
            raise ConfigError(f"nms_kind: expected 'rotated' or 'circle', got {self.nms_kind!r}")
        if not 0 <= self.nms_iou_threshold <= 1:
            raise ConfigError(f'nms_iou_threshold: must be in [0, 1], got {self.nms_iou_threshold}')
        if not self.nms_radius >= 0:
            raise ConfigError(f'nms_radius: must be >= 0, got {self.nms_radius}')
        if not 0 < self.gaussian_overlap < 1 or self.min_radius < 0:
            raise ConfigError(f'gaussian_overlap: needs 0 < gaussian_overlap < 1 and min_radius >= 0, got '
                              f'{self.gaussian_overlap}, {self.min_radius}')

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class ModelConfig:
    """The whole network. ``grid`` is the fusion configuration's grid, passed in, never restated."""

    grid: GridConfig
    camera: CameraEncoderConfig = CameraEncoderConfig()
    lidar: PillarEncoderConfig = PillarEncoderConfig()
    radar: PillarEncoderConfig = PillarEncoderConfig(point_fields=RADAR_POINT_FIELDS, max_points_per_pillar=8,
                                                     channels=16, sweeps=5)
    fuser: FuserConfig = FuserConfig()
    backbone: BevBackboneConfig = BevBackboneConfig()
    head: HeadConfig = HeadConfig()
    head_shape: tuple[int, int] = field(init=False)  # derived: (rows, cols) of the heatmap

    def __post_init__(self) -> None:
        ny, nx = self.grid.shape
        s = self.head.output_stride
        if ny % s or nx % s:
            raise ConfigError(f'head.output_stride: the {ny}x{nx} grid is not a multiple of {s}')
        deepest = self.backbone.stage_strides()[-1]
        if ny % deepest or nx % deepest:
            raise ConfigError(f'backbone.strides: the {ny}x{nx} grid is not a multiple of the deepest '
                              f'stride {deepest}')
        if s > self.backbone.stage_strides()[0]:
            raise ConfigError(f'head.output_stride: {s} is coarser than the first backbone stage '
                              f'({self.backbone.stage_strides()[0]})')
        for name in ('lidar', 'radar'):
            if 'dt' not in getattr(self, name).point_fields:
                raise ConfigError(f'{name}.point_fields: needs a "dt" field (sweep age) to accumulate sweeps')
        object.__setattr__(self, 'head_shape', (ny // s, nx // s))

    def channels_of(self, modality: str) -> int:
        """Channels of a modality's BEV map."""
        return getattr(self, modality).channels

    @property
    def head_cell_size(self) -> float:
        return self.grid.cell_size * self.head.output_stride


def model_config(fusion: FusionConfig) -> ModelConfig:
    """The network a parameter file asks for: its ``model.preset`` and ``model.fuser`` on its grid."""
    preset = cpu_model_config if fusion.model.preset == 'cpu' else gpu_model_config
    return preset(fusion.grid, fuser=fusion.model.fuser)


def cpu_model_config(grid: GridConfig, fuser: Literal['conv', 'gated'] = 'gated') -> ModelConfig:
    """The CPU real-time model (the default): small channels, 352x128 images at stride 16."""
    return ModelConfig(grid=grid, fuser=FuserConfig(kind=fuser))


def gpu_model_config(grid: GridConfig, fuser: Literal['conv', 'gated'] = 'gated') -> ModelConfig:
    """The full-resolution model: 704x256 images at stride 8, wider channels, a deeper backbone.

    The head works on cells of about 0.4 m or more whatever the grid: on a finer grid the first
    backbone stage strides further and the head follows it (0.1 m grid: stride 4, 0.4 m cells).
    """
    head_stride = 1
    while grid.cell_size * head_stride < 0.4 - 1e-9:
        head_stride *= 2
    first = max(2, head_stride)
    return ModelConfig(
        grid=grid,
        camera=CameraEncoderConfig(image_size=(704, 256), feature_stride=8, backbone_channels=(32, 64, 128),
                                   depth_bins=(1.0, 60.0, 0.5), channels=80),
        lidar=PillarEncoderConfig(max_points_per_pillar=32, channels=64, sweeps=10),
        radar=PillarEncoderConfig(point_fields=RADAR_POINT_FIELDS, max_points_per_pillar=8, channels=32,
                                  sweeps=6),
        fuser=FuserConfig(kind=fuser, channels=128, kernel_size=3, gate_hidden=32),
        backbone=BevBackboneConfig(channels=(128, 256), strides=(first, 2), blocks=(2, 3), neck_channels=128),
        head=HeadConfig(channels=64, output_stride=head_stride, max_detections=300, min_radius=2),
    )
