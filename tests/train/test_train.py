"""Training: its parameter file, consistent augmentation, dropout, a learning step, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfusion_ros.config import load_config
from mmfusion_ros.errors import ConfigError, ModelError
from mmfusion_ros.geometry.boxes import points_in_boxes
from mmfusion_ros.model.config import cpu_model_config
from mmfusion_ros.model.inputs import CameraGeometryCache
from mmfusion_ros.model.network import HEATMAP_PRIOR_BIAS, FusionNet
from mmfusion_ros.model.weights import load_weights, save_weights
from mmfusion_ros.train.config import DEFAULT_TRAIN_CONFIG, DropoutConfig, load_train_config
from mmfusion_ros.train.data import (
    _augmentation,
    _transform_boxes,
    _transform_cloud,
    build_sample,
    cache_dataset,
    depth_targets,
    load_frame,
)
from mmfusion_ros.train.losses import class_weight_vector, focal_heatmap_loss, regression_loss, total_loss
from mmfusion_ros.train.trainer import build_model_config, train
from simdata import small_scenario

FUSION = load_config()
MODEL = cpu_model_config(FUSION.grid)


@pytest.fixture(scope='module')
def cached(sim_dataset, tmp_path_factory) -> list[Path]:
    return cache_dataset(sim_dataset, tmp_path_factory.mktemp('cache'), FUSION, MODEL, stride=4, progress=False)


def _config(tmp_path: Path, sim_dataset: Path, **train) -> Path:
    import yaml

    body = {'fusion_config': [str(FUSION_PATH)], 'steps': 4, 'batch_frames': 1, 'checkpoint_every': 2,
            'warmup_steps': 1, 'threads': 2, 'data': {'dataset': str(sim_dataset), 'frame_stride': 4}, **train}
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'train': body}}}))
    return path


FUSION_PATH = DEFAULT_TRAIN_CONFIG.parent / 'default.yaml'


def test_the_shipped_training_files_load():
    config = load_train_config()
    assert config.steps > 0 and config.data.scenes >= 20
    assert build_model_config(config) == MODEL
    second = load_train_config(DEFAULT_TRAIN_CONFIG.parent / 'finetune_large.yaml')  # the second stage
    assert build_model_config(second) == MODEL and 'arterial' in second.data.scenarios
    assert second.data.seed + second.data.scenes <= config.data.seed or second.data.seed >= config.data.seed + config.data.scenes


@pytest.mark.parametrize('body, message', [
    ({'stepz': 3}, 'train.stepz: unknown parameter'),
    ({'dropout': {'single_camera': 1.5}}, 'train.dropout.single_camera: must be a probability'),
    ({'dropout': {'all_kept': 0.0, 'one_removed': 0.0, 'alone': 0.0}}, 'weights must be >= 0 and not all 0'),
    ({'augment': {'scale': [1.1, 0.9]}}, 'scale needs 0 < min <= max'),
    ({'fusion_config': []}, 'fusion_config: name at least one parameter file'),
    ({'device': 'tpu'}, 'train.device: expected one of auto, cpu, cuda'),
    ({'loss': {'class_weights': {'bus': 0.0}}}, 'train.loss.class_weights: must be positive'),
])
def test_bad_training_files_name_the_key(tmp_path, body, message):
    import yaml

    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': {'train': body}}}))
    with pytest.raises(ConfigError, match=message.replace('.', r'\.')):
        load_train_config(path)


def test_class_weights_scale_their_class_terms_only():
    config = dataclasses.replace(load_train_config().loss, class_weights={'bus': 3.0})
    classes = MODEL.head.classes
    weights = class_weight_vector(config, classes)
    assert weights.tolist() == [3.0 if c == 'bus' else 1.0 for c in classes]
    assert class_weight_vector(dataclasses.replace(config, class_weights={}), classes) is None
    with pytest.raises(ConfigError, match='lorry'):
        class_weight_vector(dataclasses.replace(config, class_weights={'lorry': 2.0}), classes)

    torch.manual_seed(0)
    K = len(classes)
    logits = torch.randn(K, 8, 8)
    target = torch.zeros(K, 8, 8)
    bus = classes.index('bus')
    target[bus, 4, 4] = 1.0
    plain = focal_heatmap_loss(logits, target)
    weighted = focal_heatmap_loss(logits, target, weights)
    only_bus = focal_heatmap_loss(logits[bus:bus + 1], target[bus:bus + 1])
    # The bus channel's terms count three times; the normaliser (one centre) is the same.
    assert float(weighted - plain) == pytest.approx(2.0 * float(only_bus), rel=1e-5)


def test_regression_loss_covers_the_cells_around_each_centre():
    from mmfusion_ros.model import HeadOutputs, encode_targets
    from mmfusion_ros.model.network import NetOutputs
    from mmfusion_ros.types import Detections3D

    grid, head = MODEL.grid, MODEL.head
    boxes = Detections3D(0, 'base_link', centers=np.array([[5.3, -2.2, 0.4], [-7.0, 9.1, -0.6]]),
                         sizes=np.array([[11.5, 2.9, 3.3], [4.5, 1.9, 1.6]]), yaws=np.array([0.4, -2.0]),
                         velocities=np.array([[6.0, 2.0], [0.0, -1.0]]), labels=('bus', 'car'), scores=np.ones(2))
    targets = encode_targets(boxes, grid, head)
    K, H, W = targets.heatmap.shape
    maps = [torch.zeros(1, n, H, W) for n in (K, 2, 1, 3, 2, 2)]
    flat = torch.cat(maps[1:], dim=1)[0].reshape(10, -1)
    wanted = targets.regression[targets.dense_slot].clone()
    wanted[:, :2] = targets.dense_offset
    flat[:, targets.dense_index] = wanted.t()
    split = list(flat.reshape(10, H, W)[None].split([2, 1, 3, 2, 2], dim=1))
    outputs = lambda parts: NetOutputs(HeadOutputs(maps[0], *parts), {}, {}, torch.ones(3, dtype=torch.bool),  # noqa: E731
                                       torch.ones(3), None)
    assert float(regression_loss(outputs(split), targets, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # One wrong cell at the bus's end (not its centre cell): the loss sees it, by that cell's weight.
    end = int(torch.nonzero(targets.dense_slot == 0).flatten()[-1])
    assert int(targets.dense_index[end]) != int(targets.index[0])
    r, c = divmod(int(targets.dense_index[end]), W)
    split[0] = split[0].clone()
    split[0][0, 0, r, c] += 2.0
    loss = float(regression_loss(outputs(split), targets, 1.0))
    assert loss == pytest.approx(2.0 * float(targets.dense_weight[end]) / 2, rel=1e-5)  # mean over 2 boxes


def test_augmentation_moves_points_boxes_and_cameras_together(cached):
    arrays = load_frame(cached[-1])
    points = arrays['lidar'][arrays['lidar'][:, -1] == 0]
    boxes = np.hstack([arrays['box_centers'], arrays['box_sizes'], arrays['box_yaws'][:, None]])
    before = points_in_boxes(points[:, :3], boxes)[1]
    assert before.sum() > 20
    rng = np.random.default_rng(5)
    config = load_train_config().augment
    config = dataclasses.replace(config, flip_x=1.0, flip_y=0.0, rotation_deg=40.0)
    for _ in range(3):
        A = _augmentation(rng, config)
        assert np.linalg.det(A[:3, :3]) < 0  # mirrored
        moved = _transform_cloud(points, A, None)
        truth = _transform_boxes(arrays, A, MODEL.head.classes)
        after = points_in_boxes(moved[:, :3], np.hstack([truth.centers, truth.sizes, truth.yaws[:, None]]))[1]
        np.testing.assert_array_equal(after, before)
        # The cameras move with the scene: every lidar point projects to the same pixel and depth.
        K, T = arrays['camera_K'], arrays['camera_T']
        size = (arrays['images'].shape[2], arrays['images'].shape[1])
        # (up to float32 rounding of the moved points: a depth on a bin edge may fall one bin over).
        seen = depth_targets(moved[:, :3].astype(np.float64), K, A @ T, size, MODEL)
        expected = depth_targets(points[:, :3].astype(np.float64), K, T, size, MODEL)
        assert (seen >= 0).sum() > 100 and np.array_equal(seen >= 0, expected >= 0)
        assert np.abs(seen - expected).max() <= 1 and (seen != expected).mean() < 0.005


def test_depth_targets_hold_the_nearest_lidar_depth(cached):
    arrays = load_frame(cached[-1])
    points = arrays['lidar'][arrays['lidar'][:, -1] == 0, :3].astype(np.float64)
    size = (arrays['images'].shape[2], arrays['images'].shape[1])
    target = depth_targets(points, arrays['camera_K'], arrays['camera_T'], size, MODEL)
    Wf, Hf = MODEL.camera.feature_size
    assert target.shape == (len(arrays['camera_K']), Hf, Wf)
    assert (target >= 0).mean() > 0.2 and target.max() < MODEL.camera.num_depth_bins
    # A point straight ahead of the front camera at 10 m lands in bin 9 (bins start at 1 m, 1 m apart).
    K, T = arrays['camera_K'][:1], arrays['camera_T'][:1]
    ahead = (T[0] @ np.array([0.0, 0.0, 10.0, 1.0]))[:3]
    one = depth_targets(ahead[None], K, T, size, MODEL)
    assert sorted(np.unique(one)) == [-1, 9]


def test_modality_dropout_draws_subsets_and_never_drops_everything(cached):
    arrays = load_frame(cached[-1])
    cache = CameraGeometryCache(MODEL.grid, MODEL.camera)
    alone = DropoutConfig(all_kept=0.0, one_removed=0.0, alone=1.0, single_camera=0.0, degraded=0.0)
    seen = set()
    for seed in range(8):
        sample = build_sample(arrays, MODEL, cache, np.random.default_rng(seed), None, alone)
        assert int(sample.inputs.present.sum()) == 1
        seen.add(tuple(sample.inputs.present.tolist()))
    assert len(seen) > 1
    removed = DropoutConfig(all_kept=0.0, one_removed=1.0, alone=0.0, single_camera=0.0, degraded=0.0)
    assert {int(build_sample(arrays, MODEL, cache, np.random.default_rng(seed), None, removed).inputs.present.sum())
            for seed in range(4)} == {2}
    some_cameras = DropoutConfig(all_kept=1.0, one_removed=0.0, alone=0.0, single_camera=0.5, degraded=0.0)
    counts = {build_sample(arrays, MODEL, cache, np.random.default_rng(seed), None,
                           some_cameras).inputs.camera.images.shape[0] for seed in range(8)}
    assert len(counts) > 1 and max(counts) <= 6


def test_a_training_step_lowers_the_loss_on_a_fixed_frame(cached):
    torch.manual_seed(0)
    arrays = load_frame(cached[-1])
    cache = CameraGeometryCache(MODEL.grid, MODEL.camera)
    sample = build_sample(arrays, MODEL, cache, np.random.default_rng(0), None, None)
    assert sample.targets.mask.sum() > 3 and sample.depth is not None
    net = FusionNet(MODEL).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    weights = load_train_config().loss
    centers = torch.from_numpy(sample.boxes.centers[:, :2]).float()
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss, parts = total_loss(net, net(sample.inputs), sample.targets, centers, sample.depth, weights)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert set(parts) == {'heatmap', 'regression', 'auxiliary', 'consistency', 'depth'}
    assert losses[-1] < 0.8 * losses[0], losses


def test_weights_round_trip_and_refuse_what_does_not_fit(tmp_path):
    net = FusionNet(MODEL).eval()
    path = tmp_path / 'w.pt'
    save_weights(path, net, {'step': 3})
    loaded = load_weights(path, FUSION.grid)
    assert loaded.config == MODEL and not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    other = dataclasses.replace(FUSION.grid, cell_size=0.4)
    with pytest.raises(ModelError, match='trained for the grid'):
        load_weights(path, other)
    (tmp_path / 'bad.pt').write_bytes(b'not a torch file')
    with pytest.raises(ModelError, match='not a readable weights file'):
        load_weights(tmp_path / 'bad.pt')
    with pytest.raises(ModelError, match='no such weights file'):
        load_weights(tmp_path / 'absent.pt')


def test_resumed_training_equals_uninterrupted_training(tmp_path, sim_dataset):
    config = load_train_config(_config(tmp_path, sim_dataset))
    straight = train(config, tmp_path / 'straight', progress=False)
    train(config, tmp_path / 'resumed', steps=2, progress=False)
    resumed = train(config, tmp_path / 'resumed', progress=False)
    assert straight['steps'] == resumed['steps'] == 4
    a = torch.load(tmp_path / 'straight' / 'weights.pt', weights_only=True)['state_dict']
    b = torch.load(tmp_path / 'resumed' / 'weights.pt', weights_only=True)['state_dict']
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (tmp_path / 'resumed' / 'log.jsonl').read_text().splitlines()]
    assert [entry['step'] for entry in log] == [2, 4] and all(np.isfinite(entry['loss']) for entry in log)


def test_a_fine_tuning_stage_starts_from_its_init_weights(tmp_path, sim_dataset):
    start = FusionNet(MODEL)
    torch.nn.init.constant_(start.head.heatmap[1].bias, -1.5)  # unlike a fresh network's prior
    save_weights(tmp_path / 'start.pt', start)
    fresh = load_train_config(_config(tmp_path, sim_dataset, steps=1))
    tuned = dataclasses.replace(fresh, init_weights='start.pt', source=str(tmp_path / 'train.yaml'))
    assert tuned.init_weights_path() == tmp_path / 'start.pt'  # relative to the parameter file
    train(fresh, tmp_path / 'fresh', progress=False)
    train(tuned, tmp_path / 'tuned', progress=False)
    bias = {run: torch.load(tmp_path / run / 'weights.pt', weights_only=True)['state_dict']['head.heatmap.1.bias']
            for run in ('fresh', 'tuned')}
    # One step at a learning rate of 2e-3 moves a bias by about that much: each run kept its start.
    assert torch.allclose(bias['tuned'], torch.full_like(bias['tuned'], -1.5), atol=0.05)
    assert torch.allclose(bias['fresh'], torch.full_like(bias['fresh'], HEATMAP_PRIOR_BIAS), atol=0.05)
    # Resuming a stage continues its own checkpoint, not its start again: 1 + 1 steps = 2 steps straight.
    train(dataclasses.replace(tuned, steps=2), tmp_path / 'tuned', progress=False)
    train(dataclasses.replace(tuned, steps=2), tmp_path / 'straight', progress=False)
    a, b = (torch.load(tmp_path / run / 'weights.pt', weights_only=True)['state_dict'] for run in ('tuned', 'straight'))
    assert all(torch.equal(a[key], b[key]) for key in a)

    other = FusionNet(cpu_model_config(dataclasses.replace(FUSION.grid, cell_size=0.4)))
    save_weights(tmp_path / 'other.pt', other)
    with pytest.raises(ConfigError, match='init_weights: .*other.pt holds another network'):
        train(dataclasses.replace(tuned, init_weights=str(tmp_path / 'other.pt')), tmp_path / 'mismatch', progress=False)
    with pytest.raises(ModelError, match='no such weights file'):
        train(dataclasses.replace(tuned, init_weights='absent.pt'), tmp_path / 'absent', progress=False)


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'mmfusion_ros.cli', *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_train_and_eval_commands(tmp_path, sim_dataset):
    config = _config(tmp_path, sim_dataset, steps=1)
    proc = run_cli('train', '--config', config, '--out', tmp_path / 'run', '--json', tmp_path / 'train.json')
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / 'train.json').read_text())
    assert summary['steps'] == 1 and Path(summary['weights']).is_file()

    proc = run_cli('eval', sim_dataset / 'scene_00000', '--weights', summary['weights'], '--every', '5',
                   '--json', tmp_path / 'eval.json')
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / 'eval.json').read_text())
    assert {'mAP', 'NDS', 'per_class', 'by_modality'} <= set(result)
    assert set(result['by_modality']) == {'fused', 'camera_only', 'lidar_only', 'radar_only', 'without_camera',
                                          'without_lidar', 'without_radar'}
    assert result['frames'] == 4 and set(result['per_class']) == set(MODEL.head.classes)

    for args, message in [(('eval', tmp_path / 'absent'), 'no such recording'),
                          (('eval', sim_dataset, '--weights', config), 'not a readable weights file'),
                          (('train', '--config', tmp_path / 'absent.yaml', '--out', tmp_path / 'x'), 'cannot read')]:
        proc = run_cli(*args, '--json', tmp_path / 'never.json')
        assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
        assert not (tmp_path / 'never.json').exists()


def test_training_renders_its_own_scenes_when_no_dataset_is_given(tmp_path):
    scenario = small_scenario(tmp_path)
    config = load_train_config(_config(tmp_path, tmp_path, steps=1))
    data = dataclasses.replace(config.data, dataset='', scenes=1, scene_duration_s=0.5, scenarios=(str(scenario),),
                               frame_stride=3)
    summary = train(dataclasses.replace(config, data=data), tmp_path / 'run', progress=False)
    index = json.loads((tmp_path / 'run' / 'data' / 'index.json').read_text())
    assert [scene['bag'] for scene in index['scenes']] == ['scene_00000'] and index['scenes'][0]['seed'] == 1000
    assert summary['scenes'] == 1 and summary['frames'] == 4 and summary['steps'] == 1
