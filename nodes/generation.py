"""Sampling inside ComfyUI, shared by the sampler, text-to-image, task and trainer nodes: the sampling widgets,
the model on ComfyUI's device with a seeded generator, and a step callback for progress, previews and Cancel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfy_lumina_mgpt import codec
from ..comfy_lumina_mgpt.answers import Answer, Answers, ask, sample_answers
from ..comfy_lumina_mgpt.conversation import Conversation
from ..comfy_lumina_mgpt.codec import PromptTokens, TokenBatch
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from ..comfy_lumina_mgpt.sampling.generate import ProducedTokens, StepCallback
from ..comfy_lumina_mgpt.sampling.settings import MAX_JACOBI_WINDOW, SamplerConfig
from .convert import engine_to_image, stack_images
from .loaders import vqgan_patcher
from .progress import JobProgress, pil_preview
from .sizes import validate_size_widgets
from .types import LoadedModel

EXAMPLE_PROMPT = "a large red circle on the left and a small blue square at the top"  # the bundled model's words


def size_problem(node_id: str | None, values: dict) -> str | None:
    """``validate_size_widgets`` for a node's widget values (sizes that arrive through links are checked when
    the node runs)."""
    if values.get("resolution") is None:
        return None
    verdict = validate_size_widgets(node_id, values["resolution"], values.get("custom_size") or "")
    return None if verdict is True else str(verdict)


def sampler_inputs(cfg: float = 4.0, image_top_k: int = 2000, text_top_k: int = 10,
                   max_new_tokens: int = 8192) -> list:
    """The sampling widgets (``SamplingWidgets``), shared by the sampler, text-to-image and task nodes (the
    defaults differ)."""
    return [
        io.Float.Input("cfg", default=cfg, min=0.0, max=16.0, step=0.1,
                       tooltip="Classifier-free guidance on image tokens (1.0 = off, faster). "
                               "4.0 for text-to-image, 1.0 for Omni tasks."),
        io.Int.Input("image_top_k", default=image_top_k, min=1, max=65536,
                     tooltip="Sample image codes among the k most likely (2000 default, 200 for Omni tasks)."),
        io.Float.Input("image_top_p", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Nucleus filter for image codes (1.0 = off)."),
        io.Float.Input("image_temperature", default=1.0, min=0.01, max=4.0, step=0.01,
                       tooltip="Temperature for image codes; lower = safer, less varied."),
        io.Int.Input("text_top_k", default=text_top_k, min=1, max=65536,
                     tooltip="Sample text tokens among the k most likely (5-10 recommended)."),
        io.Float.Input("text_temperature", default=1.0, min=0.01, max=4.0, step=0.01,
                       tooltip="Temperature for text tokens."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Same seed, same result."),
        io.Int.Input("max_new_tokens", default=max_new_tokens, min=1, max=16384,
                     tooltip="Cap on generated tokens; a 768x768 image needs 2356, 1024x1024 needs 4164."),
    ]


def speed_inputs() -> list:
    """Optional widgets that change how fast, not what, an image is sampled (last, so older workflows load)."""
    return [
        io.Int.Input("jacobi_window", default=0, min=0, max=MAX_JACOBI_WINDOW, optional=True,
                     tooltip="Speculative Jacobi decoding: draft tokens checked per model pass (16 = the SJD "
                             "paper's choice, about 2x fewer passes on a GPU; 0 = one token per pass). The "
                             "images follow the same distribution either way."),
        io.Boolean.Input("compile", default=False, optional=True,
                         tooltip="Compile the decode step with torch.compile (CUDA graphs on a GPU). The first "
                                 "image of each size compiles for tens of seconds; later ones run faster."),
    ]


@dataclass(frozen=True)
class SamplingWidgets:
    """The values of ``sampler_inputs`` and ``speed_inputs``, by widget name (a node passes them on as
    ``SamplingWidgets(**widgets)``, so a misspelt or missing widget is an error here, not a silent default)."""

    cfg: float
    image_top_k: int
    image_top_p: float
    image_temperature: float
    text_top_k: int
    text_temperature: float
    seed: int
    max_new_tokens: int
    jacobi_window: int = 0
    compile: bool = False

    def settings(self, force_size: tuple[int, int] | None = None, force_images: int = 0) -> SamplerConfig:
        """The engine's settings; ``force_size`` (size tokens ``(h, w)``) for the next ``force_images``."""
        return SamplerConfig(cfg_scale=self.cfg, image_top_k=self.image_top_k, image_top_p=self.image_top_p,
                             image_temperature=self.image_temperature, text_top_k=self.text_top_k,
                             text_temperature=self.text_temperature, max_new_tokens=self.max_new_tokens,
                             jacobi_window=self.jacobi_window, compiled=bool(self.compile),
                             force_size=force_size, force_images=force_images)


