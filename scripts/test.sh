#!/usr/bin/env bash
# Run every test: unit tests and end-to-end tests against a real ComfyUI server (set up first).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k smoke
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "[test] pytest tests (CI=${CI:-})"
rc=0
.venv/bin/python -m pytest tests -q -rfEs --color=no --durations=10 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] error: pytest collected no tests" >&2
elif [ "$rc" -ne 0 ]; then
  echo "[test] pytest failed (exit code $rc)" >&2
fi
exit "$rc"
