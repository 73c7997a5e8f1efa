"""`mmfusion bench network`: per-frame timings of the configured network on cached frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfusion_ros.cli import main
from mmfusion_ros.config import load_config
from mmfusion_ros.errors import ConfigError
from mmfusion_ros.model.benchmark import bench_network, frame_files
from mmfusion_ros.model.config import model_config
from mmfusion_ros.train.data import cache_dataset


@pytest.fixture(scope='module')
def frames(sim_dataset, tmp_path_factory) -> list[Path]:
    config = load_config()
    return cache_dataset(sim_dataset, tmp_path_factory.mktemp('bench_cache'), config, model_config(config), stride=8,
                         progress=False)


def test_bench_network_times_every_stage_of_every_frame(frames):
    result = bench_network(frames[:2], load_config(), device='cpu', repeats=2, warmup=0)
    assert result['frames'] == 2 and result['repeats'] == 2 and result['device'] == 'cpu'
    assert result['preset'] == 'cpu' and result['weights'].endswith('default.pt')
    for key in ('inputs_ms', 'network_ms', 'decode_ms'):
        assert 0 < result[key]['p50'] <= result[key]['p99']
    assert result['total_ms']['p50'] >= result['network_ms']['p50']


def test_bench_network_command_writes_json_and_refuses_what_is_not_a_frame(frames, tmp_path):
    out = tmp_path / 'bench.json'
    assert main(['bench', 'network', '--frames', str(frames[0].parent), '--device', 'cpu', '--repeats', '1',
                 '--json', str(out)]) == 0
    written = json.loads(out.read_text())
    assert written['frames'] == len(frame_files([frames[0].parent])) and 'network_ms' in written
    with pytest.raises(ConfigError, match='neither a cached frame'):
        frame_files([tmp_path / 'bench.json'])
    with pytest.raises(ConfigError, match='no cached frames'):
        frame_files([tmp_path / 'empty'] if (tmp_path / 'empty').mkdir() is None else [])
    assert main(['bench', 'kernels', '--frames', str(frames[0])]) != 0
