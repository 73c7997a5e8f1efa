"""What the network reads for one frame, built from the numpy samples the runtime holds.

Each modality is one optional block; a block that is ``None`` is an absent modality (the network
then uses a zero map and a flag, never raises). The point-cloud blocks are pillarized here, by the
numba kernel: that is preprocessing, not part of the differentiable network. The camera block holds
the images at the network's input size and the ``BevPoolGeometry`` of the current calibration,
which ``CameraGeometryCache`` rebuilds only when the calibration changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import GridConfig
from ..frame import LIDAR_FIELDS, RADAR_FIELDS, Frame
from ..geometry.bev_pool import BevPoolGeometry, bev_pool_geometry, frustum_points
from ..geometry.pillars import Pillars, pillarize
from ..types import CameraIntrinsics, RigidTransform
from .config import MODALITIES, CameraEncoderConfig, ModelConfig, ModelError, PillarEncoderConfig

__all__ = [
    'CameraGeometryCache',
    'CameraInputs',
    'IMAGE_MEAN',
    'IMAGE_STD',
    'ModelInputs',
    'PillarInputs',
    'accumulate_sweeps',
    'camera_inputs',
    'cloud_columns',
    'frame_inputs',
    'model_inputs',
    'pillar_inputs',
]

IMAGE_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1], ImageNet statistics
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class CameraInputs:
    images: torch.Tensor  # (Ncam, 3, H, W) float32 channels_last, normalised, at CameraEncoderConfig.image_size
    geometry: BevPoolGeometry  # frustum -> BEV cells for this calibration and feature size

    def __post_init__(self) -> None:
        Ncam, D, Hf, Wf = self.geometry.frustum_shape
        if self.images.ndim != 4 or self.images.shape[:2] != (Ncam, 3) or self.images.dtype != torch.float32:
            raise ModelError(f'camera.images: expected float32 ({Ncam}, 3, H, W) for the {Ncam} cameras of '
                             f'the geometry, got {tuple(self.images.shape)} {self.images.dtype}')


@dataclass(frozen=True, eq=False)
class PillarInputs:
    pillars: Pillars  # numpy output of pillarize (kept points grouped by pillar, decorated)

    def __post_init__(self) -> None:
        if self.pillars.features.dtype != np.float32:
            raise ModelError(f'pillars.features: expected float32, got {self.pillars.features.dtype}')

    @property
    def features(self) -> torch.Tensor:
        """(Nk, F + 5) float32, sharing memory with the numpy array."""
        return torch.from_numpy(self.pillars.features)

    @property
    def point_pillar(self) -> torch.Tensor:
        """(Nk,) int64 pillar of each point."""
        return torch.from_numpy(self.pillars.point_pillar).long()

    @property
    def coords(self) -> torch.Tensor:
        """(P, 2) int64 (row, col) of each pillar."""
        return torch.from_numpy(self.pillars.coords).long()


@dataclass(frozen=True, eq=False)
class ModelInputs:
    """One frame. ``health`` is each modality's health in [0, 1] (camera, lidar, radar order)."""

    camera: CameraInputs | None = None
    lidar: PillarInputs | None = None
    radar: PillarInputs | None = None
    health: torch.Tensor = None  # type: ignore[assignment]  # (3,) float32; None: 1 where present

    def __post_init__(self) -> None:
        present = self.present
        if self.health is None:
            object.__setattr__(self, 'health', present.float())
        health = torch.as_tensor(self.health, dtype=torch.float32)
        if health.shape != (3,) or not bool(torch.all((health >= 0) & (health <= 1))):
            raise ModelError(f'health: expected 3 values in [0, 1] ({", ".join(MODALITIES)}), got '
                             f'{health.tolist() if health.numel() < 10 else tuple(health.shape)}')
        # An absent modality has no health to speak of; zero keeps the gate from reading a stale value.
        object.__setattr__(self, 'health', health * present)

    @property
    def present(self) -> torch.Tensor:
        """(3,) bool: which modalities this frame has."""
        return torch.tensor([self.camera is not None, self.lidar is not None, self.radar is not None])


