"""Command line: ``python -m comfy_lumina_mgpt COMMAND ...``.

Each command lives in its own module, imported only when it runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("comfy_lumina_mgpt.cli_generate", "Generate an image (or text) without ComfyUI."),
    "run-workflow": ("comfy_lumina_mgpt.client", "Run an API-format workflow on a ComfyUI server."),
    "download": ("comfy_lumina_mgpt.download", "Fetch official checkpoints from the Hugging Face hub."),
    "convert-vqgan": ("comfy_lumina_mgpt.cli_convert", "Convert Meta's vqgan.ckpt to vqgan.safetensors."),
    "demo-model": ("comfy_lumina_mgpt.demo_model", "Write a small model folder (for tests and demos)."),
    "train": ("comfy_lumina_mgpt.training.cli", "Finetune a model (LoRA or full) from a YAML config."),
    "bench": ("comfy_lumina_mgpt.bench", "Measure sampling and training throughput."),
    "world": ("comfy_lumina_mgpt.world.cli", "The synthetic world: generate data, train the bundled model."),
    "eval": ("comfy_lumina_mgpt.evaluation", "Quality benchmark on the synthetic world."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m comfy_lumina_mgpt COMMAND [args]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, _ = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            print(f"'{argv[0]}' is not available in this version of the pack", file=sys.stderr)
            return 2
        raise
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
