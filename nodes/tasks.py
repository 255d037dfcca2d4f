"""Omni-SFT task nodes: editing, dense prediction, detection, condition-to-image, multiview, chat.

Image batches are answered picture by picture (one generation each, one progress bar over all of them);
the nodes that answer with text take one picture and refuse a batch.
"""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..comfy_lumina_mgpt import codec, conversation, unirep
from ..comfy_lumina_mgpt.answers import Answer, detect_box
from ..comfy_lumina_mgpt.conversation import Conversation
from ..comfy_lumina_mgpt.codec import PromptTokens, TokenBatch
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from ..comfy_lumina_mgpt.tasks import (DENSE_PREDICTION_TASKS, OMNI_CFG, OMNI_IMAGE_TOP_K, OMNI_TEXT_TOP_K, get_task,
                                       user_message)
from .convert import engine_to_image, image_to_pil, stack_images
from .generation import (EXAMPLE_PROMPT, SamplingWidgets, answer_turn, decode_images, sampler_inputs, size_problem)
from .images import target_size
from .progress import JobProgress
from .sizes import size_inputs, sizes_for
from .types import (LoadedModel, LuminaConversation, LuminaModel, LuminaPrompt, LuminaTokenizer, LuminaTokens,
                    SizedPrompt)
from .validation import CheckedNode

CATEGORY = "Lumina-mGPT/tasks"
TASK_CHOICES = ["text_to_image", *DENSE_PREDICTION_TASKS, "detection", "editing", "condition_to_image",
                "multiview", "caption", "vqa", "chat"]
FIT_CHOICES = ["auto", "512", "768", "1024", "native"]


def common_inputs(needs_image: bool = True) -> list:
    image = [io.Image.Input("image", tooltip="The input picture, fitted to the model's sizes, then VQ-encoded. "
                                             "A batch is answered picture by picture.")] if needs_image else []
    return [
        LuminaModel.Input("model", tooltip="An Omni-SFT checkpoint (e.g. Lumina-mGPT-7B-768-Omni) or the bundled "
                                           "model."),
        LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
        *image,
    ]


def image_options() -> list:
    return [io.Combo.Input("target", options=FIT_CHOICES, default="auto",
                           tooltip="Size the input picture is fitted to. auto: the loaded model's nearest size "
                                   "of the picture's shape (the official candidate list for Lumina-mGPT "
                                   "checkpoints, the canvas sizes for lumina-mgpt-world). 512/768/1024: that "
                                   "official list. native: the picture's own size on the patch grid.")]


def omni_sampler_inputs() -> list:
    return sampler_inputs(cfg=OMNI_CFG, image_top_k=OMNI_IMAGE_TOP_K, text_top_k=OMNI_TEXT_TOP_K,
                          max_new_tokens=5000)


def history_input() -> list:
    return [LuminaConversation.Input("conversation", optional=True,
                                     tooltip="Earlier turns (from another task or chat node) to continue.")]


def same_size(codes: torch.Tensor) -> tuple[int, int]:
    """Size tokens of an input image's codes ``[h_lat, w_lat]``: image-to-image answers keep its size."""
    h_lat, w_lat = codes.shape
    return h_lat // 2, w_lat // 2


def encode_inputs(model: LoadedModel, tokenizer: TokenizerBundle, image: torch.Tensor, target: str, seed: int
                  ) -> list[torch.Tensor]:
    """Every picture of an IMAGE batch fitted to the model (``target``) and encoded -> codes ``[h, w]`` each."""
    pil = image_to_pil(image)
    cancel = mm.throw_exception_if_processing_interrupted
    if target == "auto":
        return codec.encode_images(tokenizer, pil, None, seed, sizes_for(model, tokenizer).fit_candidates(),
                                      check_cancel=cancel)
    return codec.encode_images(tokenizer, pil, target_size(target), seed, check_cancel=cancel)


def one_picture(image: torch.Tensor | None, node: str) -> None:
    if image is not None and image.shape[0] > 1:
        raise ValueError(f"{node} answers about one picture; the IMAGE input is a batch of {image.shape[0]}. "
                         "Pick one (e.g. ComfyUI's 'Get Image from Batch') or use one node per picture.")


def answer_images(tokenizer: TokenizerBundle, ans: Answer) -> torch.Tensor:
    if not ans.images:
        raise ValueError(f"the model answered without an image ({ans.text[:200]!r}); raise max_new_tokens or "
                         "use an Omni checkpoint")
    return decode_images(tokenizer, list(ans.images))


