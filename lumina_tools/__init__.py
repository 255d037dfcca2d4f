"""The command line and the tools around the engine: ``python -m lumina_tools COMMAND`` (generate, download,
train, bench, run-workflow, ...), the upstream-style baseline, the ComfyUI HTTP client, demo models and the
forged files of the adversarial tests.

Layering: ``lumina_tools`` imports the engine (``comfy_lumina_mgpt``) and the world (``lumina_world``); nothing
imports ``lumina_tools`` except tests and scripts.
"""
