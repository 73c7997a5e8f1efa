#!/usr/bin/env bash
# Creates the virtual environment (argument 1, default .venv) and installs mmfusion_ros into it,
# editable, with the development extra and the pinned versions. Installs the few system libraries
# the wheels need where this runs as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}

# open3d's wheel links libusb-1.0 and libgomp at import time.
missing=()
for pkg in libusb-1.0-0 libgomp1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install these system packages first: ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip_args=(--disable-pip-version-check -q)
# The CPU build of torch: from a local wheel where this machine has one, else from PyTorch's CPU index
# (PyPI's default Linux build of torch carries several GB of CUDA libraries).
if ! ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
  pip_args+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
"$venv/bin/python" -m pip install "${pip_args[@]}" -c requirements/constraints.txt -e '.[dev,eval]'
echo "setup: $venv ready"