def image_to_image(model: LoadedModel, tokenizer: TokenizerBundle, image: torch.Tensor, target: str,
                   widgets: SamplingWidgets, message: str, label: str = "picture",
                   history: Conversation | None = None) -> tuple[list[torch.Tensor], list[Answer], torch.Tensor]:
    """The body every image-in, image-out task shares: each picture of the batch fitted and encoded, answered
    with one image of its own size (``message`` with the picture), decoded. Returns the input codes, the
    answers and the answer images ``[B, H, W, 3]`` (resized to the first one's size)."""
    codes = encode_inputs(model, tokenizer, image, target, widgets.seed)
    progress = JobProgress(len(codes), label)
    answers = [answer_turn(model, tokenizer, message, [c], widgets, progress, i, history, force_images=1,
                           force_size=same_size(c)) for i, c in enumerate(codes)]
    images = stack_images([answer_images(tokenizer, a)[:1] for a in answers])
    progress.finish(images[-1])
    return codes, answers, images


class LuminaMGPTImageEdit(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTImageEdit", display_name="Lumina-mGPT Image Edit", category=CATEGORY,
            description="Edits an image by a written instruction. Chain nodes through 'conversation' for "
                        "multi-turn editing.",
            inputs=[*common_inputs(),
                    io.String.Input("instruction", multiline=True, default="Change the red square to green.",
                                    tooltip="What to change, e.g. 'Make the sky red.'"),
                    *image_options(), *omni_sampler_inputs(), *history_input()],
            outputs=[io.Image.Output(display_name="image"), LuminaConversation.Output(display_name="conversation")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, instruction: str, target: str, conversation=None, **widgets):
        message = user_message("editing", instruction)
        _, answers, images = image_to_image(model, tokenizer, image, target, SamplingWidgets(**widgets), message,
                                            history=conversation)
        return io.NodeOutput(images, answers[-1].conversation)


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
    def execute(cls, model, tokenizer, image, task: str, target: str, **widgets):
        _, _, maps = image_to_image(model, tokenizer, image, target, SamplingWidgets(**widgets), user_message(task))
        return io.NodeOutput(maps, maps.mean(dim=-1))


class LuminaMGPTDetect(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTDetect", display_name="Lumina-mGPT Detect", category=CATEGORY,
            description="'Detect: <object>': the model draws the object's box on the image; the box is also "
                        "returned as a mask when it can be found.",
            inputs=[*common_inputs(), io.String.Input("object", default="red square",
                                                      tooltip="What to find, e.g. 'the red car'."),
                    *image_options(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="image"),
                     io.Mask.Output(display_name="box_mask", tooltip="1 inside the detected box (empty if none)."),
                     io.String.Output(display_name="box", tooltip="x0,y0,x1,y1 in pixels of the output image, "
                                                                   "or empty; one line per picture.")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, object: str, target: str, **widgets):  # noqa: A002 (UI name)
        codes, _, out = image_to_image(model, tokenizer, image, target, SamplingWidgets(**widgets),
                                       user_message("detection", object))
        mask = torch.zeros(out.shape[:3])
        boxes = []
        for i, c in enumerate(codes):
            before = codec.decode_codes(tokenizer, c)[0].cpu()
            after = out[i].permute(2, 0, 1) * 2 - 1
            box = detect_box(before, after)
            if box is not None:
                x0, y0, x1, y1 = box
                mask[i, y0:y1, x0:x1] = 1.0
            boxes.append(",".join(map(str, box)) if box else "")
        return io.NodeOutput(out, mask, "\n".join(boxes))


class LuminaMGPTConditionToImage(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTConditionToImage", display_name="Lumina-mGPT Condition to Image",
            category=CATEGORY,
            description="Generates an image from a condition map (depth, pose, segmentation, normals) and a "
                        "caption.",
            inputs=[*common_inputs(), io.String.Input("caption", multiline=True, default=EXAMPLE_PROMPT,
                                                      tooltip="What the image shows."),
                    *image_options(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, model, tokenizer, image, caption: str, target: str, **widgets):
        _, _, images = image_to_image(model, tokenizer, image, target, SamplingWidgets(**widgets),
                                      user_message("condition_to_image", caption), label="map")
        return io.NodeOutput(images)


class LuminaMGPTMultiview(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTMultiview", display_name="Lumina-mGPT Multiview", category=CATEGORY,
            description="Several views of one object turning around it, as an image batch (our own prompt "
                        "wording, trained into the bundled model; see README).",
            inputs=[*common_inputs(needs_image=False),
                    io.String.Input("caption", multiline=True, default="a green triangle", tooltip="The object."),
                    io.Int.Input("views", default=4, min=1, max=16, tooltip="Number of views (images) to render."),
                    *size_inputs(), *omni_sampler_inputs()],
            outputs=[io.Image.Output(display_name="views")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        return size_problem(cls.hidden.unique_id, values)

    @classmethod
    def execute(cls, model, tokenizer, caption: str, views: int, resolution: str, scale: float = 1.0,
                custom_size: str = "", **widgets):
        if views < 1:
            raise ValueError("views must be at least 1")
        width, height = sizes_for(model, tokenizer).choose(resolution, scale, custom_size)
        message = user_message("multiview", caption, views=views, width=width, height=height)
        size_tokens = unirep.grid_size(width, height, tokenizer.patch)
        # Every view is forced right after the previous one, so the job's length is known: views blocks + the end.
        progress = JobProgress(label="views", exact_total=unirep.forced_images_tokens(size_tokens, views))
        ans = answer_turn(model, tokenizer, message, [], SamplingWidgets(**widgets), progress, force_images=views,
                          force_size=size_tokens)
        images = answer_images(tokenizer, ans)
        progress.finish(images[-1])
        return io.NodeOutput(images)


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
                    io.Image.Input("image", optional=True, tooltip="Optional picture the message is about (one "
                                                                   "picture, not a batch)."),
                    *image_options(), *omni_sampler_inputs(), *history_input()],
            outputs=[io.String.Output(display_name="answer"), LuminaConversation.Output(display_name="conversation"),
                     io.Image.Output(display_name="images", tooltip="Images in the answer, if any (else the "
                                                                     "input image).")],
        )

    @classmethod
    def execute(cls, model, tokenizer, message: str, target: str, image=None, conversation=None, **widgets):
        sampling = SamplingWidgets(**widgets)
        one_picture(image, "Chat")
        text = user_message("chat", message)  # checked before any picture is encoded
        codes = encode_inputs(model, tokenizer, image, target, sampling.seed) if image is not None else []
        if codes:
            text = user_message("vqa", message)
        progress = JobProgress(label="answer")
        ans = answer_turn(model, tokenizer, text, codes, sampling, progress, 0, conversation)
        shown = answer_images(tokenizer, ans) if ans.images else (image if image is not None else
                                                                  torch.zeros(1, 64, 64, 3))
        progress.finish(shown[-1] if ans.images else None)
        return io.NodeOutput(ans.text.strip(), ans.conversation, shown)


class LuminaMGPTTaskPrompt(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTTaskPrompt", display_name="Lumina-mGPT Task Prompt", category=CATEGORY,
            description="Builds the exact prompt of any task for the generic Sampler. Sizes (text_to_image, "
                        "multiview) and the input picture's fit follow the model the Sampler uses.",
            inputs=[LuminaTokenizer.Input("tokenizer", tooltip="From the Lumina-mGPT Tokenizer Loader."),
                    io.Combo.Input("task", options=TASK_CHOICES, default="depth", tooltip="Which task."),
                    io.String.Input("text", multiline=True, default="",
                                    tooltip="Prompt, instruction, object or question (unused by map tasks)."),
                    io.Image.Input("image", optional=True, tooltip="Input picture (one), for tasks that take one."),
                    *size_inputs(),
                    io.Int.Input("views", default=4, min=1, max=16, tooltip="Multiview only."),
                    *image_options(),
                    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seeds the crop."),
                    *history_input()],
            outputs=[LuminaPrompt.Output(display_name="prompt")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        return size_problem(cls.hidden.unique_id, values)

    @classmethod
    def execute(cls, tokenizer, task: str, text: str, resolution: str, views: int, target: str, seed: int,
                scale: float = 1.0, custom_size: str = "", image=None, conversation=None):
        needs = get_task(task).needs_image
        if needs and image is None:
            raise ValueError(f"the {task} task needs an image; connect one to 'image'")
        one_picture(image, "Task Prompt")
        sized = task in ("text_to_image", "multiview")
        pil = image_to_pil(image) if needs else []

        def build(width: int, height: int, candidates: list[tuple[int, int]] | None) -> PromptTokens:
            message = user_message(task, text, width=width, height=height, views=views)
            if target == "auto":  # the model's candidate sizes (None: the picture's own size)
                codes = codec.encode_images(tokenizer, pil, None, seed, candidates) if pil else []
            else:
                codes = codec.encode_images(tokenizer, pil, target_size(target), seed) if pil else []
            conv = (conversation or Conversation()).add_user(message, tuple(codes))
            prompt = codec.task_prompt(tokenizer, conv.turns, conv.images)
            return PromptTokens(prompt.ids, None, width, height, message)

        return io.NodeOutput(SizedPrompt(build, resolution, scale, custom_size, sized=sized))


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
        images = [engine_to_image(img) for img in codec.decode_batch(
            tokenizer, tokens, check_cancel=mm.throw_exception_if_processing_interrupted)]
        out = stack_images(images) if images else torch.zeros(1, 64, 64, 3)
        texts = tokens.texts or tuple(conversation.split_response(list(s), tokenizer.text)[0]
                                      for s in tokens.sequences)
        return io.NodeOutput("\n".join(t.strip() for t in texts), out)
