"""``mmfusion train``: scenes -> cached frames -> steps of AdamW, checkpointed, resumable, seeded.

Everything a run writes lives under its output folder::

    OUT/data/           the simulator scenes (unless train.data.dataset names existing ones)
    OUT/cache/          the cached frames (see train/data.py)
    OUT/checkpoint.pt   model, optimizer and schedule state, step; rewritten every checkpoint_every steps
    OUT/weights.pt      the network alone (the shippable file), written with every checkpoint
    OUT/log.jsonl       one line per checkpoint: step, learning rate, mean losses, seconds
    OUT/summary.json    what `--json` reports

Determinism: sample ``n`` draws its augmentation and dropout from a generator seeded by
``(seed, n)`` and the frame order of an epoch is a permutation seeded by ``(seed, epoch)``, so a
resumed run continues exactly as an uninterrupted one would have (torch's deterministic algorithms are
switched on: with two threads, two runs otherwise drift apart in the fourth decimal after a step).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import load_config
from ..errors import ConfigError
from ..io.json_file import write_json
from ..model.config import ModelConfig, model_config
from ..model.inputs import CameraGeometryCache
from ..model.network import FusionNet
from ..model.weights import model_config_from_dict, model_config_to_dict, read_weights, save_weights
from .config import TrainConfig
from .data import build_sample, cache_dataset, load_frame, sample_stream
from .losses import total_loss

__all__ = ['build_model_config', 'train']


def build_model_config(config: TrainConfig) -> ModelConfig:
    return model_config(load_config(config.fusion_config_paths()))


def _device(config: TrainConfig) -> torch.device:
    if config.device == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('train.device: cuda requested but torch sees no CUDA device')
    if config.device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(config.device)


def _schedule(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _dataset(config: TrainConfig, out: Path, progress: bool) -> Path:
    if config.data.dataset:
        path = Path(config.data.dataset)
        if not (path / 'index.json').is_file():
            raise ConfigError(f'train.data.dataset: {path} has no index.json (make one with mmfusion simulate --scenes)')
        return path
    from ..sim.faults import load_faults
    from ..sim.scenario import load_scenario
    from ..sim.simulator import record_dataset

    path = out / 'data'
    scenarios = [load_scenario(name) for name in config.data.scenarios]
    schedules = [load_faults('none', s.rig, config.data.scene_duration_s) for s in scenarios]
    record_dataset(path, config.data.scenes, scenarios, schedules, load_config(config.fusion_config_paths()),
                   seed=config.data.seed, duration_s=config.data.scene_duration_s)
    return path


def train(config: TrainConfig, out: Path, *, steps: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume training) into ``out``; returns the summary."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    total_steps = config.steps if steps is None else int(steps)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    model_config = build_model_config(config)
    fusion = load_config(config.fusion_config_paths())
    files = cache_dataset(_dataset(config, out, progress), out / 'cache', fusion, model_config,
                          config.data.frame_stride, progress)

    torch.manual_seed(config.seed)
    # With several threads some CPU kernels sum in a varying order; the deterministic ones do not.
    # On CUDA, cuBLAS needs a fixed workspace for that, and the ops with no deterministic CUDA
    # kernel (scatter-adds of the BEV pooling) warn instead of stopping: a CUDA run repeats only to
    # rounding, a CPU run bit for bit.
    if device.type == 'cuda':
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    torch.use_deterministic_algorithms(True, warn_only=device.type == 'cuda')
    net = FusionNet(model_config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    step = 0
    checkpoint = out / 'checkpoint.pt'
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if model_config_from_dict(state['model_config']) != model_config:
            raise ConfigError(f'{checkpoint}: was trained with another model configuration; use a new --out')
        net.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        torch.set_rng_state(state['torch_rng'])
        step = int(state['step'])
    elif config.init_weights:
        _start_from(net, config.init_weights_path(), model_config)

    cache = CameraGeometryCache(model_config.grid, model_config.camera)
    stream = sample_stream(files, config.seed, start=step * config.batch_frames)
    sums: dict[str, float] = {}
    count = 0
    started = time.perf_counter()
    seconds_before = _previous_seconds(out)
    net.train()
    bar = tqdm(total=total_steps, initial=step, desc='training', unit='step', disable=not progress)
    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(config.batch_frames):
            n, path = next(stream)
            sample = build_sample(load_frame(path), model_config, cache, np.random.default_rng([config.seed, n]),
                                  config.augment, config.dropout)
            outputs = net(sample.inputs)
            centers = torch.from_numpy(sample.boxes.centers[:, :2]).float().to(device)
            loss, parts = total_loss(net, outputs, sample.targets, centers, sample.depth, config.loss)
            (loss / config.batch_frames).backward()
            for name, value in {'loss': float(loss.detach()), **parts}.items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f'{sums["loss"] / count:.3f}')
        if step % config.checkpoint_every == 0 or step == total_steps:
            seconds = seconds_before + time.perf_counter() - started
            means = {name: round(value / count, 5) for name, value in sums.items()}
            _save_checkpoint(checkpoint, net, optimizer, scheduler, step, model_config)
            save_weights(out / 'weights.pt', net, {'step': step, 'seed': config.seed, 'frames': len(files),
                                                   'train_seconds': round(seconds, 1)})
            with open(out / 'log.jsonl', 'a') as log:
                log.write(json.dumps({'step': step, 'lr': scheduler.get_last_lr()[0], 'seconds': round(seconds, 1),
                                      **means}) + '\n')
            sums, count = {}, 0
    bar.close()
    summary = {
        'out': str(out), 'weights': str(out / 'weights.pt'), 'steps': step, 'frames': len(files),
        'scenes': len({p.parent for p in files}), 'device': str(device), 'model': fusion.model.preset, 'fuser': fusion.model.fuser,
        'train_seconds': round(_previous_seconds(out), 1),
        'last': _last_log(out),
    }
    write_json(out / 'summary.json', summary)
    return summary


def _start_from(net: FusionNet, path: Path, model_config: ModelConfig) -> None:
    """Load ``path``'s parameters into ``net`` (a fine-tuning stage's start)."""
    payload = read_weights(path)
    if model_config_from_dict(payload['model_config']) != model_config:
        raise ConfigError(f'train.init_weights: {path} holds another network than fusion_config trains '
                          '(its preset, fuser or grid differ)')
    net.load_state_dict(payload['state_dict'])


def _save_checkpoint(path: Path, net: FusionNet, optimizer, scheduler, step: int, model_config: ModelConfig) -> None:
    tmp = path.with_name(path.name + '.tmp')
    torch.save({'model': net.state_dict(), 'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                'torch_rng': torch.get_rng_state(), 'step': step,
                'model_config': model_config_to_dict(model_config)}, tmp)
    tmp.replace(path)


def _last_log(out: Path) -> dict[str, Any]:
    path = out / 'log.jsonl'
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def _previous_seconds(out: Path) -> float:
    return float(_last_log(out).get('seconds', 0.0))
