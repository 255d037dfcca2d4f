#!/usr/bin/env bash
# Idempotent environment setup for a fresh machine (safe to rerun; fast when nothing changed):
#   .venv/ (python3.11, else python3) + torch/torchvision if missing + requirements*.txt
#   + ComfyUI 0.3.75 in .comfyui/ComfyUI (skipped when COMFYUI_DIR points at your own ComfyUI).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
say() { printf '[setup] %s\n' "$*"; }
t0=$SECONDS

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
  BASE_PY="$(command -v python3.11 || command -v python3 || true)"
  if [ -z "$BASE_PY" ]; then
    say "error: neither python3.11 nor python3 is on PATH"; exit 1
  fi
  if ! "$BASE_PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "error: $BASE_PY is $("$BASE_PY" -V 2>&1); Python >= 3.10 is needed (3.11 preferred)"; exit 1
  fi
  say "creating .venv with $("$BASE_PY" -V 2>&1)"
  "$BASE_PY" -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# torch is never upgraded here: ComfyUI owns it. Install the build for your hardware first to keep it.
if torch_version="$("$PY" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)' 2>/dev/null)"; then
  say "torch/torchvision $torch_version already installed"
else
  say "installing torch==2.14.1 torchvision==0.29.1 (a matching pair ComfyUI can import; takes minutes)"
  "${PIP[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
fi

STAMP="$VENV/.requirements.sha256"
want="$("$PY" - <<'PYEOF'
import hashlib, sys
h = hashlib.sha256(sys.version.encode())
for name in ("requirements.txt", "requirements-dev.txt"):
    h.update(name.encode() + b"\0" + open(name, "rb").read() + b"\0")
print(h.hexdigest())
PYEOF
)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  say "requirements unchanged since the last install, skipping pip"
else
  say "installing requirements.txt + requirements-dev.txt"
  "${PIP[@]}" install -q -r requirements.txt -r requirements-dev.txt
  printf '%s\n' "$want" > "$STAMP"
fi

if [ -n "${COMFYUI_DIR:-}" ]; then
  if [ ! -f "$COMFYUI_DIR/main.py" ]; then
    say "error: COMFYUI_DIR=$COMFYUI_DIR has no main.py"; exit 1
  fi
  say "using your ComfyUI at $COMFYUI_DIR (COMFYUI_DIR)"
else
  say "ComfyUI: $("$PY" scripts/comfyui_harness.py install --dest "$ROOT/.comfyui")"
fi
# Driver of the editor tests (tests/e2e/test_ui.py): Chromium + playwright-core (no browser download).
# Set SETUP_UI=0 to skip; without them those tests skip (and fail under CI=true).
if [ "${SETUP_UI:-1}" != "0" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      say "installing chromium (apt-get, about a minute)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || say "warning: apt-get could not install chromium; the editor tests will not run"
    else
      say "warning: no chromium on PATH (install it as root: apt-get install chromium); editor tests will not run"
    fi
  fi
  if [ ! -d .cache/ui-driver/node_modules/playwright-core ]; then
    if command -v npm >/dev/null 2>&1; then
      say "installing playwright-core into .cache/ui-driver (npm)"
      npm install --prefix .cache/ui-driver --no-audit --no-fund --silent "playwright-core@1.65.1" >/dev/null \
        || say "warning: npm could not install playwright-core; the editor tests will not run"
    else
      say "warning: no npm on PATH; the editor tests will not run"
    fi
  fi
fi
say "ready in $((SECONDS - t0)) s"
