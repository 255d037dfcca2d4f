"""The prepared GPU script runs every figure end to end (on a tiny CPU model with --smoke)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_smoke_prints_every_figure():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--smoke",
                           "--baseline-steps", "4"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    figures = {line["figure"]: line for line in lines}
    assert set(figures) == {"sample_plain", "sample_sjd", "sample_int8", "sample_batch4", "train_bf16"}
    for name, fig in figures.items():
        assert "error" not in fig, (name, fig)
    assert figures["sample_plain"]["speedup_vs_baseline"] > 0
    assert figures["sample_batch4"]["batch"] == 4 and figures["sample_int8"]["quant"] == "int8"
    assert figures["train_bf16"]["steps"] == 2
