"""One vehicle's detector: ``ros2 launch mmfusion_ros fusion.launch.py [config:=FILE] [namespace:=NS]``.

Arguments:
  config        parameter file(s) of the detector: a path, or "[a.yaml, b.yaml]" to layer several
                (later ones override key by key); default: config/default.yaml of the package
  namespace     the vehicle's namespace; outputs go to /<namespace>/mmfusion/output/...
                (sensor topics in the config are absolute and stay as they are: remap them if needed)
  use_sim_time  follow /clock (a bag played with --clock, a simulator); default false
  log_level     debug, info, warn, error; default info

The config files go to the node's ``params_file`` parameter, not to ``--params-file``: the node
reads them itself (``mmfusion_ros/nodes/fusion_node.py`` says why).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            'config', default_value=PathJoinSubstitution([FindPackageShare('mmfusion_ros'), 'config', 'default.yaml']),
            description='parameter file of the detector, or "[a.yaml, b.yaml]" to layer several'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the vehicle'),
        DeclareLaunchArgument('use_sim_time', default_value='false', description='follow /clock'),
        DeclareLaunchArgument('log_level', default_value='info', description='log level of the node'),
        Node(
            package='mmfusion_ros',
            executable='fusion_node',
            name='mmfusion',
            namespace=LaunchConfiguration('namespace'),
            parameters=[{
                'params_file': LaunchConfiguration('config'),  # a path (string) or a list of paths
                'use_sim_time': LaunchConfiguration('use_sim_time'),
            }],
            arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
            output='screen',
            emulate_tty=True,
        ),
    ])
