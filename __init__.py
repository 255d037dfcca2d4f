"""Lumina-mGPT nodes for ComfyUI. ComfyUI loads this folder from custom_nodes/ and calls comfy_entrypoint."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
