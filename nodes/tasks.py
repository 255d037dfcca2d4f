"""Omni-SFT task nodes: editing, dense prediction, detection, condition-to-image, multiview, chat."""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfy_lumina_mgpt import omni, pipeline
from ..comfy_lumina_mgpt.conversation import Conversation
from ..comfy_lumina_mgpt.pipeline import PromptTokens, TokenBatch, TokenizerBundle
from ..comfy_lumina_mgpt.tasks import DENSE_PREDICTION_TASKS
from .convert import engine_to_image, image_to_pil, stack_images
from .images import TARGETS, target_size
from .sampling import chosen_size, comfy_sampling, sampler_config, sampler_inputs, size_inputs, size_problem
from .types import LoadedModel, LuminaConversation, LuminaModel, LuminaPrompt, LuminaTokenizer, LuminaTokens
from .validation import CheckedNode

CATEGORY = "Lumina-mGPT/tasks"
TASK_CHOICES = ["text_to_image", *DENSE_PREDICTION_TASKS, "detection", "editing", "condition_to_image",
                "multiview", "caption", "vqa", "chat"]


def common_inputs(needs_image: bool = True) -> list:
    image = [io.Image.Input("image", tooltip="The input image (fitted to the model's sizes, then VQ-encoded).")] \
        if needs_image else []
    return [
        LuminaModel.Input("model", tooltip="An Omni-SFT checkpoint (e.g. Lumina-mGPT-7B-768-Omni) or the bundled "
                                           "model."),
        LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
        *image,
    ]


def image_options() -> list:
    return [io.Combo.Input("target", options=TARGETS, default="768",
                           tooltip="Resolution family of the model (768 for the Omni checkpoint); 'native' "
                                   "keeps the image's own size on the patch grid (small models such as "
                                   "lumina-mgpt-world).")]


def omni_sampler_inputs() -> list:
    return sampler_inputs(cfg=1.0, image_top_k=200, text_top_k=5, max_new_tokens=5000)


def history_input() -> list:
    return [LuminaConversation.Input("conversation", optional=True,
                                     tooltip="Earlier turns (from another task or chat node) to continue.")]


def answer(model: LoadedModel, tokenizer: TokenizerBundle, message: str, images: list, kw: dict,
           history: Conversation | None = None, force_images: int = 0, force_size=None) -> omni.Answer:
    settings = sampler_config(kw, force_images=force_images, force_size=force_size)
    with comfy_sampling(model, tokenizer, settings, kw["seed"]) as (lm, generator, on_step):
        return omni.ask(lm, tokenizer, history or Conversation(), message, images, settings,
                        generator=generator, on_step=on_step)


def same_size(codes: list) -> tuple[int, int]:
    """Size tokens of the (first) input image: image-to-image answers keep the input's size."""
    h_lat, w_lat = codes[0].shape
    return h_lat // 2, w_lat // 2


def encode_inputs(tokenizer: TokenizerBundle, image: torch.Tensor, target: str, seed: int) -> list:
    pil = image_to_pil(image[:1])  # task nodes use the first picture of a batch: convert only that one
    return pipeline.encode_images(tokenizer, pil[:1], target_size(target), seed,
                                  check_cancel=mm.throw_exception_if_processing_interrupted)


def answer_images(tokenizer: TokenizerBundle, ans: omni.Answer) -> torch.Tensor:
    if not ans.images:
        raise ValueError(f"the model answered without an image ({ans.text[:200]!r}); raise max_new_tokens or "
                         "use an Omni checkpoint")
    return stack_images([engine_to_image(pipeline.decode_codes(tokenizer, c)) for c in ans.images])


