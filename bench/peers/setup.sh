#!/usr/bin/env bash
# The peers' bench environment: .venv-bench at the repository root, built on the system
# Python so that Debian's CPU torch (python3-torch) is importable. The peers never go in
# the test extra. Run from anywhere:  bash bench/peers/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
    apt-get install -y python3-torch python3-venv
fi
/usr/bin/python3 -m venv --system-site-packages .venv-bench
# Debian's torch 1.13 is built against NumPy 1.x: keep NumPy below 2 in this venv.
.venv-bench/bin/pip install -q 'numpy>=1.26,<2' -e '.[data]' \
    'squirrel-core' 'tinypl' 'spdl' 'aiostream' 'ray[data]>=2.60,<3' 'datasets>=2.19' \
    'pyarrow>=14,<20' 'pillow>=10' 'py-spy'
.venv-bench/bin/python -c "import torch, snake; print('torch', torch.__version__, 'snake ok')"