# ---------------------------------------------------------------------------------------------------
# Builders from numpy (what the runtime calls)


class CameraGeometryCache:
    """The ``BevPoolGeometry`` of the current calibration, rebuilt only when calibration changes.

    Keyed by the exact bytes of every camera's projection matrix, image size and camera-to-base
    transform, so a calibration update (a new CameraInfo, a corrected extrinsic) rebuilds it and an
    unchanged one costs one comparison.
    """

    def __init__(self, grid: GridConfig, config: CameraEncoderConfig) -> None:
        self.grid = grid
        self.config = config
        self.rebuilds = 0
        self._key: bytes | None = None
        self._geometry: BevPoolGeometry | None = None

    def geometry(self, intrinsics: Sequence[CameraIntrinsics],
                 camera_to_base: Sequence[RigidTransform]) -> BevPoolGeometry:
        """Geometry for cameras with these intrinsics (of the images as received) and extrinsics.

        The images are resized, whole, to ``config.image_size``; each feature pixel's ray goes through
        the centre of the image patch it covers. Rectified images are assumed: the projection ``P``'s
        left 3x3 is the camera matrix used.
        """
        if len(intrinsics) != len(camera_to_base) or not intrinsics:
            raise ModelError(f'camera calibration: {len(intrinsics)} intrinsics for {len(camera_to_base)} '
                             'extrinsics; need one of each per camera, at least one camera')
        sizes = {(i.width, i.height) for i in intrinsics}
        if len(sizes) != 1:
            raise ModelError(f'camera calibration: cameras must share one image size, got {sorted(sizes)}')
        K = np.stack([i.p[:, :3] for i in intrinsics])  # (Ncam, 3, 3)
        T = np.stack([t.matrix for t in camera_to_base])  # (Ncam, 4, 4)
        (size,) = sizes
        return self.geometry_from_arrays(K, T, size)

    def geometry_from_arrays(self, K: np.ndarray, T: np.ndarray, image_size: tuple[int, int]) -> BevPoolGeometry:
        """The same from (Ncam, 3, 3) camera matrices, (Ncam, 4, 4) camera-to-base matrices (any
        linear map: training's augmentation scales and mirrors them) and the (width, height) of the
        images as received."""
        key = np.asarray(K, np.float64).tobytes() + np.asarray(T, np.float64).tobytes() + \
            np.asarray(image_size, np.int64).tobytes()
        if key != self._key:
            frustum = frustum_points(K, T, image_size, self.config.feature_size, self.config.depth_values())
            self._geometry = bev_pool_geometry(frustum, self.grid)
            self._key = key
            self.rebuilds += 1
        assert self._geometry is not None
        return self._geometry


def camera_inputs(images: Sequence[np.ndarray], geometry: BevPoolGeometry,
                  config: CameraEncoderConfig) -> CameraInputs:
    """Resize (H, W, 3) uint8 RGB images, whole, to the network size and normalise them.

    The resize runs on the uint8 pixels, channels-last, with antialiasing (torch's vectorised uint8
    path: 2 ms for six 400x225 images here, against 10 ms in float32); the result is float32
    channels_last, the layout the camera CNN runs in.
    """
    Ncam = geometry.frustum_shape[0]
    if len(images) != Ncam:
        raise ModelError(f'camera images: {len(images)} images for a geometry of {Ncam} cameras')
    shapes = {(np.shape(image), np.asarray(image).dtype.name) for image in images}
    if len(shapes) != 1 or len(next(iter(shapes))[0]) != 3 or next(iter(shapes))[0][2] != 3 \
            or next(iter(shapes))[1] != 'uint8':
        raise ModelError(f'camera images: expected (H, W, 3) uint8 RGB images of one size, got {sorted(shapes)}')
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (Ncam, 3, H, W) uint8, channels_last
    width, height = config.image_size
    if batch.shape[2:] != (height, width):
        batch = F.interpolate(batch, size=(height, width), mode='bilinear', align_corners=False, antialias=True)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    images_t = torch.addcmul(-mean / std, batch.float(), 1.0 / (255.0 * std))  # (Ncam, 3, H, W) float32
    return CameraInputs(images_t.contiguous(memory_format=torch.channels_last), geometry)


