"""The README's main job: start a headless ComfyUI with this pack, put a model in its model folder, run the
text-to-image workflow through the HTTP API with the pack's own client, print the PNG path, stop the server.

    bash scripts/run_main.sh            # = bash scripts/setup.sh && .venv/bin/python scripts/main_job.py

Options: --workflow FILE, --out DIR (default out/), --base DIR (server base dir, default runs/main-job/),
--set NODE.INPUT=VALUE (passed to run-workflow), --timeout S.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfyui_harness as harness  # noqa: E402

REPO = harness.REPO_ROOT
sys.path.insert(1, str(REPO))  # the engine package, for the analyser that checks the picture
DEFAULT_WORKFLOW = REPO / "workflows" / "api" / "text_to_image.json"
MODEL_FOLDER = "lumina_mgpt"  # models/<this>/<model name>, registered by the pack
DEMO_NAME = "lumina-mgpt-demo"
# The pack itself registers its own models/lumina_mgpt folder (nodes/convert.py PACK_MODELS): a trained model
# shipped there is listed by the server without copying.
BUNDLED_DIRS = [REPO / "models" / MODEL_FOLDER]


def say(msg: str) -> None:
    print(f"[main] {msg}", file=sys.stderr, flush=True)  # noqa: T201


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `with ComfyServer` so the server is stopped by PID


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def loader_nodes(workflow: dict) -> tuple[str | None, str | None]:
    """Ids of the workflow's model loader and tokenizer loader."""
    model = next((k for k, n in workflow.items() if n.get("class_type") == "LuminaMGPTModelLoader"), None)
    tok = next((k for k, n in workflow.items() if n.get("class_type") == "LuminaMGPTTokenizerLoader"), None)
    return model, tok


def ensure_model(models_dir: Path, workflow: dict) -> list[str]:
    """Make the workflow's model available in ``models_dir``; return the ``--set`` overrides needed.

    The workflow's own model (e.g. ``lumina-mgpt-world``) is used when present in the server's model folder
    or in ``BUNDLED_DIRS``; otherwise a small random demo model is written (its picture is noise).
    """
    model_id, tok_id = loader_nodes(workflow)
    if model_id is None:
        return []
    name = workflow[model_id]["inputs"].get("model_name", "")
    root = models_dir / MODEL_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    if name and _is_model(root / name):
        say(f"model {name!r} found in {root}")
        return []
    for bundled in BUNDLED_DIRS:
        if name and _is_model(bundled / name):
            say(f"using the bundled model {bundled / name}")
            return []
    demo = root / DEMO_NAME
    if not _is_model(demo):
        say(f"model {name!r} is missing from models/lumina_mgpt/: writing a small RANDOM demo model to {demo} "
            "(the picture proves the path works, not quality)")
        cmd = [sys.executable, "-m", "lumina_tools", "demo-model", str(demo)]
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
        if proc.returncode != 0 or not _is_model(demo):
            raise SystemExit(f"[main] error: could not write the demo model ({' '.join(cmd)} exited "
                             f"{proc.returncode}); is comfy_lumina_mgpt/demo_model.py present?")
    else:
        say(f"using the RANDOM demo model {demo} (model {name!r} is missing)")
    sets = [f"{model_id}.model_name={DEMO_NAME}"]
    if tok_id is not None:
        sets.append(f"{tok_id}.tokenizer={MODEL_FOLDER}/{DEMO_NAME}")
    return sets


def prompt_of(workflow: dict) -> tuple[str, int, int] | None:
    """``(prompt, width, height)`` of the workflow's Resolution-Aware Prompt node, if it has one."""
    node = next((n for n in workflow.values() if n.get("class_type") == "LuminaMGPTPrompt"), None)
    if node is None:
        return None
    inputs = node["inputs"]
    size = inputs.get("custom_size", "") if inputs.get("resolution") == "custom" else inputs.get("resolution", "")
    try:
        width, height = (int(v) for v in str(size).lower().split("x"))
    except ValueError:
        return None
    return str(inputs.get("prompt", "")), width, height


def judge(png: Path, workflow: dict) -> str:
    """One line: what the world's pixel analyser reads in ``png`` against the workflow's prompt."""
    from PIL import Image

    from lumina_world import parse_caption, score_text_to_image

    asked = prompt_of(workflow)
    if asked is None:
        return f"{png.name}: no text-to-image prompt in the workflow to check against"
    text, width, height = asked
    try:
        scene = parse_caption(text, width, height)
    except ValueError as err:
        return f"{png.name}: not checked ({err})"
    with Image.open(png) as im:
        scores = score_text_to_image(im.convert("RGB"), scene)
    verdict = "MATCHES its prompt" if scores["overall"] == 1.0 else "does NOT match its prompt"
    detail = ", ".join(f"{k} {v:g}" for k, v in scores.items() if k != "overall")
    return f"{png.name}: the world analyser says the picture {verdict} ({detail})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW)
    parser.add_argument("--out", type=Path, default=REPO / "out")
    parser.add_argument("--base", type=Path, default=REPO / "runs" / "main-job")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    workflow = json.loads(args.workflow.read_text(encoding="utf-8"))
    comfy_dir = harness.default_comfy_dir()
    if not harness.comfy_installed(comfy_dir):
        say(f"error: no ComfyUI at {comfy_dir}; run bash scripts/setup.sh (or set COMFYUI_DIR)")
        return 1
    t0 = time.monotonic()
    say(f"starting ComfyUI ({comfy_dir}) with base dir {args.base}")
    with harness.ComfyServer(comfy_dir, args.base) as server:
        say(f"ComfyUI ready at {server.url} in {server.startup_s:.1f} s (pid {server.proc.pid}, "
            f"log {server.log_path})")
        sets = ensure_model(server.models_dir, workflow) + args.sets
        cmd = [sys.executable, "-m", "lumina_tools", "run-workflow", str(args.workflow),
               "--server", server.url, "--out", str(args.out), "--timeout", str(args.timeout)]
        for s in sets:
            cmd += ["--set", s]
        say("running: " + " ".join(cmd[1:]))
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            say(f"run-workflow failed (exit {proc.returncode}); ComfyUI log tail:\n{server.log_tail(40)}")
            return 1
    paths = [Path(line) for line in proc.stdout.splitlines() if line.strip()]
    pngs = [p for p in paths if p.suffix.lower() == ".png" and p.is_file()
            and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
    if not pngs:
        say(f"error: the workflow saved no PNG (client printed: {proc.stdout.strip()!r})")
        return 1
    say(f"done in {time.monotonic() - t0:.1f} s; server stopped")
    for p in pngs:
        say(judge(p, workflow))
    for p in pngs:
        print(p.resolve())  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
