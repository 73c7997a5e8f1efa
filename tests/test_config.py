from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mmfusion_ros.config import DEFAULT_CONFIG, FusionConfig, GridConfig, config_from_dict, load_config
from mmfusion_ros.errors import ConfigError

LIDAR = {'modality': 'lidar', 'topic': '/points', 'type': 'sensor_msgs/msg/PointCloud2'}


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / 'params.yaml'
    path.write_text(textwrap.dedent(body))
    return path


def test_default_config_loads_the_nuscenes_rig():
    config = load_config(DEFAULT_CONFIG)
    assert len(config.sensors_of('camera')) == 6
    assert len(config.sensors_of('lidar')) == 1
    assert len(config.sensors_of('radar')) == 5
    assert config.grid.shape == (128, 128)
    assert config.sensors['cam_front'].info_topic == '/CAM_FRONT/camera_info'


def test_grid_shape_is_derived_from_range_and_cell_size():
    grid = GridConfig(x_range=(0.0, 70.4), y_range=(-40.0, 40.0), cell_size=0.16)
    assert grid.shape == (500, 440)


def test_node_section_overrides_the_wildcard_section(tmp_path):
    path = write(tmp_path, """
        /**:
          ros__parameters:
            sensors:
              lidar: {modality: lidar, topic: /points, type: sensor_msgs/msg/PointCloud2, rate_hz: 10.0}
        /vehicle/mmfusion:
          ros__parameters:
            sensors:
              lidar: {rate_hz: 20}
            grid: {cell_size: 0.4}
    """)
    config = load_config(path)
    assert config.sensors['lidar'].rate_hz == 20.0
    assert isinstance(config.sensors['lidar'].rate_hz, float)
    assert config.grid.shape == (256, 256)


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(AttributeError):
        config.grid = GridConfig()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.sensors['new'] = config.sensors['lidar_top']  # type: ignore[index]


@pytest.mark.parametrize(('params', 'message'), [
    ({'sensors': {'lidar': {**LIDAR, 'rate': 10}}},
     r'^sensors\.lidar\.rate: unknown parameter; expected one of'),
    ({'sensors': {'lidar': {**LIDAR, 'rate_hz': 'fast'}}},
     r"^sensors\.lidar\.rate_hz: expected a finite number, got str 'fast'$"),
    ({'sensors': {'lidar': {**LIDAR, 'rate_hz': True}}}, r'^sensors\.lidar\.rate_hz: expected a finite number'),
    ({'sensors': {'lidar': {**LIDAR, 'modality': 'sonar'}}},
     r"^sensors\.lidar\.modality: expected one of camera, lidar, radar, got 'sonar'$"),
    ({'sensors': {'lidar': {**LIDAR, 'type': 'sensor_msgs/msg/Image'}}},
     r"^sensors\.lidar\.type: lidar reads sensor_msgs/msg/PointCloud2, not 'sensor_msgs/msg/Image'$"),
    ({'sensors': {'cam': {'modality': 'camera', 'topic': '/img', 'type': 'sensor_msgs/msg/Image'}}},
     r'^sensors\.cam\.info_topic: cameras need'),
    ({'sensors': {'lidar': {'modality': 'lidar', 'type': 'sensor_msgs/msg/PointCloud2'}}},
     r'^sensors\.lidar\.topic: required parameter is missing$'),
    ({'sensors': {'lidar': LIDAR}, 'grid': {'x_range': [0, 10, 20]}},
     r'^grid\.x_range: expected 2 values, got 3$'),
    ({'sensors': {'lidar': LIDAR}, 'grid': {'x_range': [0, 10.1], 'cell_size': 0.4}},
     r'^grid\.x_range: extent 10\.1 m is not a whole number of 0\.4 m cells$'),
    ({'sensors': {'lidar': LIDAR}, 'grid': {'shape': [10, 10]}},
     r'^grid\.shape: is derived from other parameters and can not be set$'),
    ({'sensors': {'lidar': LIDAR, 'lidar2': LIDAR}}, r'^sensors\.lidar2\.topic: /points is also read by'),
    ({'sensors': {'lidar': LIDAR}, 'consistency': {'radar_sight_min_points': 0}},
     r'^consistency\.radar_sight_min_points: must be an integer >= 1, got 0$'),
    ({'sensors': {'lidar': LIDAR}, 'consistency': {'sight_bin_deg': 0.0}},
     r'^consistency\.sight_bin_deg: must be positive'),
    ({'sensors': {}}, r'^sensors: at least one sensor'),
    ({'sensors': ['lidar']}, r'^sensors: expected a mapping, got list$'),
])
def test_bad_parameters_name_the_key_path(params, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(FusionConfig, params)
    assert '\n' not in str(info.value)


def test_unknown_key_in_a_file_names_the_file_and_key(tmp_path):
    path = write(tmp_path, """
        /**:
          ros__parameters:
            sensors:
              lidar: {modality: lidar, topic: /points, type: sensor_msgs/msg/PointCloud2}
            grid: {cell_sise: 0.4}
    """)
    with pytest.raises(ConfigError, match=rf'^{path}: grid\.cell_sise: unknown parameter'):
        load_config(path)


@pytest.mark.parametrize(('body', 'message'), [
    ('sensors: {}\n', r'no "/\*\*" or "mmfusion" section'),
    ('/**:\n  params: {}\n', r'/\*\*: expected exactly one key, ros__parameters'),
    ('/**:\n  ros__parameters: [1, 2]\n', r'ros__parameters: expected a mapping'),
    ('/**: [unclosed\n', r'line \d+ not valid YAML'),
    ('- 1\n- 2\n', r'expected a mapping of node names'),
])
def test_malformed_files_are_rejected(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, body))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r'missing\.yaml: cannot read parameter file'):
        load_config(tmp_path / 'missing.yaml')
