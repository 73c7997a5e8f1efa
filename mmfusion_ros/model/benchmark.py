"""`mmfusion bench network`: how long the network takes per frame, on the CPU or a CUDA device.

Each frame is a cached training frame (``mmfusion train``'s cache: clouds, images, calibration);
per frame it times the input preparation as inference does it (pillarization, image resize, the
camera lift's geometry, cached while the calibration holds still: host work),
the forward pass (synchronised on CUDA so the time is the device's) and the decode, each as the
median and 99th percentile over ``repeats`` passes after ``warmup`` untimed ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import FusionConfig
from ..errors import ConfigError
from .config import model_config
from .decode import decode_detections
from .inputs import CameraGeometryCache, ModelInputs, camera_inputs, cloud_columns, model_inputs, pillar_inputs
from .network import FusionNet
from .weights import DEFAULT_WEIGHTS, load_configured_model, resolve_device

__all__ = ['bench_network', 'frame_files']


def frame_files(paths: Sequence[Path]) -> list[Path]:
    """The cached frames (``*.npz``) named, or found under the folders named, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob('frame_*.npz'))
        elif path.suffix == '.npz' and path.is_file():
            files.append(path)
        else:
            raise ConfigError(f'--frames: {path} is neither a cached frame (.npz) nor a folder of them')
    if not files:
        raise ConfigError(f'--frames: no cached frames (frame_*.npz) under {", ".join(map(str, paths))}')
    return files


def _inputs(arrays: dict[str, np.ndarray], model, cache: CameraGeometryCache) -> ModelInputs:
    """A cached frame's network inputs, as ``frame_inputs`` makes them from a live frame."""
    from ..frame import LIDAR_FIELDS, RADAR_FIELDS

    camera = None
    if 'images' in arrays:
        images = arrays['images']
        geometry = cache.geometry_from_arrays(arrays['camera_K'], arrays['camera_T'], (images.shape[2], images.shape[1]))
        camera = camera_inputs(list(images), geometry, model.camera)
    clouds = {}
    for modality, fields in (('lidar', LIDAR_FIELDS), ('radar', RADAR_FIELDS)):
        encoder = getattr(model, modality)
        clouds[modality] = pillar_inputs(cloud_columns(arrays[modality], fields, encoder.point_fields, modality),
                                         model.grid, encoder, modality) if bool(arrays[f'has_{modality}']) else None
    return model_inputs(camera, clouds['lidar'], clouds['radar'])


def _network(config: FusionConfig, weights: Path | None, device: torch.device) -> tuple[FusionNet, str]:
    """The configured network with its weights where they exist for it; else freshly initialised
    (timing does not depend on the values: the GPU preset ships no weights)."""
    if weights is not None or config.model.weights or config.model.preset == 'cpu':
        net = load_configured_model(config, weights)
        return net.to(device).eval(), str(weights or config.model.weights or DEFAULT_WEIGHTS)
    torch.manual_seed(0)
    return FusionNet(model_config(config)).to(device).eval(), 'initialised (no weights for this preset)'


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {'p50': float(np.percentile(array, 50)), 'p99': float(np.percentile(array, 99)),
            'mean': float(array.mean())}


def bench_network(files: Sequence[Path], config: FusionConfig, *, weights: Path | None = None,
                  device: str | None = None, repeats: int = 3, warmup: int = 1) -> dict[str, Any]:
    """Per-frame timings (ms) of input preparation, forward pass and decode over ``files``."""
    from ..train.data import load_frame

    if repeats < 1 or warmup < 0:
        raise ConfigError(f'repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}')
    where = resolve_device(device or config.model.device)
    net, weights_used = _network(config, weights, where)
    model = net.config
    cache = CameraGeometryCache(model.grid, model.camera)
    cuda = where.type == 'cuda'

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(where)

    timings: dict[str, list[float]] = {'inputs_ms': [], 'network_ms': [], 'decode_ms': [], 'total_ms': []}
    detections = []
    frames = [load_frame(path) for path in files]
    for index in range(warmup + repeats):
        for arrays in frames:
            t0 = time.perf_counter()
            inputs = _inputs(arrays, model, cache)
            t1 = time.perf_counter()
            with torch.inference_mode():
                outputs = net(inputs)
                sync()
                t2 = time.perf_counter()
                boxes = decode_detections(outputs, model.grid, model.head, int(arrays['stamp_ns']), 'base_link')
            t3 = time.perf_counter()
            if index < warmup:
                continue
            for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                value *= 1000.0
                timings[key].append(value)
            detections.append(len(boxes))
    result: dict[str, Any] = {
        'device': torch.cuda.get_device_name(where) if cuda else 'cpu',
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'preset': config.model.preset,
        'fuser': config.model.fuser,
        'grid_cells': list(model.grid.shape),
        'weights': weights_used,
        'frames': len(frames),
        'repeats': repeats,
        'detections_mean': float(np.mean(detections)),
    }
    result.update({key: _stats(values) for key, values in timings.items()})
    if cuda:
        result['max_memory_mb'] = torch.cuda.max_memory_allocated(where) / 2**20
    return result
