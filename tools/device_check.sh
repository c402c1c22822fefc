#!/usr/bin/env bash
# Every open GPU measurement of docs/benchmarks.md in one call, collected in one JSON file
# (logic in tools/device_check.py):
#   bash tools/device_check.sh --device cuda --out "$OUT/device_check.json"       # one H200, < 8 min
#   bash tools/device_check.sh --device cpu --tiny --out /tmp/device_check.json   # tiny sizes on the CPU
# Uses .venv/bin/python when it has torch, else $PYTHON or python3 (the GPU machine's), with the
# repository and third_party/ on PYTHONPATH so arc and ptv3 import without an install.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    py=.venv/bin/python
else
    py=${PYTHON:-python3}
fi
export PYTHONPATH="$PWD:$PWD/third_party${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$py" tools/device_check.py run "$@"
