"""Prompt, sampler and one-box text-to-image nodes."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_lumina_mgpt import codec
from ..comfy_lumina_mgpt.codec import PromptTokens
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from .convert import engine_to_image
from .generation import (EXAMPLE_PROMPT, SamplingWidgets, decode_images, run_sampler, sampler_inputs, size_problem,
                         speed_inputs, token_batch)
from .progress import JobProgress
from .sizes import size_inputs, sizes_for
from .types import LoadedModel, LuminaModel, LuminaPrompt, LuminaTokenizer, LuminaTokens, SizedPrompt
from .validation import CheckedNode

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
            return codec.text_to_image_prompt(tokenizer, prompt, width, height, negative_prompt)

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
                batch_size: int, force_size: bool, preview_every_rows: int, **widgets) -> io.NodeOutput:
        sampling = SamplingWidgets(**widgets)
        tokens = resolve_prompt(prompt, model, tokenizer)
        grid = tokens.grid_for(tokenizer.patch) if force_size else None
        settings = sampling.settings(force_size=grid, force_images=1 if grid is not None else 0)
        progress = JobProgress(label="sampling")
        answers = run_sampler(model, tokenizer, tokens, settings, sampling.seed, progress, batch_size,
                              preview_every_rows)
        first = answers.images[0]  # the previews followed the first row
        progress.finish(engine_to_image(codec.decode_codes(tokenizer, first[-1]))[0] if first else None)
        return io.NodeOutput(token_batch(answers), "\n".join(answers.texts))


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
                scale: float = 1.0, custom_size: str = "", **widgets) -> io.NodeOutput:
        sampling = SamplingWidgets(**widgets)
        width, height = sizes_for(model, tokenizer).choose(resolution, scale, custom_size)
        tokens = codec.text_to_image_prompt(tokenizer, prompt, width, height)
        settings = sampling.settings(force_size=tokens.grid_for(tokenizer.patch), force_images=1)
        progress = JobProgress(label="image")
        answers = run_sampler(model, tokenizer, tokens, settings, sampling.seed, progress, batch_size)
        images = decode_images(tokenizer, [codes for row in answers.images for codes in row])
        progress.finish(images[0])  # the previews followed the first image of the batch
        return io.NodeOutput(images)
