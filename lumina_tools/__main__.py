"""Command line: ``python -m lumina_tools COMMAND ...``.

Each command lives in its own module, imported only when it runs.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("lumina_tools.generate", "Generate an image (or text) without ComfyUI."),
    "download": ("lumina_tools.download", "Fetch official checkpoints from the Hugging Face hub."),
    "run-workflow": ("lumina_tools.client", "Run an API-format workflow on a ComfyUI server."),
    "convert-vqgan": ("lumina_tools.convert_vqgan", "Convert Meta's vqgan.ckpt to vqgan.safetensors."),
    "demo-model": ("lumina_tools.demo_model", "Write a small random model folder (for tests and demos)."),
    "train": ("lumina_tools.train", "Finetune a model (LoRA or full) from a YAML config."),
    "bench": ("lumina_tools.bench", "Measure sampling and training throughput."),
    "world": ("lumina_world.cli", "The synthetic world: generate data, train the bundled model."),
    "eval": ("lumina_world.benchmark", "Quality benchmark on the synthetic world."),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m lumina_tools COMMAND [args]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