def accumulate_sweeps(sweeps: Sequence[np.ndarray], ages_s: Sequence[float], max_sweeps: int) -> np.ndarray:
    """(N, F + 1) float32: the newest ``max_sweeps`` sweeps stacked, each point's sweep age appended.

    sweeps are (N_i, F) float32 clouds already in the current base frame (motion compensated),
    ages_s their age in seconds (0 for the current sweep); older ones beyond ``max_sweeps`` are left
    out.
    """
    if len(sweeps) != len(ages_s):
        raise ModelError(f'accumulate_sweeps: {len(sweeps)} sweeps but {len(ages_s)} ages')
    order = np.argsort(np.asarray(ages_s, np.float64), kind='stable')[:max_sweeps]
    widths = {np.shape(sweeps[i])[1] for i in order} if len(order) else set()
    if len(widths) > 1:
        raise ModelError(f'accumulate_sweeps: sweeps have different field counts {sorted(widths)}')
    parts = [np.hstack([np.asarray(sweeps[i], np.float32),
                        np.full((len(sweeps[i]), 1), ages_s[i], np.float32)]) for i in order]
    if not parts:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.vstack(parts))


def pillar_inputs(points: np.ndarray, grid: GridConfig, config: PillarEncoderConfig,
                  modality: str = 'lidar') -> PillarInputs:
    """Pillarize (N, F) float32 points whose columns are ``config.point_fields`` (numba kernel)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != config.num_point_fields:
        raise ModelError(f'{modality} points: expected (N, {config.num_point_fields}) columns '
                         f'{", ".join(config.point_fields)}, got shape {points.shape}')
    pillars = pillarize(np.ascontiguousarray(points, np.float32), grid, config.max_points_per_pillar)
    return PillarInputs(pillars)


def cloud_columns(points: np.ndarray, available: Sequence[str], wanted: Sequence[str], modality: str) -> np.ndarray:
    """(N, len(wanted)) float32: the ``wanted`` columns of ``points`` whose columns are ``available``."""
    absent = [name for name in wanted if name not in available]
    if absent:
        raise ModelError(f'{modality} points: the network reads {", ".join(absent)}, which frames do not carry '
                         f'(they have {", ".join(available)})')
    return np.ascontiguousarray(points[:, [list(available).index(name) for name in wanted]], np.float32)


def frame_inputs(frame: Frame, config: ModelConfig, cache: CameraGeometryCache,
                 health: Sequence[float] | None = None) -> ModelInputs:
    """A synchronized ``Frame`` as network inputs; its absent modalities stay absent.

    The camera calibration is the frame's own (each image placed at the frame's stamp), so ``cache``
    rebuilds the lift geometry when the vehicle moves between an image and the frame's stamp.
    """
    camera = None
    if frame.cameras:
        geometry = cache.geometry([view.intrinsics for view in frame.cameras],
                                  [view.camera_to_base for view in frame.cameras])
        camera = camera_inputs([view.pixels for view in frame.cameras], geometry, config.camera)
    lidar = radar = None
    if frame.lidar is not None:
        lidar = pillar_inputs(cloud_columns(frame.lidar, LIDAR_FIELDS, config.lidar.point_fields, 'lidar'),
                              config.grid, config.lidar, 'lidar')
    if frame.radar is not None:
        radar = pillar_inputs(cloud_columns(frame.radar, RADAR_FIELDS, config.radar.point_fields, 'radar'),
                              config.grid, config.radar, 'radar')
    return model_inputs(camera, lidar, radar, health)


def model_inputs(camera: CameraInputs | None = None, lidar: PillarInputs | None = None,
                 radar: PillarInputs | None = None, health: Sequence[float] | None = None) -> ModelInputs:
    """A frame; ``health`` defaults to 1 for each present modality."""
    return ModelInputs(camera, lidar, radar, None if health is None else torch.tensor(health, dtype=torch.float32))
