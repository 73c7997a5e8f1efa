"""The ROS 2 node, its launch files and config/carla.yaml.

What runs everywhere: the module imports without ROS, ``main`` and ``mmfusion node`` fail with one
line where rclpy is missing, the parameter and QoS rules, the CARLA config, the launch files as
source. What needs ROS 2 (marked ``rclpy``, skipped with the reason elsewhere): the node itself,
fed serialized messages from a small simulated bag by a second node.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from mmfusion_ros.config import DEFAULT_CONFIG, load_config
from mmfusion_ros.errors import ConfigError, TransportError
from mmfusion_ros.nodes import fusion_node
from mmfusion_ros.nodes.fusion_node import (
    CAMERA_INFO_QOS,
    SENSOR_DATA_QOS,
    TF_QOS,
    TF_STATIC_QOS,
    default_params_file,
    input_qos,
    params_files,
)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / 'launch'
CARLA_CONFIG = REPO / 'config' / 'carla.yaml'
ROS_MODULES = ('rclpy', 'rcl_interfaces', 'rosidl_runtime_py', 'ament_index_python', 'launch', 'launch_ros')
NO_RCLPY = 'rclpy is not installed here (ROS 2 cannot be installed on Debian 12 from PyPI)'


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter where the ROS 2 Python modules can not be imported."""
    block = ''.join(f'sys.modules[{name!r}] = None\n' for name in ROS_MODULES)
    return subprocess.run([sys.executable, '-c', 'import sys\n' + block + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert 'Traceback' not in stderr
    return lines[0]


# -- without ROS -------------------------------------------------------------------------------------------


def test_module_imports_without_ros_and_without_the_runtime():
    proc = run_python("""
        import mmfusion_ros.nodes.fusion_node as node
        heavy = sorted(m for m, module in sys.modules.items()
                       if module is not None and m.split('.')[0] in ('rclpy', 'launch', 'torch'))
        print(heavy, node.NODE_NAME, callable(node.main))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] mmfusion True"


def test_main_without_rclpy_is_one_line_and_status_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'rclpy', None)
    assert fusion_node.main(['fusion_node']) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith('fusion_node: error: rclpy is not importable')
    assert 'source a ROS 2 installation' in line


def test_making_a_node_without_rclpy_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, 'rclpy', None)
    fusion_node.node_class.cache_clear()  # where ROS is installed, an earlier test may have made the class
    with pytest.raises(TransportError, match=r'^rclpy is not importable \(.*\); source a ROS 2'):
        fusion_node.create_node()
    with pytest.raises(TransportError, match='rclpy is not importable'):
        fusion_node.FusionNode  # noqa: B018 - the class is made on first access
    with pytest.raises(AttributeError, match='has no attribute'):
        fusion_node.NoSuchThing  # noqa: B018


@pytest.mark.parametrize('extra', [[], ['--ros-args', '-p', 'params_file:=config/carla.yaml']])
def test_cli_node_without_rclpy_is_one_line_and_status_2(extra):
    proc = run_python(f"""
        from mmfusion_ros.cli import main
        sys.exit(main(['node', *{extra!r}]))
    """)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith('mmfusion node: error: rclpy is not importable'), line


def test_params_file_is_a_path_or_a_list_of_paths():
    assert params_files('config/default.yaml') == [Path('config/default.yaml')]
    assert params_files(['a.yaml', ' b.yaml ']) == [Path('a.yaml'), Path('b.yaml')]
    assert params_files(('a.yaml',)) == [Path('a.yaml')]


@pytest.mark.parametrize('value, pattern', [
    ([], r'params_file: expected a path or a non-empty list of paths, got \[\]'),
    (3, r'params_file: expected a path .* got 3'),
    (['a.yaml', ''], r"params_file: every entry must be a non-empty path, got '' in"),
    (['a.yaml', 5], r'params_file: every entry must be a non-empty path, got 5'),
    ('  ', r"params_file: every entry must be a non-empty path, got '  '"),
])
def test_a_bad_params_file_value_is_a_config_error(value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        params_files(value)


def test_default_params_file_without_ament_index_is_the_packaged_default(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ament_index_python', None)
    monkeypatch.setitem(sys.modules, 'ament_index_python.packages', None)
    assert default_params_file() == DEFAULT_CONFIG
    assert default_params_file().is_file()


@pytest.mark.parametrize('topic, msgtype, expected', [
    ('/tf', 'tf2_msgs/msg/TFMessage', TF_QOS),
    ('/tf_static', 'tf2_msgs/msg/TFMessage', TF_STATIC_QOS),
    ('/CAM_FRONT/camera_info', 'sensor_msgs/msg/CameraInfo', CAMERA_INFO_QOS),
    ('/CAM_FRONT/image_rect_compressed', 'sensor_msgs/msg/CompressedImage', SENSOR_DATA_QOS),
    ('/LIDAR_TOP', 'sensor_msgs/msg/PointCloud2', SENSOR_DATA_QOS),
    ('/radar', 'radar_msgs/msg/RadarScan', SENSOR_DATA_QOS),
])
def test_input_qos(topic, msgtype, expected):
    assert input_qos(topic, msgtype) == expected


def test_input_qos_profiles():
    # tf2's own listener QoS (tf2_ros/qos.hpp); sensors and CameraInfo best effort, which matches
    # reliable and best-effort publishers alike.
    assert (TF_STATIC_QOS.reliable, TF_STATIC_QOS.transient_local, TF_STATIC_QOS.depth) == (True, True, 100)
    assert (TF_QOS.reliable, TF_QOS.transient_local, TF_QOS.depth) == (True, False, 100)
    assert not SENSOR_DATA_QOS.reliable and not CAMERA_INFO_QOS.reliable
    assert not SENSOR_DATA_QOS.transient_local and not CAMERA_INFO_QOS.transient_local


# -- config/carla.yaml -----------------------------------------------------------------------------------


def test_carla_config_reads_the_bridge_topics():
    config = load_config(CARLA_CONFIG, node_name='mmfusion')
    assert (config.frames.fixed, config.frames.base) == ('map', 'ego_vehicle')
    assert {s.modality for s in config.sensors.values()} == {'camera', 'lidar', 'radar'}
    for name, sensor in config.sensors.items():
        for topic in sensor.topics:
            assert topic.startswith(f'/carla/ego_vehicle/{name}'), (name, topic)
        assert sensor.frame_id == f'ego_vehicle/{name}'
        assert sensor.rate_hz == 20.0
    camera = config.sensors['rgb_front']
    assert (camera.topic, camera.info_topic, camera.type) == (
        '/carla/ego_vehicle/rgb_front/image', '/carla/ego_vehicle/rgb_front/camera_info', 'sensor_msgs/msg/Image')
    assert config.sensors['lidar'].topic == '/carla/ego_vehicle/lidar'
    assert config.sensors['radar_front'].topic == '/carla/ego_vehicle/radar_front'
    assert config.trigger_sensor == 'lidar'


def test_carla_config_keeps_the_default_grid_and_model():
    carla, default = load_config(CARLA_CONFIG), load_config(DEFAULT_CONFIG)
    assert (carla.grid, carla.model) == (default.grid, default.model)


def carla_radar_cloud() -> bytes:
    """A radar scan laid out as the carla-ros-bridge writes it: x y z Range Velocity AzimuthAngle ElevationAngle."""
    from mmfusion_ros.msgs.encode import encode_pointcloud
    from mmfusion_ros.types import PointCloud

    azimuth, elevation = np.array([0.1, -0.2], np.float32), np.array([0.0, 0.05], np.float32)
    depth, velocity = np.array([20.0, 35.0], np.float32), np.array([-3.0, 1.5], np.float32)
    xyz = np.stack([depth * np.cos(-azimuth) * np.cos(elevation), depth * np.sin(-azimuth) * np.cos(elevation),
                    depth * np.sin(elevation)], axis=1).astype(np.float32)
    channels = {'Range': depth, 'Velocity': velocity, 'AzimuthAngle': azimuth, 'ElevationAngle': elevation}
    return encode_pointcloud(PointCloud(1_000_000_000, 'ego_vehicle/radar_front', xyz, channels))


def test_carla_radar_cloud_is_read_in_its_frame():
    from mmfusion_ros.msgs.decode import decode_radar

    radar = decode_radar(carla_radar_cloud(), 'sensor_msgs/msg/PointCloud2', '/carla/ego_vehicle/radar_front')
    assert len(radar.xyz) == 2 and radar.frame_id == 'ego_vehicle/radar_front'
    assert 'Velocity' in radar.source_fields  # read as the doppler, below


def test_carla_radar_velocity_is_doppler():
    from mmfusion_ros.msgs.decode import decode_radar

    radar = decode_radar(carla_radar_cloud(), 'sensor_msgs/msg/PointCloud2', '/carla/ego_vehicle/radar_front')
    np.testing.assert_allclose(radar.doppler, [-3.0, 1.5])


# -- launch files, as source -----------------------------------------------------------------------------


def launch_tree(name: str) -> ast.Module:
    path = LAUNCH / name
    source = path.read_text()
    compile(source, str(path), 'exec')
    return ast.parse(source)


def calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, 'id', None) == name or getattr(node.func, 'attr', None) == name)]


def declared_arguments(tree: ast.Module) -> set[str]:
    return {call.args[0].value for call in calls(tree, 'DeclareLaunchArgument')}  # type: ignore[attr-defined]


def dict_entries(tree: ast.Module, key: str) -> list[object]:
    """The constant values of ``key`` in every dict literal of the file."""
    return [value.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for k, value in zip(node.keys, node.values)
            if isinstance(k, ast.Constant) and k.value == key and isinstance(value, ast.Constant)]


def strings(tree: ast.Module) -> set[str]:
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize('name', ['fusion.launch.py', 'replay.launch.py', 'carla.launch.py'])
def test_launch_files_compile_and_take_config_and_namespace(name):
    tree = launch_tree(name)
    assert {'config', 'namespace'} <= declared_arguments(tree)
    assert [f.name for f in tree.body if isinstance(f, ast.FunctionDef)] == ['generate_launch_description']


def test_fusion_launch_runs_the_node_with_its_params_file():
    tree = launch_tree('fusion.launch.py')
    assert declared_arguments(tree) == {'config', 'namespace', 'use_sim_time', 'log_level'}
    node = calls(tree, 'Node')[0]
    keywords = {k.arg: k.value for k in node.keywords}
    constants = {key: getattr(value, 'value', None) for key, value in keywords.items()}
    assert (constants['package'], constants['executable'], constants['name']) == (
        'mmfusion_ros', 'fusion_node', fusion_node.NODE_NAME)
    assert {'params_file', 'use_sim_time'} <= {k.value for d in ast.walk(keywords['parameters'])
                                                if isinstance(d, ast.Dict) for k in d.keys}  # type: ignore[union-attr]
    assert 'default.yaml' in strings(tree)


def test_replay_launch_plays_the_bag_with_its_clock_into_a_sim_time_node():
    tree = launch_tree('replay.launch.py')
    assert {'bag', 'rate', 'config', 'namespace'} <= declared_arguments(tree)
    assert dict_entries(tree, 'use_sim_time') == ['true']
    play = calls(tree, 'ExecuteProcess')[0]
    command = next(k.value for k in play.keywords if k.arg == 'cmd')
    words = [e.value for e in command.elts if isinstance(e, ast.Constant)]  # type: ignore[attr-defined]
    assert words == ['ros2', 'bag', 'play', '--clock', '-r']
    assert 'fusion.launch.py' in strings(tree)


def test_carla_launch_uses_the_carla_config_on_sim_time():
    tree = launch_tree('carla.launch.py')
    assert 'carla.yaml' in strings(tree)
    assert dict_entries(tree, 'use_sim_time') == ['true']
    assert 'fusion.launch.py' in strings(tree)


# -- packaging -------------------------------------------------------------------------------------------


def test_console_script_and_ros_dependencies():
    setup = configparser.ConfigParser()
    setup.read(REPO / 'setup.cfg')
    scripts = dict(line.split(' = ') for line in setup['options.entry_points']['console_scripts'].strip().splitlines())
    assert scripts['fusion_node'] == 'mmfusion_ros.nodes.fusion_node:main'
    depends = {e.text for e in ET.parse(REPO / 'package.xml').getroot().iter('exec_depend')}
    assert {'rclpy', 'rcl_interfaces', 'rosidl_runtime_py', 'ament_index_python', 'launch', 'launch_ros', 'ros2bag',
            'vision_msgs', 'diagnostic_msgs', 'visualization_msgs', 'sensor_msgs', 'tf2_msgs', 'std_msgs'} <= depends


# -- with ROS 2 ------------------------------------------------------------------------------------------


@pytest.fixture
def ros_context():
    """An rclpy context of its own, shut down after the test."""
    rclpy = pytest.importorskip('rclpy', reason=NO_RCLPY)
    for package in ('rosidl_runtime_py', 'vision_msgs', 'diagnostic_msgs', 'visualization_msgs'):
        pytest.importorskip(package, reason=f'{package} (a ROS 2 package the node needs) is not installed')
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def make_node(context, params_file, **options):
    from rclpy.parameter import Parameter

    return fusion_node.create_node(context=context, parameter_overrides=[Parameter('params_file', value=params_file)],
                                   **options)


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.rclpy
def test_node_comes_up_with_a_config(ros_context):
    node = make_node(ros_context, str(DEFAULT_CONFIG))
    try:
        assert node.get_parameter('params_file').value == str(DEFAULT_CONFIG)
        published = lambda: dict(node.get_publisher_names_and_types_by_node('mmfusion', '/'))  # noqa: E731
        assert wait_for(lambda: '/mmfusion/output/objects' in published())
        assert published()['/mmfusion/output/objects'] == ['vision_msgs/msg/Detection3DArray']
        assert {'/diagnostics', '/mmfusion/output/markers', '/mmfusion/debug/pipeline_latency_ms'} <= set(published())
        subscribed = lambda: dict(node.get_subscriber_names_and_types_by_node('mmfusion', '/'))  # noqa: E731
        assert wait_for(lambda: {'/LIDAR_TOP', '/tf', '/tf_static', '/CAM_FRONT/camera_info'} <= set(subscribed()))
        assert subscribed()['/RADAR_FRONT'] == ['sensor_msgs/msg/PointCloud2']
    finally:
        node.destroy_node()


@pytest.mark.rclpy
def test_outputs_follow_namespace_and_layered_files(ros_context, tmp_path):
    override = tmp_path / 'override.yaml'
    override.write_text('/**:\n  ros__parameters:\n    outputs: {markers: /viz/boxes}\n')
    node = make_node(ros_context, [str(DEFAULT_CONFIG), str(override)], namespace='/vehicle1')
    try:
        published = lambda: set(dict(node.get_publisher_names_and_types_by_node('mmfusion', '/vehicle1')))  # noqa: E731
        assert wait_for(lambda: {'/vehicle1/mmfusion/output/objects', '/viz/boxes'} <= published())
        assert '/vehicle1/mmfusion/output/markers' not in published()
    finally:
        node.destroy_node()


@pytest.mark.rclpy
def test_a_bad_params_file_stops_the_node_with_the_file_named(ros_context, tmp_path):
    with pytest.raises(ConfigError, match=r'missing\.yaml: cannot read parameter file'):
        make_node(ros_context, str(tmp_path / 'missing.yaml'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text('/**:\n  ros__parameters:\n    grid: {cell_size: fast}\n')
    with pytest.raises(ConfigError, match=r'bad\.yaml.*grid\.cell_size'):
        make_node(ros_context, [str(DEFAULT_CONFIG), str(bad)])


@pytest.mark.rclpy
def test_deactivate_and_activate_drop_and_restore_the_inputs(ros_context):
    node = make_node(ros_context, str(DEFAULT_CONFIG))
    try:
        inputs = len(node.service.subscriptions())
        before = len(list(node.subscriptions))
        node.deactivate()
        assert len(list(node.subscriptions)) == before - inputs
        node.activate()
        assert len(list(node.subscriptions)) == before
    finally:
        node.destroy_node()
    assert node.service is None  # destroy_node ran deactivate + cleanup


@pytest.mark.rclpy
def test_main_with_a_bad_params_file_is_one_line_and_status_2(tmp_path, capsys):
    pytest.importorskip('rclpy', reason=NO_RCLPY)
    status = fusion_node.main(['fusion_node', '--ros-args', '-p', f'params_file:={tmp_path / "missing.yaml"}'])
    assert status == 2
    assert one_line(capsys.readouterr().err).startswith('fusion_node: error: ')


@pytest.fixture(scope='module')
def small_bag(tmp_path_factory) -> Path:
    """1 s of the small simulated urban rig, recorded with the default config's topics."""
    pytest.importorskip('rclpy', reason=NO_RCLPY)
    from simdata import small_scenario

    from mmfusion_ros.cli import main

    folder = tmp_path_factory.mktemp('node_bag')
    bag = folder / 'drive'
    assert main(['simulate', '--scenario', str(small_scenario(folder, duration_s=1.0)), '--out', str(bag),
                 '--seed', '3']) == 0
    return bag


@pytest.mark.rclpy
def test_node_publishes_objects_for_a_bag_fed_by_another_node(ros_context, small_bag):
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosidl_runtime_py.utilities import get_message

    import rclpy
    from mmfusion_ros.io.bag import BagReader
    from mmfusion_ros.msgs.decode import decode_detections

    with BagReader(small_bag) as reader:
        messages = [(m.topic, m.msgtype, m.raw, m.stamp_ns) for m in reader.messages()]
    node = make_node(ros_context, str(DEFAULT_CONFIG))
    feeder = rclpy.create_node('bag_feeder', context=ros_context)
    collector = rclpy.create_node('objects_collector', context=ros_context)
    objects: list[bytes] = []
    collector.create_subscription(get_message('vision_msgs/msg/Detection3DArray'), '/mmfusion/output/objects',
                                  lambda raw: objects.append(raw), 10, raw=True)
    publishers = {}
    for topic, msgtype in node.service.subscriptions().items():
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if topic == '/tf_static'
                         else DurabilityPolicy.VOLATILE)
        publishers[topic] = feeder.create_publisher(get_message(msgtype), topic, qos)
    executor = MultiThreadedExecutor(context=ros_context)
    for one in (node, feeder, collector):
        executor.add_node(one)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert wait_for(lambda: all(p.get_subscription_count() >= 1 for p in publishers.values()))
        start_wall, start_log = time.monotonic(), messages[0][3]
        for topic, _, raw, stamp in messages:  # at recorded speed: sensor subscriptions keep only 5
            time.sleep(max(0.0, (stamp - start_log) / 1e9 - (time.monotonic() - start_wall)))
            publishers[topic].publish(raw)
        assert wait_for(lambda: len(objects) > 0, timeout_s=60.0), node.service.summary()
        detections = decode_detections(objects[0], '/mmfusion/output/objects')
        assert detections.frame_id == 'base_link'
        assert sum(node.callback_failures.values()) == 0
        assert node.service.summary()['sensors']['lidar_top']['received'] > 0
    finally:
        executor.shutdown()
        spinner.join(timeout=10)
        for one in (node, feeder, collector):
            one.destroy_node()


@pytest.mark.rclpy
@pytest.mark.parametrize('name', ['fusion.launch.py', 'replay.launch.py', 'carla.launch.py'])
def test_launch_descriptions_build(name):
    pytest.importorskip('launch_ros', reason='launch_ros is not installed here (it comes with ROS 2)')
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    description = module.generate_launch_description()
    declared = {argument.name for argument in description.get_launch_arguments()}
    assert {'config', 'namespace'} <= declared
