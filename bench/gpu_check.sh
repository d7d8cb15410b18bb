#!/usr/bin/env bash
# The prepared GPU check of issue 25: the anchor, the full ConST-CL step at the paper setting
# (eager and compiled, bf16 + channels_last_3d) and a 200-step `constcl pretrain` with 14
# decoding workers, in one call; prints a table and writes gpu_check.json (bench/gpu_check.py).
#
#   bash bench/gpu_check.sh                 # on a GPU; --out DIR (default $OUT or gpu_check_out)
#   bash bench/gpu_check.sh --smoke         # tiny settings on the CPU (tests/bench)
#
# On a device machine (no .venv there): wheels carried in .whl/ (PyAV, which the synthetic
# world and decoding need) are installed into /tmp/site first; BENCHMARKS.md has the call.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-}
if [ -z "$PY" ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
  PY=python3
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" bench/gpu_check.py "$@"
