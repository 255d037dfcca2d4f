#!/usr/bin/env bash
# The main job: set up, start a headless ComfyUI with this pack, run workflows/api/text_to_image.json through
# its HTTP API (python -m lumina_tools run-workflow) and print the PNG path. The server is always stopped
# by its PID (scripts/main_job.py owns it; Ctrl-C / SIGTERM stop it too). Extra args go to main_job.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/main_job.py "$@"
