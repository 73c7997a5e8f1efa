"""``fusion_node``: the detector as an rclpy node, a thin shell around ``FusionService``.

    raw subscriptions (CDR bytes) --push--> FusionService --OutputMessage--> serialized publishers
    20 Hz timer ---------------------poll--> (late frames, /diagnostics)

The node declares its parameters, builds the config, calls the core and converts messages; there
is nothing to convert: the service takes and returns serialized messages, so the node never
deserializes a message. Everything the node does besides rclpy calls is the service's, and is
tested there (``tests/runtime/test_service.py``).

Parameters. The node declares one parameter of its own, ``params_file``: a path, or a list of
paths layered in order (later files override key by key, as ROS 2 does with several
``--params-file``). The default is ``config/default.yaml`` of the installed package. The files are
ROS-form parameter files (``/**: ros__parameters:``) read by ``config.load_config``, the reader
``mmfusion replay`` and the DDS node use. Why the keys are not declared as ROS parameters:

- ``sensors`` is a mapping keyed by names the file chooses (``lidar_top``, ``rgb_front``). ROS 2
  parameters have no mapping type and are declared by exact name, so the node would have to read
  the file to know what to declare;
- rcl's YAML parser can not type an empty list (``sync.wait_for: []``; ros2/rclcpp#1955), so a
  valid config would fail as ``--params-file``;
- one reader, one set of errors: an unknown key or a wrong type is a ``ConfigError`` naming the key
  path, in the node exactly as in ``mmfusion replay``;
- a new sensor or grid means a new pipeline. That is ``cleanup()`` + ``configure()``, which reread
  the files, not a parameter callback on a running pipeline.

So a different value is a second file layered on the first (``config:="[default.yaml, mine.yaml]"``
for the launch files), and ``ros2 param get /mmfusion params_file`` says which files were read.
Passing a config file itself with ``--params-file`` does nothing: its keys are not node parameters.
``use_sim_time`` is rclpy's own: the service's clock is the node's clock, so with
``ros2 bag play --clock`` sync timeouts, staleness and latency follow the recording.

QoS of the inputs (``input_qos``): sensor data best effort, keep last 5 (``qos_profile_sensor_data``;
a best-effort subscription matches reliable and best-effort publishers); CameraInfo the same: it
comes with every image, a lost one is replaced by the next, and a reliable subscription would
never hear a best-effort camera driver (nor the simulator's recordings, which offer CameraInfo best
effort). ``/tf`` reliable, volatile, keep last 100 and ``/tf_static`` reliable, transient local,
keep last 100: tf2's own listener QoS, so a late-starting node still gets every static transform.
Outputs use the default profile (reliable, volatile, keep last 10).

Lifecycle-friendly: ``configure()`` (config, pipeline, service, publishers), ``activate()``
(subscriptions, poll timer), ``deactivate()``, ``cleanup()``. The plain node runs configure +
activate in its constructor and the reverse in ``destroy_node``; a ``LifecycleNode`` would call the
same four from ``on_configure`` and friends (with lifecycle publishers).

Errors: nothing that arrives stops the node. The service counts unreadable messages and failed
frames and reports them on ``/diagnostics``; anything else a callback raises is counted in
``callback_failures`` and logged (at most once every 5 s), and the next message is handled as usual.
A bad parameter file stops the node before it starts, with one line naming file and key.
"""

from __future__ import annotations

import collections
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from ..config import DEFAULT_CONFIG, FusionConfig, load_config
from ..errors import ConfigError, MmfusionError, TransportError

if TYPE_CHECKING:  # the runtime imports pull in torch: only when a node is configured
    from ..runtime.service import FusionService, OutputMessage

__all__ = [
    'CAMERA_INFO_QOS',
    'LOG_THROTTLE_S',
    'NODE_NAME',
    'POLL_PERIOD_S',
    'SENSOR_DATA_QOS',
    'TF_QOS',
    'TF_STATIC_QOS',
    'InputQos',
    'create_node',
    'default_params_file',
    'input_qos',
    'main',
    'node_class',
    'params_files',
    'require_rclpy',
]

NODE_NAME = 'mmfusion'  # outputs '~/output/objects' resolve to /<namespace>/mmfusion/output/objects
POLL_PERIOD_S = 0.05  # 20 Hz: late frames go out within 50 ms of their sync timeout
LOG_THROTTLE_S = 5.0
PACKAGE = 'mmfusion_ros'
RCLPY_MISSING = ('rclpy is not importable ({reason}); source a ROS 2 installation (e.g. '
                 '/opt/ros/humble/setup.bash) first, or run without ROS: mmfusion replay / mmfusion dds-node')


