"""Installs mmfusion_ros with pip (a venv, no ROS) or colcon (ament_python, on a ROS 2 machine)."""

from glob import glob

from setuptools import setup

PACKAGE = 'mmfusion_ros'

setup(
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml')),
    ],
)
