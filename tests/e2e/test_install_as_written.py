"""The README's install and weights instructions, run as written in a fresh ComfyUI folder.

The commands are read from the README's code blocks (so the test breaks when they change), with the two things
a reader fills in: the repository address (here this repository, cloned with git) and ``python`` (the Python
that runs ComfyUI). Then ComfyUI starts on that folder and the first template runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import comfyui_harness as harness

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def code_block(section: str, nth: int = 0) -> list[str]:
    """The command lines of the ``nth`` fenced block in README section ``## section``, comments removed."""
    body = README.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", body, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for line in blocks[nth].splitlines()]
    return [line for line in lines if line]


def as_run_here(line: str) -> str:
    line = line.replace("REPOSITORY_URL", shlex.quote(str(REPO)))
    return re.sub(r"^python ", shlex.quote(sys.executable) + " ", line)


def torch_version() -> str:
    return subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_readme_install_and_weights_steps_work_as_written(tmp_path, session_hub, lumina_model):
    comfy = tmp_path / "ComfyUI"  # the user's ComfyUI folder: its custom_nodes/ and models/
    for sub in ("custom_nodes", "models", "input", "output"):
        (comfy / sub).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=session_hub.url, HF_HOME=str(tmp_path / "hf-home"), PIP_DISABLE_PIP_VERSION_CHECK="1")

    install = code_block("Install")
    assert install[0] == "cd custom_nodes" and any(line.startswith("git clone") for line in install)
    torch_before = torch_version()
    script = " && ".join(as_run_here(line) for line in install)
    done = subprocess.run(["bash", "-c", script], cwd=comfy, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert torch_version() == torch_before  # the requirements never move ComfyUI's torch
    pack = comfy / "custom_nodes" / harness.PACK_NAME
    assert (pack / "__init__.py").is_file()

    # "python -m lumina_tools download ..." from the pack's folder, against the local hub
    tokenizer_release = tmp_path / "hub-tokenizer"
    tokenizer_release.mkdir()
    for name in TOKENIZER_FILES:
        source = lumina_model / name
        (tokenizer_release / name).write_bytes(source.read_bytes() if source.is_file() else b"{}")
    session_hub.add_folder("Alpha-VLLM/Lumina-mGPT-7B-768", tokenizer_release)
    weights = code_block("The official weights: where each file comes from")
    to_run = [line for line in weights if line.endswith(("download --list", "download tokenizer"))]
    assert len(to_run) == 2, weights
    for line in to_run:
        done = subprocess.run(["bash", "-c", as_run_here(line)], cwd=pack, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    fetched = comfy / "models" / "lumina_mgpt" / "Lumina-mGPT-7B-768"
    assert sorted(p.name for p in fetched.iterdir() if p.is_file()) == sorted(TOKENIZER_FILES)

    # restart ComfyUI (here: start it) on that folder; the first template runs on first click
    with harness.ComfyServer(base_dir=comfy, repo=pack, env=env) as server:
        assert not server.import_failures(), server.log_text()[-3000:]
        spec = server.object_info("LuminaMGPTTokenizerLoader")["LuminaMGPTTokenizerLoader"]
        assert "lumina_mgpt/Lumina-mGPT-7B-768" in spec["input"]["required"]["tokenizer"][1]["options"]
        graph = json.loads((pack / "workflows" / "api" / "text_to_image.json").read_text())
        result = server.run(graph, timeout=300)
        assert result.ok, result.error
        assert list((comfy / "output").rglob("*.png"))
