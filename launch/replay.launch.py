"""A recording through the detector: ``ros2 launch mmfusion_ros replay.launch.py bag:=BAG [rate:=1.0]``.

Starts ``fusion.launch.py`` with ``use_sim_time`` true and, ``delay`` seconds later (the network
loads first, so the first sweeps are not lost), ``ros2 bag play --clock BAG -r RATE``: the node's
clock is the recording's, so sync timeouts, staleness and latency follow it at any rate. The launch
ends when the bag has played.

Arguments:
  bag        rosbag2 directory or .mcap file (required)
  rate       playback rate; default 1.0
  delay      seconds between the node's start and the first message; default 5.0
  config     parameter file(s), as for fusion.launch.py; default config/default.yaml
  namespace  the vehicle's namespace; default none
"""

import os

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    RegisterEventHandler,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

FUSION_LAUNCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fusion.launch.py')


def generate_launch_description() -> LaunchDescription:
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', LaunchConfiguration('bag'), '--clock', '-r', LaunchConfiguration('rate')],
        name='bag_play', output='screen')
    return LaunchDescription([
        DeclareLaunchArgument('bag', description='rosbag2 directory or .mcap file to play'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback rate'),
        DeclareLaunchArgument('delay', default_value='5.0',
                              description='seconds between the node start and the first message'),
        DeclareLaunchArgument(
            'config', default_value=PathJoinSubstitution([FindPackageShare('mmfusion_ros'), 'config', 'default.yaml']),
            description='parameter file of the detector, or "[a.yaml, b.yaml]" to layer several'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the vehicle'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(FUSION_LAUNCH),
            launch_arguments={
                'config': LaunchConfiguration('config'),
                'namespace': LaunchConfiguration('namespace'),
                'use_sim_time': 'true',  # the recording's clock, from `ros2 bag play --clock`
            }.items()),
        TimerAction(period=LaunchConfiguration('delay'), actions=[play]),
        RegisterEventHandler(OnProcessExit(
            target_action=play, on_exit=[EmitEvent(event=Shutdown(reason='the recording has played'))])),
    ])