@contextmanager
def comfy_sampling(model: LoadedModel, bundle: TokenizerBundle, seed: int, progress: JobProgress, part: int = 0,
                   preview_every: int = 4) -> Iterator[tuple[torch.nn.Module, torch.Generator, StepCallback]]:
    """Model and VQGAN on ComfyUI's device, a seeded generator, and a step callback that moves ``progress`` (as
    part ``part`` of its job), shows the rows finished so far as a preview and honours Cancel. The KV cache is
    freed afterwards."""
    mm.load_models_gpu([model.patcher, vqgan_patcher(bundle)])
    shown = {"rows": 0}

    def on_step(step: int, total: int, tokens: ProducedTokens) -> None:
        mm.throw_exception_if_processing_interrupted()
        preview = None
        codes = tokens.image_rows(0) if preview_every else None  # what the grid state knows: no re-parsing
        if codes is not None and codes.shape[0] < shown["rows"]:  # a new image began: its rows count from 0
            shown["rows"] = 0
        if codes is not None and codes.shape[0] >= shown["rows"] + preview_every:
            shown["rows"] = codes.shape[0]
            preview = pil_preview(engine_to_image(codec.decode_codes(bundle, codes))[0])
        progress.on_step(part, step, total, preview)

    generator = torch.Generator(device=model.patcher.load_device).manual_seed(seed)
    try:
        yield model.patcher.model, generator, on_step
    finally:
        mm.soft_empty_cache()


def free_bytes(model: LoadedModel) -> int:
    return mm.get_free_memory(model.patcher.load_device)


def run_sampler(model: LoadedModel, bundle: TokenizerBundle, prompt: PromptTokens, settings: SamplerConfig,
                seed: int, progress: JobProgress, batch_size: int = 1, preview_every: int = 4) -> Answers:
    """Sample ``batch_size`` answers to one prompt inside ComfyUI."""
    negatives = [list(prompt.negative_ids)] * batch_size if prompt.negative_ids else None
    with comfy_sampling(model, bundle, seed, progress, 0, preview_every) as (lm, generator, on_step):
        return sample_answers(lm, bundle, [list(prompt.ids)] * batch_size, settings, negative_prompts=negatives,
                              generator=generator, on_step=on_step, free_bytes=free_bytes(model))


def answer_turn(model: LoadedModel, bundle: TokenizerBundle, message: str, images: list, widgets: SamplingWidgets,
                progress: JobProgress, part: int = 0, history: Conversation | None = None, force_images: int = 0,
                force_size: tuple[int, int] | None = None) -> Answer:
    """One conversation turn sampled inside ComfyUI (``answers.ask``)."""
    settings = widgets.settings(force_size, force_images)
    with comfy_sampling(model, bundle, widgets.seed, progress, part) as (lm, generator, on_step):
        return ask(lm, bundle, history or Conversation(), message, images, settings, generator=generator,
                   on_step=on_step, free_bytes=free_bytes(model))


def token_batch(answers: Answers) -> TokenBatch:
    """The sampler node's output: every row's tokens and text."""
    return TokenBatch(answers.tokens, answers.texts)


def decode_images(bundle: TokenizerBundle, codes: list[torch.Tensor]) -> torch.Tensor:
    """VQ codes ``[h, w]`` each -> one ComfyUI IMAGE batch ``[N, H, W, 3]`` (resized to the first's size)."""
    cancel = mm.throw_exception_if_processing_interrupted
    decoded = []
    for c in codes:
        cancel()
        decoded.append(engine_to_image(codec.decode_codes(bundle, c)))
    return stack_images(decoded)


def decode_to_image(bundle: TokenizerBundle, batch: TokenBatch) -> torch.Tensor:
    images = codec.decode_batch(bundle, batch, check_cancel=mm.throw_exception_if_processing_interrupted)
    return stack_images([engine_to_image(img) for img in images])