class InputQos(NamedTuple):
    """How one input topic is subscribed, without rclpy: turned into a ``QoSProfile`` by the node."""

    kind: str  # 'sensor_data', 'camera_info', 'tf', 'tf_static'
    reliable: bool
    transient_local: bool
    depth: int


SENSOR_DATA_QOS = InputQos('sensor_data', reliable=False, transient_local=False, depth=5)
CAMERA_INFO_QOS = InputQos('camera_info', reliable=False, transient_local=False, depth=5)
TF_QOS = InputQos('tf', reliable=True, transient_local=False, depth=100)  # tf2_ros::DynamicListenerQoS
TF_STATIC_QOS = InputQos('tf_static', reliable=True, transient_local=True, depth=100)  # StaticListenerQoS


def input_qos(topic: str, msgtype: str) -> InputQos:
    """The QoS the node subscribes ``topic`` with (module docstring: why)."""
    if topic == '/tf_static':
        return TF_STATIC_QOS
    if topic == '/tf':
        return TF_QOS
    if msgtype == 'sensor_msgs/msg/CameraInfo':
        return CAMERA_INFO_QOS
    return SENSOR_DATA_QOS


def default_params_file() -> Path:
    """``config/default.yaml`` of the installed package (ament index), else of this checkout or pip install."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return DEFAULT_CONFIG
    try:
        installed = Path(get_package_share_directory(PACKAGE)) / 'config' / 'default.yaml'
    except PackageNotFoundError:
        return DEFAULT_CONFIG
    return installed if installed.is_file() else DEFAULT_CONFIG


def params_files(value: Any) -> list[Path]:
    """The ``params_file`` parameter as paths: one path, or a non-empty list of them, in layering order."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f'params_file: expected a path or a non-empty list of paths, got {value!r}')
    paths = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f'params_file: every entry must be a non-empty path, got {item!r} in {value!r}')
        paths.append(Path(item.strip()).expanduser())
    return paths


def require_rclpy() -> Any:
    """The ``rclpy`` module, or a ``TransportError`` that says in one line why it is not there."""
    try:
        import rclpy
    except ImportError as err:
        raise TransportError(RCLPY_MISSING.format(reason=str(err).split('\n')[0] or 'no module named rclpy')) from None
    return rclpy


