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

from ..config import FusionConfig, GridConfig, config_from_dict
from ..errors import ConfigError, ModelError
from .config import ModelConfig, model_config
from .network import FusionNet

__all__ = ['DEFAULT_WEIGHTS', 'WEIGHTS_FORMAT', 'load_configured_model', 'load_weights', 'resolve_device', 'model_config_from_dict', 'model_config_to_dict',
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


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when torch sees a GPU, else CPU; 'cuda' without one is a ModelError."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ModelError('model.device: cuda, but torch sees no CUDA device (set device: auto or cpu)')
    return torch.device(name)


def load_configured_model(config: FusionConfig, weights: str | Path | None = None) -> FusionNet:
    """The network the parameter file asks for (``model`` section), with its weights, on its device.

    ``weights`` overrides ``model.weights``; neither set means the packaged weights. Weights trained
    for another network than the file's preset and grid are refused with both named.
    """
    path = Path(weights) if weights else Path(config.model.weights) if config.model.weights else DEFAULT_WEIGHTS
    net = load_weights(path, config.grid, resolve_device(config.model.device))
    wanted = model_config(config)
    if net.config != wanted:
        differing = [f.name for f in dataclasses.fields(wanted) if f.init and getattr(wanted, f.name) != getattr(net.config, f.name)]
        raise ModelError(f'{path}: these weights are for another network than model.preset {config.model.preset!r} '
                         f'with fuser {config.model.fuser!r} (differs in {", ".join(differing)})')
    return net
