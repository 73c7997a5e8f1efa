"""A small simulated recording shared by the runtime tests, and the pipeline that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from simdata import small_scenario


@pytest.fixture(scope='session')
def sim_bag(tmp_path_factory) -> Path:
    """1.5 s of the small urban rig (6 cameras, lidar, 5 radars, ground truth), seed 5."""
    from mmfusion_ros.cli import main

    folder = tmp_path_factory.mktemp('runtime_bag')
    bag = folder / 'drive'
    assert main(['simulate', '--scenario', str(small_scenario(folder, duration_s=1.5)), '--out', str(bag),
                 '--seed', '5']) == 0
    return bag


@pytest.fixture(scope='session')
def fusion_config():
    from mmfusion_ros.config import load_config

    return load_config()


@pytest.fixture(scope='session')
def pipeline(fusion_config):
    from mmfusion_ros.pipeline import FusionPipeline

    return FusionPipeline(fusion_config)


@pytest.fixture(scope='session')
def bag_messages(sim_bag):
    """Every message of the small recording, in log order: (topic, msgtype, raw, log stamp)."""
    from mmfusion_ros.io.bag import BagReader

    with BagReader(sim_bag) as reader:
        return [(m.topic, m.msgtype, m.raw, m.stamp_ns) for m in reader.messages()]


@pytest.fixture(scope='session')
def blackout_bag(tmp_path_factory) -> Path:
    """The small drive of ``sim_bag`` with the front camera black from 0.45 s to 0.9 s (preset, scaled)."""
    from mmfusion_ros.cli import main

    folder = tmp_path_factory.mktemp('runtime_blackout')
    bag = folder / 'drive'
    assert main(['simulate', '--scenario', str(small_scenario(folder, duration_s=1.5)), '--out', str(bag),
                 '--seed', '5', '--faults', 'camera_blackout']) == 0
    return bag


@pytest.fixture(scope='session')
def demo_bag(tmp_path_factory) -> Path:
    """The demo drive of ``make demo`` (15 s urban, seed 7, front camera black 4.5-9 s): the cached
    copy in bags/ when ``make demo`` made it, else rendered the same way (about two minutes)."""
    from mmfusion_ros.cli import main

    cached = Path(__file__).resolve().parents[2] / 'bags' / 'demo_urban_mcap'
    if (cached / 'metadata.yaml').exists():
        return cached
    bag = tmp_path_factory.mktemp('demo') / 'demo_urban_mcap'
    assert main(['simulate', '--scenario', 'urban', '--faults', 'camera_blackout', '--duration', '15', '--seed', '7',
                 '--out', str(bag)]) == 0
    return bag
