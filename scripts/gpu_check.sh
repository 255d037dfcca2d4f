#!/usr/bin/env bash
# The speed issue's GPU figures in one command (< 8 minutes on an H200), one JSON line per figure:
#   bash scripts/gpu_check.sh            # sets up .venv if needed, then runs scripts/gpu_check.py
#   bash scripts/gpu_check.sh --smoke    # the same steps on a tiny CPU model (checks the script only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  SETUP_UI=0 bash scripts/setup.sh >&2
fi
exec .venv/bin/python scripts/gpu_check.py "$@"
