"""Test-wide settings.

The tests run tiny models on a 2-core machine: one intra-op thread is several times faster there than
OpenMP's default (which spins threads that fight each other and any other process on the box).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

torch.set_num_threads(1)


def _load_hub_server():
    """``tests/hub_server.py`` as a module (the tests folder is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "hub_server" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hub_server", Path(__file__).with_name("hub_server.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["hub_server"] = module  # dataclasses need the module registered while it executes
        spec.loader.exec_module(module)
    return sys.modules["hub_server"]


@contextmanager
def _served_hub():
    hub = _load_hub_server().FakeHub()
    server, hub.url = hub.serve()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_hub():
    """A ``FakeHub`` answering on 127.0.0.1 (``hub.url``); empty until a test adds repositories."""
    with _served_hub() as hub:
        yield hub


@pytest.fixture(scope="session")
def session_hub():
    """The ``FakeHub`` the e2e ComfyUI server downloads from (its ``HF_ENDPOINT``)."""
    with _served_hub() as hub:
        yield hub