class LuminaMGPTImageEdit(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTImageEdit", display_name="Lumina-mGPT Image Edit", category=CATEGORY,
            description="Edits an image by a written instruction. Chain nodes through 'conversation' for "
                        "multi-turn editing.",
            inputs=[*common_inputs(), io.String.Input("instruction", multiline=True, default="",
                                                      tooltip="What to change, e.g. 'Make the sky red.'"),
                    *image_options(), *omni_sampler_inputs(), *history_input()],
            outputs=[io.Image.Output(display_name="image"), LuminaConversation.Output(display_name="conversation")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, instruction: str, target: str, conversation=None, **kw):
        codes = encode_inputs(tokenizer, image, target, kw["seed"])
        ans = answer(model, tokenizer, omni.user_message("editing", instruction), codes, kw, conversation,
                     force_images=1, force_size=same_size(codes))
        return io.NodeOutput(answer_images(tokenizer, ans), ans.conversation)


class LuminaMGPTDensePrediction(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTDensePrediction", display_name="Lumina-mGPT Dense Prediction", category=CATEGORY,
            description="Semantic segmentation, depth, surface normals or human pose of an image, as an image.",
            inputs=[*common_inputs(), io.Combo.Input("task", options=list(DENSE_PREDICTION_TASKS), default="depth",
                                                     tooltip="Which map to predict."),
                    *image_options(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="map"),
                     io.Mask.Output(display_name="grey", tooltip="The map as one channel (depth: near = 1).")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, task: str, target: str, **kw):
        codes = encode_inputs(tokenizer, image, target, kw["seed"])
        ans = answer(model, tokenizer, omni.user_message(task), codes, kw, force_images=1,
                     force_size=same_size(codes))
        maps = answer_images(tokenizer, ans)
        return io.NodeOutput(maps, maps.mean(dim=-1))


class LuminaMGPTDetect(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTDetect", display_name="Lumina-mGPT Detect", category=CATEGORY,
            description="'Detect: <object>': the model draws the object's box on the image; the box is also "
                        "returned as a mask when it can be found.",
            inputs=[*common_inputs(), io.String.Input("object", default="",
                                                      tooltip="What to find, e.g. 'the red car'."),
                    *image_options(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="image"),
                     io.Mask.Output(display_name="box_mask", tooltip="1 inside the detected box (empty if none)."),
                     io.String.Output(display_name="box", tooltip="x0,y0,x1,y1 in pixels of the output image, "
                                                                   "or empty.")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, object: str, target: str, **kw):  # noqa: A002 (UI name)
        codes = encode_inputs(tokenizer, image, target, kw["seed"])
        ans = answer(model, tokenizer, omni.user_message("detection", object), codes, kw, force_images=1,
                     force_size=same_size(codes))
        out = answer_images(tokenizer, ans)
        before = pipeline.decode_codes(tokenizer, codes[0])[0].cpu()
        after = out[0].permute(2, 0, 1) * 2 - 1
        box = omni.detect_box(before, after)
        mask = torch.zeros(out.shape[:3])
        if box is not None:
            x0, y0, x1, y1 = box
            mask[:, y0:y1, x0:x1] = 1.0
        return io.NodeOutput(out, mask, ",".join(map(str, box)) if box else "")


class LuminaMGPTConditionToImage(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTConditionToImage", display_name="Lumina-mGPT Condition to Image",
            category=CATEGORY,
            description="Generates an image from a condition map (depth, pose, segmentation, normals) and a "
                        "caption.",
            inputs=[*common_inputs(), io.String.Input("caption", multiline=True, default="",
                                                      tooltip="What the image shows."),
                    *image_options(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, caption: str, target: str, **kw):
        codes = encode_inputs(tokenizer, image, target, kw["seed"])
        ans = answer(model, tokenizer, omni.user_message("condition_to_image", caption), codes, kw,
                     force_images=1, force_size=same_size(codes))
        return io.NodeOutput(answer_images(tokenizer, ans))


class LuminaMGPTMultiview(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTMultiview", display_name="Lumina-mGPT Multiview", category=CATEGORY,
            description="Several views of one object turning around it, as an image batch (our own prompt "
                        "wording, trained into the bundled model; see README).",
            inputs=[*common_inputs(needs_image=False),
                    io.String.Input("caption", multiline=True, default="", tooltip="The object."),
                    io.Int.Input("views", default=4, min=1, max=16, tooltip="Number of views (images) to render."),
                    *size_inputs("512x512"), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="views")],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        return size_problem(values)

    @classmethod
    def execute(cls, model, tokenizer, caption: str, views: int, resolution: str, custom_size: str, **kw):
        if views < 1:
            raise ValueError("views must be at least 1")
        width, height = chosen_size(resolution, custom_size)
        pipeline.unirep.check_size(width, height, tokenizer.patch)
        message = omni.user_message("multiview", caption, views=views, width=width, height=height)
        ans = answer(model, tokenizer, message, [], kw, force_images=views,
                     force_size=(height // tokenizer.patch, width // tokenizer.patch))
        return io.NodeOutput(answer_images(tokenizer, ans))


class LuminaMGPTChat(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTChat", display_name="Lumina-mGPT Chat", category=CATEGORY,
            description="Captioning, visual question answering and text chat. Connect 'conversation' to a "
                        "second Chat node to continue the dialogue.",
            inputs=[*common_inputs(needs_image=False),
                    io.String.Input("message", multiline=True, default="Describe the image in detail.",
                                    tooltip="Your question or message."),
                    io.Image.Input("image", optional=True, tooltip="Optional image the message is about."),
                    *image_options(), *omni_sampler_inputs(), *history_input()],
            outputs=[io.String.Output(display_name="answer"), LuminaConversation.Output(display_name="conversation"),
                     io.Image.Output(display_name="images", tooltip="Images in the answer, if any (else the "
                                                                     "input image).")],
        )

    @classmethod
    def execute(cls, model, tokenizer, message: str, target: str, image=None, conversation=None, **kw):
        text = omni.user_message("chat", message)
        codes = encode_inputs(tokenizer, image, target, kw["seed"]) if image is not None else []
        if codes:
            text = omni.user_message("vqa", message)
        ans = answer(model, tokenizer, text, codes, kw, conversation)
        shown = answer_images(tokenizer, ans) if ans.images else (image if image is not None else
                                                                  torch.zeros(1, 64, 64, 3))
        return io.NodeOutput(ans.text.strip(), ans.conversation, shown)


class LuminaMGPTTaskPrompt(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTTaskPrompt", display_name="Lumina-mGPT Task Prompt", category=CATEGORY,
            description="Builds the exact prompt of any task for the generic Sampler.",
            inputs=[LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
                    io.Combo.Input("task", options=TASK_CHOICES, default="depth", tooltip="Which task."),
                    io.String.Input("text", multiline=True, default="",
                                    tooltip="Prompt, instruction, object or question (unused by map tasks)."),
                    io.Image.Input("image", optional=True, tooltip="Input image, for tasks that take one."),
                    *size_inputs("512x512"),
                    io.Int.Input("views", default=4, min=1, max=16, tooltip="Multiview only."),
                    *image_options(),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seeds the crop."),
                    *history_input()],
            outputs=[LuminaPrompt.Output(display_name="prompt")],
        )

    @classmethod
    def execute(cls, tokenizer, task: str, text: str, resolution: str, custom_size: str, views: int,
                target: str, seed: int, image=None, conversation=None):
        width, height = chosen_size(resolution, custom_size)
        message = omni.user_message(task, text, width=width, height=height, views=views)
        needs = omni.get_task(task).needs_image
        if needs and image is None:
            raise ValueError(f"the {task} task needs an image; connect one to 'image'")
        codes = encode_inputs(tokenizer, image, target, seed) if needs else []
        conv = (conversation or Conversation()).add_user(message, tuple(codes))
        prompt = pipeline.task_prompt(tokenizer, conv.turns, conv.images)
        return io.NodeOutput(PromptTokens(prompt.ids, None, width if task in ("text_to_image", "multiview") else 0,
                                          height if task in ("text_to_image", "multiview") else 0, message))


class LuminaMGPTDecodeResponse(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTDecodeResponse", display_name="Lumina-mGPT Decode Response", category=CATEGORY,
            description="Splits a sampler output into its text and its images.",
            inputs=[LuminaTokenizer.Input("tokenizer", tooltip="The tokenizer bundle holding the VQGAN."),
                    LuminaTokens.Input("tokens", tooltip="From the Sampler.")],
            outputs=[io.String.Output(display_name="text"),
                     io.Image.Output(display_name="images", tooltip="All complete images (a black 64x64 image "
                                                                     "if there are none).")],
        )

    @classmethod
    def execute(cls, tokenizer: TokenizerBundle, tokens: TokenBatch):
        images = [engine_to_image(img) for img in pipeline.decode_batch(
            tokenizer, tokens, check_cancel=mm.throw_exception_if_processing_interrupted)]
        out = stack_images(images) if images else torch.zeros(1, 64, 64, 3)
        texts = tokens.texts or tuple(pipeline.conversation.split_response(list(s), tokenizer.text)[0]
                                      for s in tokens.sequences)
        return io.NodeOutput("\n".join(t.strip() for t in texts), out)
