#!/usr/bin/env bash
# The GPU checks, as one run on a machine with an NVIDIA GPU (its own Python with numba-cuda, torch).
# Runs the CUDA kernel tests on the real device, then the kernel benchmark with CUDA timings.
# Results land in $OUT (or out/device): cuda_tests.log, bench_kernels_cuda.json, env.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/device}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Some GPU images pair numba-cuda with a numpy that no longer has np.row_stack, which numba-cuda's
# compiler still calls; alias it for this run only (our pinned numpy 1.26 has it).
shim=$(mktemp -d)
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > "$shim/sitecustomize.py"
export PYTHONPATH=$shim:$PYTHONPATH
{
  nvidia-smi -L
  python3 -c 'import sys, numpy, numba; from numba import cuda; print(sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__, "cuda", cuda.is_available()); print(cuda.get_current_device().name)'
} 2>&1 | tee "$out/env.txt"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/geometry/cuda 2>&1 | tee "$out/cuda_tests.log"
python3 -m mmfusion_ros.cli bench kernels --device cuda --repeats 5 --json "$out/bench_kernels_cuda.json" 2>&1 \
  | grep -v '%|' | tee "$out/bench.log"
