"""End-to-end fixtures: one real ComfyUI 0.3.75 server per test session, with this repo as a custom node pack.

ComfyUI is installed by ``scripts/setup.sh`` into ``.comfyui/`` (or set ``COMFYUI_DIR``). Without it the e2e
tests are skipped locally, but with ``CI=true`` a missing ComfyUI, and any skipped e2e test, is a failure.

Tests write tiny models into ``comfy_server.models_dir / "lumina_mgpt" / NAME`` before submitting prompts
(ComfyUI rescans model folders per request). Vary a seed per test: an identical graph is served from cache.
``import comfyui_harness`` works in test modules (this conftest registers it) for ``ComfyHTTPError`` etc.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS_PATH = REPO_ROOT / "scripts" / "comfyui_harness.py"


def _load_harness():
    if "comfyui_harness" in sys.modules:
        return sys.modules["comfyui_harness"]
    spec = importlib.util.spec_from_file_location("comfyui_harness", HARNESS_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_harness"] = module  # dataclasses need the module registered while it executes
    spec.loader.exec_module(module)
    return module


harness = _load_harness()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def comfy_harness():
    """The ``scripts/comfyui_harness.py`` module."""
    return harness


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, session_hub):
    """A started ``ComfyServer`` (``.url``, ``.models_dir``, ``.post_prompt``, ``.wait_for``, ``.run``...)."""
    comfy_dir = harness.default_comfy_dir()
    if not harness.comfy_installed(comfy_dir):
        reason = (f"ComfyUI is not installed at {comfy_dir}; run `bash scripts/setup.sh` "
                  "(or set COMFYUI_DIR to a ComfyUI checkout)")
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("comfyui")  # kept by pytest after the run: base/comfyui.log
    # Downloads on first use reach only the local fake hub, never the internet.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=session_hub.url, HF_HOME=str(base / "hf-home"))
    server = harness.ComfyServer(comfy_dir, base, env=env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true an e2e test may not skip; a failing e2e test gets the server log tail in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"e2e tests must not skip when CI=true; skip reason: {reason}"
    if report.failed:
        server = item.funcargs.get("comfy_server") if hasattr(item, "funcargs") else None
        if server is not None:
            report.sections.append(("ComfyUI log (tail)", server.log_tail(80)))


MODEL_NAME = "lumina-mgpt-world"  # the model every shipped workflow names
BUNDLED_MODEL = REPO_ROOT / "models" / "lumina_mgpt" / MODEL_NAME


@pytest.fixture(scope="session")
def lumina_model(comfy_server):
    """Folder of the workflows' model as the server sees it: the bundled trained model when the repo has it
    (the pack registers its own models/ folder), else a small random demo model written under that name."""
    if (BUNDLED_MODEL / "config.json").is_file():
        return BUNDLED_MODEL
    folder = comfy_server.models_dir / "lumina_mgpt" / MODEL_NAME
    if not (folder / "config.json").is_file():
        from lumina_tools.demo_model import write_demo_model

        write_demo_model(folder)
    return folder


DEMO_NAME = "lumina-mgpt-demo"  # a random model with a 16-px patch and room for large sizes


@pytest.fixture(scope="session")
def demo_model(comfy_server):
    """A small random demo model in the server's model folder, for tests of engine behaviour that need
    sizes or lengths the bundled world model was not made for (long generations to cancel, 64x64)."""
    folder = comfy_server.models_dir / "lumina_mgpt" / DEMO_NAME
    if not (folder / "config.json").is_file():
        from lumina_tools.demo_model import write_demo_model

        write_demo_model(folder)
    return folder


class SafeCases:
    """Counts the hostile cases of the safe-writes and widget-check tests: ``with safe_cases.case(name):``
    around one attempt and its assertions; a case holds when its block ends without an exception."""

    def __init__(self) -> None:
        self.tried: list[str] = []
        self.held: list[str] = []

    def case(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def counted():
            self.tried.append(name)
            yield
            self.held.append(name)

        return counted()


SAFE_CASES = SafeCases()


@pytest.fixture(scope="session")
def safe_cases() -> SafeCases:
    return SAFE_CASES


def pytest_terminal_summary(terminalreporter):
    if SAFE_CASES.tried:
        terminalreporter.write_line(f"safe-writes: {len(SAFE_CASES.tried)} cases tried, "
                                    f"{len(SAFE_CASES.held)} held")
