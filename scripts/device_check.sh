#!/usr/bin/env bash
# The GPU checks, as one run on a machine with an NVIDIA GPU (its own Python with numba-cuda, torch).
#   scripts/device_check.sh [DATA]
# DATA (default .devcarry) may hold: whl/ (wheels of what the GPU image lacks: rosbags and its needs),
# train/cache/ + dataset/ (a few cached training frames, for the network benchmark and a CUDA
# training run) and bag/ (a short recording, for a replay with the network on CUDA).
# Steps, each bounded on its own so one hang does not cost the others:
#   1. the CUDA kernel tests on the real device;  2. the kernel benchmark with CUDA timings;
#   3. the network per frame: CPU preset on CUDA, GPU preset on CUDA, CPU preset on the host's CPU;
#   4. 40 training steps on CUDA;  5. a replay with the network on CUDA.
# Results land in $OUT (or out/device): env.txt, cuda_tests.log, bench_kernels_cuda.json,
# bench_network_*.json, train_cuda.json, replay_cuda.json, log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-.devcarry}
out=${OUT:-out/device}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
export PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1
if compgen -G "$data/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$data"/whl/*.whl \
    || echo "wheels did not install"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Some GPU images pair numba-cuda with a numpy that no longer has np.row_stack, which numba-cuda's
# compiler still calls; alias it for this run only (our pinned numpy 1.26 has it).
shim=$(mktemp -d)
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > "$shim/sitecustomize.py"
export PYTHONPATH=$shim:$PYTHONPATH
mm="python3 -m mmfusion_ros.cli"
step() { local name=$1 limit=$2; shift 2; echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@"; echo "=== $name: exit $? in $((SECONDS - t0)) s"; }

{
  nvidia-smi -L
  nproc
  python3 -c 'import sys, numpy, numba, torch; from numba import cuda; print(sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__, "torch", torch.__version__, "numba cuda", cuda.is_available(), "torch cuda", torch.cuda.is_available()); print(cuda.get_current_device().name)'
} 2>&1 | tee "$out/env.txt"

step cuda-tests 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/geometry/cuda 2>&1 \
  | tee "$out/cuda_tests.log"
step bench-kernels 100 $mm bench kernels --device cuda --repeats 5 --json "$out/bench_kernels_cuda.json" 2>&1 | grep -v '%|'

printf '/**:\n  ros__parameters:\n    model:\n      device: cuda\n' > /tmp/cuda.yaml
if [ -d "$data/train/cache" ]; then
  step bench-network-cpu-preset-cuda 60 $mm bench network --config config/default.yaml --config /tmp/cuda.yaml \
    --frames "$data/train/cache" --repeats 5 --json "$out/bench_network_cpu_preset_cuda.json"
  step bench-network-gpu-preset-cuda 90 $mm bench network --config config/default.yaml --config config/gpu.yaml \
    --frames "$data/train/cache" --repeats 5 --json "$out/bench_network_gpu_preset_cuda.json"
  step bench-network-cpu-preset-host 60 $mm bench network --frames "$data/train/cache" --device cpu --repeats 3 \
    --json "$out/bench_network_cpu_preset_host.json"
  sed -e 's/^      steps: .*/      steps: 40/' -e 's/^      checkpoint_every: .*/      checkpoint_every: 20/' \
    -e 's/^      device: .*/      device: cuda/' -e "s#^      fusion_config: .*#      fusion_config: [$PWD/config/default.yaml]#" \
    -e "s#^        frame_stride: .*#        frame_stride: 2\n        dataset: $PWD/$data/dataset#" config/train.yaml > /tmp/train_cuda.yaml
  step train-cuda 120 $mm train --config /tmp/train_cuda.yaml --out "$data/train" --json "$out/train_cuda.json" 2>&1 \
    | grep -v '%|'
  tail -3 "$data/train/log.jsonl" 2>/dev/null
fi
if [ -d "$data/bag" ]; then
  step replay-cuda 120 $mm replay "$data/bag" --config config/default.yaml --config /tmp/cuda.yaml --no-video \
    --json "$out/replay_cuda.json" 2>&1 | grep -v '%|'
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