@functools.cache
def node_class() -> type:
    """``FusionNode`` (an ``rclpy.node.Node``), defined on first use so this module imports without ROS."""
    require_rclpy()
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.node import Node
    from rclpy.qos import (
        DurabilityPolicy,
        HistoryPolicy,
        QoSProfile,
        ReliabilityPolicy,
        qos_profile_sensor_data,
    )
    from rosidl_runtime_py.utilities import get_message

    def qos_profile(spec: InputQos) -> QoSProfile:
        if spec.kind == 'sensor_data':
            return qos_profile_sensor_data
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
                          reliability=ReliabilityPolicy.RELIABLE if spec.reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if spec.transient_local
                          else DurabilityPolicy.VOLATILE)

    output_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)

    class FusionNode(Node):
        """Serialized sensor messages in, serialized detections out; see the module docstring."""

        def __init__(self, node_name: str = NODE_NAME, **node_options: Any) -> None:
            super().__init__(node_name, **node_options)
            self.declare_parameter(
                'params_file', [str(default_params_file())],
                ParameterDescriptor(
                    description='ROS-form parameter file(s) of the detector (config/*.yaml), later ones '
                                'overriding; read when the node is configured',
                    dynamic_typing=True))  # a single path (string) or a list of paths
            self.config: FusionConfig | None = None
            self.service: FusionService | None = None
            self.callback_failures: collections.Counter[str] = collections.Counter()
            self._pipeline: Any = None
            self._output_publishers: dict[str, Any] = {}
            self._input_subscriptions: list[Any] = []
            self._poll_timer: Any = None
            try:
                self.configure()
                self.activate()
            except BaseException:
                self.destroy_node()  # what configure() made so far: the worker, the publishers
                raise

        # -- lifecycle ---------------------------------------------------------------------------------

        def configure(self) -> None:
            """Read the parameter files; build the pipeline, the service and the output publishers."""
            from ..pipeline import FusionPipeline
            from ..runtime.service import FusionService

            paths = params_files(self.get_parameter('params_file').value)
            self.config = load_config(paths, node_name=self.get_name())
            self._pipeline = FusionPipeline(self.config)
            self.service = FusionService(self.config, self._pipeline, clock=self._now_ns,
                                         node_name=self.get_fully_qualified_name(), threaded=True,
                                         publish=self._publish)
            for topic, msgtype in self.service.publications().items():
                self._output_publishers[topic] = self.create_publisher(get_message(msgtype), topic, output_qos)
            self.get_logger().info(
                f'configured from {" + ".join(map(str, paths))}: {len(self.config.sensors)} sensors, '
                f'{self.config.model.preset} model on a {self.config.grid.shape[0]}x{self.config.grid.shape[1]} grid')

        def activate(self) -> None:
            """Subscribe to every input and start polling for late frames."""
            if self.service is None:
                raise RuntimeError('FusionNode.activate: configure() first')
            for topic, msgtype in self.service.subscriptions().items():
                self._input_subscriptions.append(self.create_subscription(
                    get_message(msgtype), topic, functools.partial(self._on_message, topic, msgtype),
                    qos_profile(input_qos(topic, msgtype)), raw=True))
            # Its own group: a poll never waits behind a burst of sensor callbacks.
            self._poll_timer = self.create_timer(POLL_PERIOD_S, self._on_poll,
                                                 callback_group=MutuallyExclusiveCallbackGroup())
            self.get_logger().info(f'listening on {len(self._input_subscriptions)} topics, publishing '
                                   f'{", ".join(self._output_publishers)}')

        def deactivate(self) -> None:
            """Stop taking input: no subscriptions, no polls. The service keeps its state."""
            if self._poll_timer is not None:
                self.destroy_timer(self._poll_timer)
                self._poll_timer = None
            for subscription in self._input_subscriptions:
                self.destroy_subscription(subscription)
            self._input_subscriptions = []

        def cleanup(self) -> None:
            """Stop the service's worker (after the frame it is running), then drop publishers and pipeline."""
            if self.service is not None:
                self.service.close()
                self.service = None
            for publisher in self._output_publishers.values():
                self.destroy_publisher(publisher)
            self._output_publishers = {}
            self._pipeline = None
            self.config = None

        def destroy_node(self) -> None:
            self.deactivate()
            self.cleanup()
            super().destroy_node()

        # -- callbacks -------------------------------------------------------------------------------------

        def _now_ns(self) -> int:
            return self.get_clock().now().nanoseconds

        def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
            service = self.service
            if service is None:
                return
            try:
                outputs = service.push(topic, msgtype, raw)
            except Exception as err:  # noqa: BLE001 - a callback must never take the node down
                self._failed(f'{topic}: message not handled', err)
                return
            self._publish_all(outputs)

        def _on_poll(self) -> None:
            service = self.service
            if service is None:
                return
            try:
                outputs = service.poll()
            except Exception as err:  # noqa: BLE001
                self._failed('poll', err)
                return
            self._publish_all(outputs)

        def _publish_all(self, outputs: Sequence[OutputMessage]) -> None:
            for message in outputs:
                self._publish(message)

        def _publish(self, message: OutputMessage) -> None:
            """Hand one serialized output to its publisher (also called from the service's worker)."""
            publisher = self._output_publishers.get(message.topic)
            if publisher is None:  # cleaned up while the frame ran
                return
            try:
                publisher.publish(message.raw)  # bytes: rclpy publishes them as they are
            except Exception as err:  # noqa: BLE001 - would end the service's worker thread
                self._failed(f'{message.topic}: not published', err)

        def _failed(self, what: str, err: Exception) -> None:
            self.callback_failures[what] += 1
            self.get_logger().warning(
                f'{what} ({self.callback_failures[what]} so far): {type(err).__name__}: '
                f'{str(err).splitlines()[0] if str(err) else ""}',
                throttle_duration_sec=LOG_THROTTLE_S)

    return FusionNode


def create_node(node_name: str = NODE_NAME, **node_options: Any) -> Any:
    """A configured, active ``FusionNode``; ``node_options`` go to ``rclpy.node.Node`` (context,
    namespace, parameter_overrides, ...). Needs ``rclpy.init`` first."""
    return node_class()(node_name, **node_options)


def __getattr__(name: str) -> Any:
    if name == 'FusionNode':  # ``from mmfusion_ros.nodes.fusion_node import FusionNode`` where ROS is
        return node_class()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def main(argv: Sequence[str] | None = None) -> int:
    """``ros2 run mmfusion_ros fusion_node [--ros-args ...]``: spin until Ctrl-C, then shut down cleanly.

    ``argv`` is the whole command line, program name first (``sys.argv`` by default). Returns the
    exit status: 0 after a clean shutdown, 2 with one line on stderr when rclpy is missing or the
    parameter files are bad.
    """
    program = 'fusion_node'
    try:
        rclpy = require_rclpy()
    except TransportError as err:
        print(f'{program}: error: {err}', file=sys.stderr)
        return 2
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    executor = None
    status = 0
    try:
        node = create_node()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C or `ros2 lifecycle`/launch shutting the context down: a normal end
    except MmfusionError as err:
        print(f'{program}: error: {err}', file=sys.stderr)
        status = 2
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()  # stops the worker after its frame, then the publishers
        rclpy.try_shutdown()
    return status


if __name__ == '__main__':
    sys.exit(main())
