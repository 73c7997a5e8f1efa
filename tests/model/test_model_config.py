"""Model parameters: derived values, the two shipped configurations, and every rejection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmfusion_ros.config import GridConfig, config_from_dict
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.model import (
    BevBackboneConfig,
    CameraEncoderConfig,
    FuserConfig,
    HeadConfig,
    ModelConfig,
    PillarEncoderConfig,
    cpu_model_config,
    gpu_model_config,
)

GRID = GridConfig(cell_size=0.8)


def test_cpu_default_is_the_real_time_model_on_the_default_grid():
    config = cpu_model_config(GridConfig(cell_size=0.8))
    assert config == ModelConfig(grid=GridConfig(cell_size=0.8))  # the defaults are the CPU model
    assert config.grid.shape == (128, 128) and config.head_shape == (64, 64)
    assert config.head_cell_size == pytest.approx(1.6)
    assert config.camera.image_size == (352, 128) and config.camera.feature_size == (22, 8)
    assert config.camera.num_depth_bins == 59
    np.testing.assert_allclose(config.camera.depth_values()[[0, -1]], [1.0, 59.0])
    assert config.lidar.point_fields == ('x', 'y', 'z', 'intensity', 'dt')
    assert config.radar.point_fields == ('x', 'y', 'z', 'vx_comp', 'vy_comp', 'rcs', 'dt')
    assert config.head.classes == ('car', 'truck', 'bus', 'pedestrian', 'cyclist')
    assert cpu_model_config(GridConfig(cell_size=0.8), fuser='conv').fuser.kind == 'conv'


def test_gpu_model_is_full_resolution():
    config = gpu_model_config(GridConfig(cell_size=0.2))
    assert config.camera.image_size == (704, 256) and config.camera.feature_stride == 8
    assert config.head.output_stride == 2 and config.head_shape == (256, 256)
    assert config.camera.num_depth_bins == 118


def test_model_parameters_load_from_plain_data_with_key_paths():
    grid = {'x_range': [-51.2, 51.2], 'y_range': [-51.2, 51.2], 'cell_size': 0.8}
    config = config_from_dict(ModelConfig, {'grid': grid, 'fuser': {'kind': 'conv', 'channels': 32},
                                            'head': {'score_threshold': 0.25}})
    assert config.grid.shape == (128, 128)
    assert config.fuser == FuserConfig(kind='conv', channels=32) and config.head.score_threshold == 0.25
    with pytest.raises(ConfigError, match=r'^fuser\.kind: expected one of conv, gated'):
        config_from_dict(ModelConfig, {'grid': grid, 'fuser': {'kind': 'attention'}})
    with pytest.raises(ConfigError, match=r'^camera\.num_depth_bins: is derived'):
        config_from_dict(ModelConfig, {'grid': grid, 'camera': {'num_depth_bins': 10}})
    with pytest.raises(ConfigError, match=r'^grid: required parameter is missing'):
        config_from_dict(ModelConfig, {})


@pytest.mark.parametrize('build, message', [
    (lambda: CameraEncoderConfig(image_size=(350, 128)), r'image_size: 350x128 is not a positive multiple of '
                                                         r'feature_stride 16'),
    (lambda: CameraEncoderConfig(feature_stride=8), r'backbone_channels: 4 strided blocks give stride 16'),
    (lambda: CameraEncoderConfig(feature_stride=12), 'feature_stride: must be a power of two'),
    (lambda: CameraEncoderConfig(depth_bins=(5.0, 1.0, 1.0)), r'depth_bins: needs 0 < min < max'),
    (lambda: PillarEncoderConfig(point_fields=('y', 'x', 'z')), 'point_fields: must start with x, y, z'),
    (lambda: PillarEncoderConfig(point_fields=('x', 'y', 'z', 'dt', 'dt')), 'point_fields: names repeat'),
    (lambda: PillarEncoderConfig(max_points_per_pillar=0), 'max_points_per_pillar: must be positive'),
    (lambda: FuserConfig(kind='sum'), "kind: expected 'conv' or 'gated'"),
    (lambda: FuserConfig(kernel_size=2), 'kernel_size: expected 1, 3 or 5'),
    (lambda: BevBackboneConfig(channels=(8,), strides=(2, 2), blocks=(1,)), 'channels: channels, strides and blocks'),
    (lambda: BevBackboneConfig(strides=(3, 2, 2)), 'strides: must be a power of two'),
    (lambda: HeadConfig(classes=('car', 'car')), 'classes: need distinct class names'),
    (lambda: HeadConfig(score_threshold=1.0), r'score_threshold: must be in \[0, 1\)'),
    (lambda: HeadConfig(nms_kind='soft'), "nms_kind: expected 'rotated' or 'circle'"),
    (lambda: HeadConfig(output_stride=3), 'output_stride: must be a power of two'),
    (lambda: ModelConfig(GRID, head=HeadConfig(output_stride=4)), 'head.output_stride: 4 is coarser than the first'),
    (lambda: ModelConfig(grid=GridConfig(x_range=(0.0, 9.6), y_range=(0.0, 8.0), cell_size=0.8)),
     'backbone.strides: the 10x12 grid is not a multiple of the deepest stride 8'),
    (lambda: ModelConfig(GRID, lidar=PillarEncoderConfig(point_fields=('x', 'y', 'z', 'intensity'))),
     'lidar.point_fields: needs a "dt" field'),
])
def test_invalid_parameters_are_rejected(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig(GRID).head = HeadConfig()  # type: ignore[misc]


def test_parameter_files_choose_the_network(tmp_path):
    from mmfusion_ros.config import CONFIG_DIR, load_config
    from mmfusion_ros.model import FusionNet
    from mmfusion_ros.model.config import cpu_model_config, model_config

    default = load_config()
    assert default.model.preset == 'cpu' and model_config(default) == cpu_model_config(default.grid)
    layered = load_config([CONFIG_DIR / 'default.yaml', CONFIG_DIR / 'gpu.yaml'])
    assert layered.sensors == default.sensors and layered.grid.shape == (1024, 1024)
    gpu = model_config(layered)
    assert gpu.camera.image_size == (704, 256) and gpu.head.output_stride == 4 and gpu.head_shape == (256, 256)
    assert sum(p.numel() for p in FusionNet(gpu).parameters()) > 3 * sum(
        p.numel() for p in FusionNet(model_config(default)).parameters())


def test_weights_for_another_network_or_an_absent_gpu_are_refused(tmp_path):
    import torch

    from mmfusion_ros.config import CONFIG_DIR, load_config
    from mmfusion_ros.errors import ModelError
    from mmfusion_ros.model import FusionNet
    from mmfusion_ros.model.config import model_config
    from mmfusion_ros.model.weights import load_configured_model, save_weights

    default = load_config()
    path = tmp_path / 'cpu.pt'
    save_weights(path, FusionNet(model_config(default)))
    assert load_configured_model(default, path).config == model_config(default)
    conv = dataclasses.replace(default, model=dataclasses.replace(default.model, fuser='conv'))
    with pytest.raises(ModelError, match="another network than model.preset 'cpu' with fuser 'conv'"):
        load_configured_model(conv, path)
    layered = load_config([CONFIG_DIR / 'default.yaml', CONFIG_DIR / 'gpu.yaml'])
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match='torch sees no CUDA device'):
            load_configured_model(layered, path)
    on_cpu = dataclasses.replace(layered, model=dataclasses.replace(layered.model, device='cpu'))
    with pytest.raises(ModelError, match='trained for the grid'):
        load_configured_model(on_cpu, path)
