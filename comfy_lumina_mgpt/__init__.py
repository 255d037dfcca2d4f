"""Lumina-mGPT engine: model, tokenizers, VQGAN, sampler and trainer.

Pure PyTorch; never imports ComfyUI (the node glue lives in ``nodes/``).
"""
