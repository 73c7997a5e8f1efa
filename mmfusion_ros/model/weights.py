"""Weights files: the network's parameters with the configuration they belong to.

A weights file is a ``torch.save`` of plain containers (format tag, the ``ModelConfig`` as a dict,
the state dict, and a free-form ``meta`` dict of strings and numbers), so it loads with
``torch.load(weights_only=True)``: no pickled code runs. Loading rebuilds the network from the
stored configuration and refuses a file whose grid differs from the one the caller runs on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..config import GridConfig, config_from_dict
from ..errors import ConfigError, ModelError
from .config import ModelConfig
from .network import FusionNet

__all__ = ['DEFAULT_WEIGHTS', 'WEIGHTS_FORMAT', 'load_weights', 'model_config_from_dict', 'model_config_to_dict',
           'save_weights']

WEIGHTS_FORMAT = 'mmfusion-weights/1'
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / 'weights' / 'default.pt'


def model_config_to_dict(config: Any) -> dict[str, Any]:
    """The settable fields of a (nested) config dataclass as plain dicts, lists and scalars."""
    out = {}
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = model_config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, data, 'model_config')
    except ConfigError as err:
        raise ModelError(f'weights: {err}') from None


def save_weights(path: str | Path, net: FusionNet, meta: dict[str, Any] | None = None) -> None:
    """Write atomically: the file appears only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        'format': WEIGHTS_FORMAT,
        'model_config': model_config_to_dict(net.config),
        'state_dict': {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        'meta': dict(meta or {}),
    }
    tmp = path.with_name(path.name + '.tmp')
    torch.save(payload, tmp)
    tmp.replace(path)


def read_weights(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise ModelError(f'{path}: no such weights file') from None
    except Exception as err:  # torch raises many kinds for a corrupt or foreign file
        raise ModelError(f'{path}: not a readable weights file ({type(err).__name__}: '
                         f'{str(err).splitlines()[0] if str(err) else ""})') from None
    if not isinstance(payload, dict) or payload.get('format') != WEIGHTS_FORMAT:
        raise ModelError(f'{path}: not a {WEIGHTS_FORMAT} file')
    return payload


def load_weights(path: str | Path | None = None, grid: GridConfig | None = None,
                 device: str | torch.device = 'cpu') -> FusionNet:
    """The network of a weights file (default: the packaged one), in eval mode, on ``device``."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    payload = read_weights(path)
    config = model_config_from_dict(payload['model_config'])
    if grid is not None and config.grid != grid:
        raise ModelError(f'{path}: trained for the grid {model_config_to_dict(config.grid)}, but the parameter '
                         f'file sets {model_config_to_dict(grid)}')
    net = FusionNet(config)
    try:
        net.load_state_dict(payload['state_dict'])
    except RuntimeError as err:
        raise ModelError(f'{path}: weights do not fit the network of its own configuration '
                         f'({str(err).splitlines()[0]})') from None
    return net.to(device).eval()
