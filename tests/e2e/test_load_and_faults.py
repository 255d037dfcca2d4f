"""Load and faults against the real server: 50 queued prompts, 10 interrupts, same seed across restarts.

Memory figures (server RSS) are printed so a run's log records them.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "text_to_image.json"


def t2i(model: str = "lumina-mgpt-world", tokenizer: str | None = None, size: str = "48x48", seed: int | None = None,
        **sampler) -> dict:
    """The shipped text-to-image workflow, small, with PreviewImage instead of SaveImage."""
    g = json.loads(WORKFLOW.read_text())
    g["1"]["inputs"]["model_name"] = model
    g["2"]["inputs"]["tokenizer"] = tokenizer or f"lumina_mgpt/{model}"
    g["3"]["inputs"]["custom_size"] = size
    g["4"]["inputs"].update({"seed": random.randrange(1 << 31) if seed is None else seed, "max_new_tokens": 128,
                             "preview_every_rows": 0, **sampler})
    g["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    return g


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def report(request, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        print(line)  # noqa: T201  the figure for the reader when pytest has no terminal reporter


def test_fifty_queued_prompts_run_in_order_with_one_load_and_flat_memory(comfy_server, request):
    server = comfy_server
    assert server.run(t2i(), timeout=300).ok  # warm: the model is loaded once before the queue
    client = "load-test"
    server.connect(client)
    ids = [server.post_prompt(t2i(seed=random.randrange(1 << 31)), client) for _ in range(50)]
    done: dict[str, float] = {}
    rss_at: list[float] = []
    deadline = time.monotonic() + 900
    while len(done) < len(ids) and time.monotonic() < deadline:
        for pid_ in ids[len(done):]:
            entry = server.history(pid_)
            if not entry:
                break
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:500]
            done[pid_] = time.monotonic()
            rss_at.append(rss_mib(server.proc.pid))
        time.sleep(0.1)
    assert len(done) == 50, f"only {len(done)} of 50 finished"
    starts = []
    for pid_ in ids:
        messages = dict((m[0], m[1]) for m in server.history(pid_)["status"]["messages"])
        starts.append(messages["execution_start"]["timestamp"])
        cached = messages.get("execution_cached", {}).get("nodes", [])
        assert "1" in cached, f"the model loader ran again for {pid_} (cached: {cached})"
    assert starts == sorted(starts), "prompts did not run in the order they were queued"
    growth = rss_at[-1] - rss_at[4]
    report(request, f"load: 50 queued prompts; RSS after #5 {rss_at[4]:.0f} MiB, after #50 {rss_at[-1]:.0f} MiB "
                    f"(growth {growth:+.0f} MiB, max {max(rss_at[4:]):.0f} MiB)")
    assert growth < 64


def test_ten_interrupts_return_memory(comfy_server, demo_model, request):
    server = comfy_server
    graph = t2i(model=demo_model.name, tokenizer=f"lumina_mgpt/{demo_model.name}", size="256x256",
                max_new_tokens=2048, preview_every_rows=0)
    assert server.run(t2i(model=demo_model.name, tokenizer=f"lumina_mgpt/{demo_model.name}", size="48x48"),
                      timeout=300).ok
    before = rss_mib(server.proc.pid)
    for i in range(10):
        g = json.loads(json.dumps(graph))
        g["4"]["inputs"]["seed"] = random.randrange(1 << 31)
        client = f"interrupt-{i}"
        prompt_id = server.post_prompt(g, client)
        ws = server.connect(client)
        for _ in range(5000):
            frame = ws.recv()
            if isinstance(frame, str) and json.loads(frame).get("type") == "progress":
                break
        server.interrupt()
        assert server.wait_for(prompt_id, client, timeout=120).status == "interrupted"
    after = rss_mib(server.proc.pid)
    report(request, f"interrupts: RSS {before:.0f} MiB before 10 interrupts mid-sampling, {after:.0f} MiB after "
                    f"({after - before:+.0f} MiB)")
    assert after - before < 64
    assert server.run(t2i(), timeout=300).ok


def test_same_seed_same_png_bytes_across_restarts(comfy_server, comfy_harness, tmp_path):
    graph = t2i(seed=1234)
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "restart/same"}}

    def png_bytes(server) -> bytes:
        result = server.run(graph, timeout=300)
        assert result.ok, result.error
        (item,) = [img for out in result.executed.values() for img in out.get("images", [])]
        return server.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))

    first = png_bytes(comfy_server)
    second_server = comfy_harness.ComfyServer(comfy_harness.default_comfy_dir(), tmp_path / "second")
    second_server.start()
    try:
        second = png_bytes(second_server)
    finally:
        second_server.stop()
    assert first == second and len(first) > 100


@pytest.fixture(scope="module", autouse=True)
def _input_dir(comfy_server):
    comfy_server.input_dir.mkdir(parents=True, exist_ok=True)
