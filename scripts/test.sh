#!/usr/bin/env bash
# Run every test: unit tests and end-to-end tests against a real ComfyUI server (set up first).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k smoke
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# Lint first (about a second; the rules, security ones included, are in pyproject.toml). The tests run either
# way, so one run reports both, and the script fails if either fails.
echo "[test] ruff check ."
lint_rc=0
.venv/bin/python -m ruff check . --no-cache || lint_rc=$?
if [ "$lint_rc" -ne 0 ]; then
  echo "[test] ruff check failed (exit code $lint_rc)" >&2
fi
# Every test, the slow ones included: nothing here deselects a marker.
echo "[test] pytest tests (CI=${CI:-})"
rc=0
.venv/bin/python -m pytest tests -q -rfEs --color=no --durations=10 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] error: pytest collected no tests" >&2
elif [ "$rc" -ne 0 ]; then
  echo "[test] pytest failed (exit code $rc)" >&2
fi
if [ "$rc" -eq 0 ] && [ "$lint_rc" -ne 0 ]; then
  rc=$lint_rc
fi
exit "$rc"
