"""The detector on the carla-ros-bridge: ``ros2 launch mmfusion_ros carla.launch.py``.

Start the bridge and its example ego vehicle first (``carla_ros_bridge``, ``carla_spawn_objects``
with objects.json: role name ``ego_vehicle`` with ``rgb_front``, ``lidar``, ``radar_front``).
``config/carla.yaml`` reads the bridge's own topics (/carla/ego_vehicle/lidar,
/carla/ego_vehicle/rgb_front/image and camera_info, /carla/ego_vehicle/radar_front), frames
``map`` and ``ego_vehicle``, so the inputs need no remapping; a vehicle with another role name or
other sensors needs its own copy of that file. The bridge publishes /clock (the simulator's time),
so ``use_sim_time`` is true.

Arguments:
  config     parameter file(s), as for fusion.launch.py; default config/carla.yaml
  namespace  namespace of the node; default none
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

FUSION_LAUNCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fusion.launch.py')


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            'config', default_value=PathJoinSubstitution([FindPackageShare('mmfusion_ros'), 'config', 'carla.yaml']),
            description='parameter file of the detector, or "[a.yaml, b.yaml]" to layer several'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(FUSION_LAUNCH),
            launch_arguments={
                'config': LaunchConfiguration('config'),
                'namespace': LaunchConfiguration('namespace'),
                'use_sim_time': 'true',  # the simulator's clock, published by the bridge on /clock
            }.items()),
    ])
