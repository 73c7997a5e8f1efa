"""Small simulated recordings for tests (importable from any test module: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import yaml

# A small rig (96x54 cameras, 256 lidar azimuth steps) keeps simulated recordings fast to make.
SMALL_RIG = {'camera': {'width': 96, 'height': 54}, 'lidar': {'azimuth_steps': 256}}


def small_scenario(folder: Path, **overrides) -> Path:
    """A scenario file with the small rig (urban, 2 s unless overridden)."""
    body = {'name': 'small', 'layout': 'urban', 'duration_s': 2.0, 'rig': SMALL_RIG, **overrides}
    path = folder / ('small.yaml' if body['layout'] == 'urban' else f'small_{body["layout"]}.yaml')
    path.write_text(yaml.safe_dump(body))
    return path


def small_dataset(folder: Path, seconds: float = 1.0) -> Path:
    """Two annotated scenes (urban, highway) in dataset form under folder/scenes."""
    from mmfusion_ros.config import load_config
    from mmfusion_ros.sim.faults import load_faults
    from mmfusion_ros.sim.scenario import load_scenario
    from mmfusion_ros.sim.simulator import record_dataset

    scenarios = [load_scenario(small_scenario(folder, layout=layout)) for layout in ('urban', 'highway')]
    schedules = [load_faults('none', s.rig, seconds) for s in scenarios]
    record_dataset(folder / 'scenes', 2, scenarios, schedules, load_config(), seed=11, duration_s=seconds)
    return folder / 'scenes'
