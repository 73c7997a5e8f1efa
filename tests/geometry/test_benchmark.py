"""``mmfusion bench kernels``: the figures it must write, on the cheapest kernels."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmfusion_ros.errors import ConfigError
from mmfusion_ros.geometry.benchmark_cases import kernel_cases


def test_bench_writes_one_object_per_kernel_with_the_agreed_keys(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run([sys.executable, '-m', 'mmfusion_ros.cli', 'bench', 'kernels', '--kernels',
                           'nms_rotated', 'rotated_iou_bev', '--repeats', '3', '--json', str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert [r['kernel'] for r in results] == ['nms_rotated', 'rotated_iou_bev']
    for r in results:
        assert 'cache_check_error' not in r, r['cache_check_error']
        assert {'kernel', 'numba_ms', 'baseline_ms', 'speedup', 'bandwidth_fraction', 'bytes', 'compile_s',
                'recompiled_in_new_process', 'copy_bandwidth_gbs', 'target_met'} <= set(r)
        assert r['numba_ms'] > 0 and r['baseline_ms'] > 0
        assert r['speedup'] == pytest.approx(r['baseline_ms'] / r['numba_ms'], rel=1e-2)
        assert 0 < r['bandwidth_fraction'] and r['copy_bandwidth_gbs'] > 0
        assert r['recompiled_in_new_process'] is False  # cache=True: the second process loads, not compiles
        assert r['compile_s'] >= 0


def test_every_kernel_of_the_issue_is_benchmarked():
    names = {case.kernel for case in kernel_cases()}
    assert names == {'project_points', 'depth_images', 'pillarize', 'scatter_max', 'scatter_to_bev', 'bev_pool',
                     'points_in_boxes', 'rotated_iou_bev', 'nms_rotated', 'compensate_ego_motion'}


def test_unknown_kernel_is_refused():
    with pytest.raises(ConfigError, match=r"--kernels: unknown kernel 'fft'"):
        kernel_cases(['fft'])
