"""Scenarios: what a simulated drive contains, as a format of its own.

A scenario is a YAML mapping whose keys are the fields of ``Scenario`` (every one optional)::

    name: rainy_crossing
    layout: intersection        # urban | highway | intersection
    duration_s: 15.0
    lighting: day               # day | night (darker cameras; lidar and radar unchanged)
    ego_speed: 8.0              # m/s along the ego's route
    traffic: {cars: 10, trucks: 2, buses: 1, pedestrians: 8, cyclists: 3, parked_cars: 8}
    rig:
      camera: {width: 400, height: 225}

The named scenarios (``urban``, ``highway``, ``intersection``, ``night``) are YAML files in
``scenarios/`` beside this module. Nothing in a scenario names a simulator: a CARLA backend reads
the same layout, traffic and rig and places its own assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import config_from_dict, read_yaml
from ..errors import ConfigError
from .rig import Rig

__all__ = ['SCENARIO_DIR', 'Scenario', 'Traffic', 'load_scenario', 'scenario_names']

SCENARIO_DIR = Path(__file__).resolve().parent / 'scenarios'


@dataclass(frozen=True)
class Traffic:
    """How many actors of each class take part (parked cars are static)."""

    cars: int = 10
    trucks: int = 2
    buses: int = 1
    pedestrians: int = 8
    cyclists: int = 3
    parked_cars: int = 8

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ConfigError(f'{name}: must be >= 0, got {value}')


@dataclass(frozen=True)
class Scenario:
    name: str = 'custom'
    layout: Literal['urban', 'highway', 'intersection'] = 'urban'
    duration_s: float = 20.0
    lighting: Literal['day', 'night'] = 'day'
    ego_speed: float = 8.0  # m/s
    traffic: Traffic = Traffic()
    rig: Rig = field(default_factory=Rig)
    start_ns: int = 1_700_000_000_000_000_000  # stamp of the scene's first instant

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ConfigError(f'duration_s: must be positive, got {self.duration_s}')
        if not 0 <= self.ego_speed <= 40:
            raise ConfigError(f'ego_speed: must be within [0, 40] m/s, got {self.ego_speed}')
        if self.start_ns < 0:
            raise ConfigError(f'start_ns: must be >= 0, got {self.start_ns}')


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob('*.yaml'))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A named scenario (``urban``) or a YAML file; errors name the file and the key path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f'{name_or_path}.yaml'
        if not path.is_file():
            raise ConfigError(f'unknown scenario {str(name_or_path)!r}; named scenarios: '
                              f'{", ".join(scenario_names())}, or give a YAML file')
    data = read_yaml(path, 'scenario')
    try:
        return config_from_dict(Scenario, data if data is not None else {})
    except ConfigError as err:
        raise ConfigError(f'{path}: {err}') from None
