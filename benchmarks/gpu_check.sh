#!/usr/bin/env bash
# DiffXGenerator's full preset on one GPU, in under 8 minutes: see benchmarks/gpu_check.py.
#
#   make gpu-wheels                       # on the CPU machine: wheels the GPU machine lacks
#   bash benchmarks/gpu_check.sh          # on the GPU machine (carry benchmarks/.wheels)
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/g.json   # CPU, tiny preset
#
# The GPU machine must provide a CUDA build of torch (too large to carry). Everything
# else fracsurv needs for this check is installed, without network access, from the
# wheels in benchmarks/.wheels into a virtual environment that sees the system's
# packages (so the machine's torch, numpy and scipy are used).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
if [[ " $* " != *" --dry-run "* ]]; then
  if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: $py has no CUDA-enabled torch; install one, or run with --dry-run" >&2
    exit 2
  fi
  if ! "$py" -c "import fracsurv" 2>/dev/null; then
    [[ -d "$here/.wheels" ]] || { echo "gpu_check: benchmarks/.wheels missing (make gpu-wheels)" >&2; exit 2; }
    env_dir="${GPU_CHECK_VENV:-/tmp/fracsurv-gpu-venv}"
    "$py" -m venv --system-site-packages "$env_dir"
    "$env_dir/bin/pip" install -q --no-index --no-deps "$here"/.wheels/*.whl
    py="$env_dir/bin/python"
  fi
fi
cd "$here"
exec timeout 470 "$py" -u gpu_check.py "$@"
