"""Prompt, sampler and one-box text-to-image nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfy_lumina_mgpt import conversation, limits, pipeline
from ..comfy_lumina_mgpt.pipeline import PromptTokens, TokenBatch, TokenizerBundle
from ..comfy_lumina_mgpt.sampling.generate import ProducedTokens, StepCallback, generate
from ..comfy_lumina_mgpt.sampling.settings import MAX_JACOBI_WINDOW, SamplerConfig
from .convert import engine_to_image, stack_images
from .loaders import vqgan_patcher
from .progress import JobProgress, pil_preview
from .sizes import size_inputs, sizes_for, validate_size_widgets
from .types import LoadedModel, LuminaModel, LuminaPrompt, LuminaTokenizer, LuminaTokens, SizedPrompt
from .validation import CheckedNode

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
    """The sampling widgets, shared by the sampler, text-to-image and task nodes (defaults differ)."""
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


def sampler_config(kw: dict, **extra) -> SamplerConfig:
    return SamplerConfig(cfg_scale=kw["cfg"], image_top_k=kw["image_top_k"], image_top_p=kw["image_top_p"],
                         image_temperature=kw["image_temperature"], text_top_k=kw["text_top_k"],
                         text_temperature=kw["text_temperature"], max_new_tokens=kw["max_new_tokens"],
                         jacobi_window=kw.get("jacobi_window", 0), compiled=bool(kw.get("compile", False)),
                         **extra)


@contextmanager
def comfy_sampling(model: LoadedModel, bundle: TokenizerBundle, settings: SamplerConfig, seed: int,
                   progress: JobProgress, part: int = 0, preview_every: int = 4
                   ) -> Iterator[tuple[torch.nn.Module, torch.Generator, StepCallback]]:
    """Model and VQGAN on ComfyUI's device, a seeded generator, and a step callback that moves ``progress`` (as
    part ``part`` of its job), shows the rows finished so far as a preview and honours Cancel. The KV cache is
    freed afterwards."""
    mm.load_models_gpu([model.patcher, vqgan_patcher(bundle)])
    lm = model.patcher.model
    bundle.check_model_vocab(lm.config.vocab_size)
    shown = {"rows": 0}

    def on_step(step: int, total: int, tokens: ProducedTokens) -> None:
        mm.throw_exception_if_processing_interrupted()
        preview = None
        codes = tokens.image_rows(0) if preview_every else None
        if codes is not None and codes.shape[0] < shown["rows"]:  # a new image began: its rows count from 0
            shown["rows"] = 0
        if codes is not None and codes.shape[0] >= shown["rows"] + preview_every:
            shown["rows"] = codes.shape[0]
            preview = pil_preview(engine_to_image(pipeline.decode_codes(bundle, codes))[0])
        progress.on_step(part, step, total, preview)

    generator = torch.Generator(device=model.patcher.load_device).manual_seed(seed)
    try:
        yield lm, generator, on_step
    finally:
        mm.soft_empty_cache()


def run_sampler(model: LoadedModel, bundle: TokenizerBundle, prompt: PromptTokens, settings: SamplerConfig,
                seed: int, progress: JobProgress, batch_size: int = 1, preview_every: int = 4) -> TokenBatch:
    """Sample ``batch_size`` answers to one prompt inside ComfyUI."""
    negatives = [list(prompt.negative_ids)] * batch_size if prompt.negative_ids else None
    prompts = [list(prompt.ids)] * batch_size
    with comfy_sampling(model, bundle, settings, seed, progress, 0, preview_every) as (lm, generator, on_step):
        limits.check_generation(lm, prompts, bundle.vocab, settings, negatives,
                                free_bytes=mm.get_free_memory(model.patcher.load_device))
        result = generate(lm, prompts, bundle.vocab, settings, generator=generator,
                          on_step=on_step, negative_prompts=negatives)
    texts = tuple(conversation.split_response(t, bundle.text)[0] for t in result.tokens)
    return TokenBatch(tuple(tuple(t) for t in result.tokens), texts)


def decode_to_image(bundle: TokenizerBundle, batch: TokenBatch) -> torch.Tensor:
    images = pipeline.decode_batch(bundle, batch, check_cancel=mm.throw_exception_if_processing_interrupted)
    return stack_images([engine_to_image(img) for img in images])


def resolve_prompt(prompt: PromptTokens | SizedPrompt, model: LoadedModel, bundle: TokenizerBundle
                   ) -> PromptTokens:
    """A prompt whose size follows the model (``SizedPrompt``) becomes tokens for that model's size; the
    size of a ready one is checked against the model. Either way before any sampling."""
    model_sizes = sizes_for(model, bundle)
    if isinstance(prompt, SizedPrompt):
        width, height = (model_sizes.choose(prompt.resolution, prompt.scale, prompt.custom_size) if prompt.sized
                         else (0, 0))
        return prompt.build(width, height, model_sizes.fit_candidates())
    if prompt.width and prompt.height:
        model_sizes.check(prompt.width, prompt.height)
    return prompt


class LuminaMGPTPrompt(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTPrompt",
            display_name="Lumina-mGPT Resolution-Aware Prompt",
            category="Lumina-mGPT/conditioning",
            description="Builds 'Generate an image of WxH according to the following prompt:' + your text, "
                        "as tokens for the sampler. The size follows the model the sampler uses.",
            inputs=[
                LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
                io.String.Input("prompt", multiline=True, default=EXAMPLE_PROMPT,
                                tooltip="What the image shows."),
                *size_inputs(),
                io.String.Input("negative_prompt", multiline=True, default="", optional=True,
                                tooltip="Optional. Used as the guidance context instead of the empty one: the "
                                        "image is pushed away from this description."),
            ],
            outputs=[LuminaPrompt.Output(display_name="prompt")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        return size_problem(cls.hidden.unique_id, values)

    @classmethod
    def execute(cls, tokenizer: TokenizerBundle, prompt: str, resolution: str, scale: float = 1.0,
                custom_size: str = "", negative_prompt: str = "") -> io.NodeOutput:
        if not prompt.strip():
            raise ValueError("the prompt is empty; describe the image to generate")

        def build(width: int, height: int, fit: list[tuple[int, int]] | None) -> PromptTokens:
            return pipeline.text_to_image_prompt(tokenizer, prompt, width, height, negative_prompt)

        return io.NodeOutput(SizedPrompt(build, resolution, scale, custom_size))


class LuminaMGPTSampler(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTSampler",
            display_name="Lumina-mGPT Sampler",
            category="Lumina-mGPT/sampling",
            description="Autoregressive sampling with classifier-free guidance and separate text/image "
                        "top-k and temperature. Shows the image row by row while it is generated.",
            inputs=[
                LuminaModel.Input("model", tooltip="From the Lumina-mGPT Model Loader."),
                LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
                LuminaPrompt.Input("prompt", tooltip="From the Resolution-Aware Prompt or a task node."),
                *sampler_inputs(),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Images sampled together (one forward pass for all)."),
                io.Boolean.Input("force_size", default=True,
                                 tooltip="Force the size tokens of the requested resolution instead of letting "
                                         "the model choose them from the prompt text."),
                io.Int.Input("preview_every_rows", default=4, min=0, max=128,
                             tooltip="Decode a preview after this many new rows (0 = no preview)."),
                *speed_inputs(),
            ],
            outputs=[LuminaTokens.Output(display_name="tokens"), io.String.Output(display_name="text")],
        )

    @classmethod
    def execute(cls, model: LoadedModel, tokenizer: TokenizerBundle, prompt: PromptTokens | SizedPrompt,
                batch_size: int, force_size: bool, preview_every_rows: int, **kw) -> io.NodeOutput:
        tokens = resolve_prompt(prompt, model, tokenizer)
        grid = tokens.grid_for(tokenizer.patch) if force_size else None
        settings = sampler_config(kw, force_size=grid, force_images=1 if grid is not None else 0)
        progress = JobProgress(label="sampling")
        batch = run_sampler(model, tokenizer, tokens, settings, kw["seed"], progress, batch_size,
                            preview_every_rows)
        images = pipeline.decode_batch(tokenizer, TokenBatch(batch.sequences[:1]))
        progress.finish(engine_to_image(images[-1])[0] if images else None)
        return io.NodeOutput(batch, "\n".join(batch.texts))


class LuminaMGPTTextToImage(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTTextToImage",
            display_name="Lumina-mGPT Text to Image",
            category="Lumina-mGPT/sampling",
            description="Prompt, sampling and decoding in one node. The size follows the loaded model.",
            inputs=[
                LuminaModel.Input("model", tooltip="From the Lumina-mGPT Model Loader."),
                LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
                io.String.Input("prompt", multiline=True, default=EXAMPLE_PROMPT, tooltip="What the image shows."),
                *size_inputs(),
                *sampler_inputs(),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Images sampled together."),
                *speed_inputs(),
            ],
            outputs=[io.Image.Output(display_name="image")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        return size_problem(cls.hidden.unique_id, values)

    @classmethod
    def execute(cls, model: LoadedModel, tokenizer: TokenizerBundle, prompt: str, resolution: str, batch_size: int,
                scale: float = 1.0, custom_size: str = "", **kw) -> io.NodeOutput:
        width, height = sizes_for(model, tokenizer).choose(resolution, scale, custom_size)
        tokens = pipeline.text_to_image_prompt(tokenizer, prompt, width, height)
        settings = sampler_config(kw, force_size=tokens.grid_for(tokenizer.patch), force_images=1)
        progress = JobProgress(label="image")
        batch = run_sampler(model, tokenizer, tokens, settings, kw["seed"], progress, batch_size)
        images = decode_to_image(tokenizer, batch)
        progress.finish(images[0])  # the previews followed the first image of the batch
        return io.NodeOutput(images)
