"""``mmfusion bench kernels``: each Numba kernel against the fastest plain vectorised baseline.

For every kernel, on realistic inputs and in the same process run:

- ``numba_ms``: the kernel's steady-state time (median of repeats, after a warm-up call);
- ``baseline_ms``: the fastest straightforward vectorised numpy or torch implementation of the
  same operation (not the loop-style reference the tests compare against);
- ``speedup`` = baseline / numba;
- ``bytes``: what the operation must at least read and write, and ``bandwidth_fraction`` = the
  bandwidth the kernel achieved over the machine's copy bandwidth measured in the same run;
- ``compile_s``: the one-off compile cost, measured in a child process with an empty numba cache
  (its first call minus the steady time), and ``recompiled_in_new_process``: whether a second child
  process, given the cache the first one wrote, still had to compile (with ``cache=True`` it must
  not);
- ``cuda_ms`` where a CUDA device is present (``--device cuda``), kernel time including transfers.

A kernel meets its target with ``speedup >= 5``, or, when it is purely memory-bound, with
``bandwidth_fraction >= 0.5``. Nothing here is asserted: the figures are written to JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ['KernelCase', 'copy_bandwidth', 'run_benchmark', 'time_call']

SPEEDUP_TARGET = 5.0
BANDWIDTH_TARGET = 0.5


@dataclass(frozen=True)
class KernelCase:
    """One kernel at one realistic size: how to build inputs and how to call each implementation."""

    kernel: str  # name in the JSON
    size: str  # the input size, in words
    build: Callable[[np.random.Generator], tuple]  # -> arguments shared by every implementation
    numba: Callable[..., Any]
    baseline: Callable[..., Any]
    baseline_name: str  # what the baseline is (e.g. 'torch index_add_')
    bytes_moved: Callable[[tuple], int]  # minimum bytes read + written for these arguments
    memory_bound: bool = False  # judged by bandwidth_fraction rather than speedup
    cuda: Callable[..., Any] | None = None
    dispatchers: Callable[[], Sequence[Any]] = tuple  # numba dispatchers, for the recompile check


def time_call(function: Callable[..., Any], args: tuple, repeats: int) -> float:
    """Median wall time of ``function(*args)`` in ms over ``repeats`` calls (after none: warm up first)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large array copy (read + write counted), best of ``repeats``."""
    src = np.ones(megabytes * (1 << 20) // 8, np.float64)
    dst = np.empty_like(src)
    best = min(_seconds(lambda: np.copyto(dst, src)) for _ in range(repeats))
    return 2 * src.nbytes / best


def _seconds(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_benchmark(cases: Sequence[KernelCase], *, device: str = 'cpu', repeats: int = 7, seed: int = 0,
                  check_cache: bool = True, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time every case; returns one JSON-ready object per kernel."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bandwidth = copy_bandwidth()
    results = []
    for case in cases:
        if progress is not None:
            progress(case.kernel)
        args = case.build(np.random.default_rng(seed))
        case.numba(*args)  # warm up: compile or load from the cache
        numba_ms = time_call(case.numba, args, repeats)
        case.baseline(*args)  # warm up (torch allocator, numpy caches)
        baseline_ms = time_call(case.baseline, args, repeats)
        moved = case.bytes_moved(args)
        fraction = moved / (numba_ms / 1e3) / bandwidth
        speedup = baseline_ms / numba_ms
        result = {
            'kernel': case.kernel,
            'size': case.size,
            'numba_ms': round(numba_ms, 4),
            'baseline_ms': round(baseline_ms, 4),
            'baseline': case.baseline_name,
            'speedup': round(speedup, 3),
            'bytes': int(moved),
            'bandwidth_fraction': round(fraction, 4),
            'memory_bound': case.memory_bound,
            'target_met': bool(speedup >= SPEEDUP_TARGET or (case.memory_bound and fraction >= BANDWIDTH_TARGET)),
        }
        if device == 'cuda' and case.cuda is not None:
            case.cuda(*args)
            result['cuda_ms'] = round(time_call(case.cuda, args, repeats), 4)
        results.append(result)
    if check_cache:
        cold, failure = _cache_check([c.kernel for c in cases])
        for result in results:
            first = cold.get(result['kernel'])
            if failure:
                result['cache_check_error'] = failure
            if first is not None:
                result['compile_s'] = round(max(0.0, first['compile_first_s'] - result['numba_ms'] / 1e3), 3)
                result['recompiled_in_new_process'] = first['misses_second'] > 0
    for result in results:
        result['copy_bandwidth_gbs'] = round(bandwidth / 1e9, 2)
    return results


def _cache_check(kernels: Sequence[str]) -> tuple[dict[str, dict[str, float]], str]:
    """Two child processes sharing an empty numba cache folder: the first compiles and fills it
    (its first-call times give the compile cost), the second must find everything there. Returns the
    figures per kernel, and why there are none when a child failed (its last line of stderr)."""
    import tempfile

    code = ('import json, sys\n'
            'from mmfusion_ros.geometry.benchmark_cases import first_calls\n'
            'print(json.dumps(first_calls(sys.argv[1:])))\n')
    with tempfile.TemporaryDirectory(prefix='mmfusion-numba-cache-') as cache:
        env = {**os.environ, 'NUMBA_CACHE_DIR': cache}
        runs = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, '-c', code, *kernels], capture_output=True, text=True,
                                  check=False, timeout=900, env=env)
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                return {}, f'cache check child exited {proc.returncode}: {lines[-1] if lines else "no output"}'
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = runs
    return {kernel: {'compile_first_s': first[kernel]['first_call_s'],
                     'misses_second': second[kernel]['cache_misses']} for kernel in first}, ''
