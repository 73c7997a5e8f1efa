"""A tiny model on a 32 x 32 grid, and a frame of every modality for it, built from the simulator's rig."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfusion_ros.config import GridConfig
from mmfusion_ros.model import (
    BevBackboneConfig,
    CameraEncoderConfig,
    CameraGeometryCache,
    FuserConfig,
    HeadConfig,
    ModelConfig,
    PillarEncoderConfig,
    camera_inputs,
    pillar_inputs,
)
from mmfusion_ros.model.config import RADAR_POINT_FIELDS
from mmfusion_ros.sim.rig import Rig

SMALL_GRID = GridConfig(x_range=(-12.8, 12.8), y_range=(-12.8, 12.8), z_range=(-3.0, 3.0), cell_size=0.8)  # 32 x 32


def small_config(fuser: str = 'gated', output_stride: int = 1) -> ModelConfig:
    return ModelConfig(
        grid=SMALL_GRID,
        camera=CameraEncoderConfig(image_size=(128, 48), feature_stride=16, backbone_channels=(8, 8, 8, 8),
                                   depth_bins=(1.0, 20.0, 1.0), channels=8),
        lidar=PillarEncoderConfig(max_points_per_pillar=16, channels=8),
        radar=PillarEncoderConfig(point_fields=RADAR_POINT_FIELDS, max_points_per_pillar=4, channels=4),
        fuser=FuserConfig(kind=fuser, channels=16, kernel_size=3, gate_hidden=8),
        backbone=BevBackboneConfig(channels=(16, 16), strides=(2, 2), blocks=(0, 1), neck_channels=8),
        head=HeadConfig(channels=8, output_stride=output_stride, score_threshold=0.1),
    )


def rig_calibration(rig: Rig | None = None):
    rig = rig or Rig()
    names = list(rig.camera_mounts)
    return [rig.camera.intrinsics(n) for n in names], [rig.sensor_to_base(n) for n in names]


def lidar_points(rng: np.random.Generator, n: int, extent: float) -> np.ndarray:
    """(n, 5) x y z intensity dt, a few sweeps, spread over +-extent metres."""
    points = np.empty((n, 5), np.float32)
    points[:, :2] = rng.uniform(-extent, extent, (n, 2))
    points[:, 2] = rng.uniform(-1.5, 1.5, n)
    points[:, 3] = rng.uniform(0, 1, n)
    points[:, 4] = rng.integers(0, 3, n) * 0.05
    return points


def radar_points(rng: np.random.Generator, n: int, extent: float) -> np.ndarray:
    """(n, 7) x y z vx_comp vy_comp rcs dt; some rcs unmeasured (NaN)."""
    points = np.empty((n, 7), np.float32)
    points[:, :2] = rng.uniform(-extent, extent, (n, 2))
    points[:, 2] = 0.5
    points[:, 3:5] = rng.normal(0, 5, (n, 2))
    points[:, 5] = rng.normal(5, 5, n)
    points[::7, 5] = np.nan
    points[:, 6] = rng.integers(0, 5, n) * 0.077
    return points


@pytest.fixture(scope='module')
def small_frame():
    """(config, camera, lidar, radar) inputs for the small model; built once per module."""
    torch.manual_seed(0)
    config = small_config()
    rng = np.random.default_rng(0)
    intrinsics, extrinsics = rig_calibration()
    geometry = CameraGeometryCache(config.grid, config.camera).geometry(intrinsics, extrinsics)
    images = [rng.integers(0, 256, (intrinsics[0].height, intrinsics[0].width, 3), dtype=np.uint8)
              for _ in intrinsics]
    camera = camera_inputs(images, geometry, config.camera)
    lidar = pillar_inputs(lidar_points(rng, 3000, 14.0), config.grid, config.lidar)
    radar = pillar_inputs(radar_points(rng, 60, 14.0), config.grid, config.radar, 'radar')
    return config, camera, lidar, radar


@pytest.fixture(scope='session')
def make_config():
    """``make_config(fuser='gated', output_stride=1)``: the small model's config."""
    return small_config


@pytest.fixture(scope='session')
def calibration():
    """(intrinsics, camera_to_base) of the simulator rig's six cameras."""
    return rig_calibration()


@pytest.fixture(scope='session')
def point_makers():
    """(lidar_points, radar_points) generators: ``maker(rng, n, extent)``."""
    return lidar_points, radar_points
