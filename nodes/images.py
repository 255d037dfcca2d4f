"""VQ decode (tokens -> IMAGE) and VQ encode (IMAGE -> tokens)."""

from __future__ import annotations

import comfy.model_management as mm
from comfy_api.latest import io

from ..comfy_lumina_mgpt import unirep
from ..comfy_lumina_mgpt.codec import TokenBatch, encode_images
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from .convert import image_to_pil
from .generation import decode_to_image
from .types import LuminaTokenizer, LuminaTokens
from .validation import CheckedNode

TARGETS = ["512", "768", "1024", "native"]


def target_size(choice: str) -> int | None:
    """The crop-list target 512/768/1024, or None for ``native``: the image's own size on the patch grid."""
    return None if choice == "native" else int(choice)


class LuminaMGPTVQDecode(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTVQDecode",
            display_name="Lumina-mGPT VQ Decode",
            category="Lumina-mGPT/image",
            description="Turns the image tokens of a sampler output into images.",
            inputs=[
                LuminaTokenizer.Input("tokenizer", tooltip="The tokenizer bundle holding the VQGAN."),
                LuminaTokens.Input("tokens", tooltip="From the sampler (every complete image is decoded)."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, tokenizer: TokenizerBundle, tokens: TokenBatch) -> io.NodeOutput:
        return io.NodeOutput(decode_to_image(tokenizer, tokens))


class LuminaMGPTVQEncode(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTVQEncode",
            display_name="Lumina-mGPT VQ Encode",
            category="Lumina-mGPT/image",
            description="Fits images to the model's candidate sizes (as the official preprocessing does) and "
                        "turns them into image tokens.",
            inputs=[
                LuminaTokenizer.Input("tokenizer", tooltip="The tokenizer bundle holding the VQGAN."),
                io.Image.Input("image", tooltip="Images to encode (each is fitted separately)."),
                io.Combo.Input("target", options=TARGETS, default="native",
                               tooltip="native: the image's own size on the tokenizer's patch grid (right for "
                                       "every model). 512/768/1024: fit to that official candidate list, as "
                                       "the official preprocessing does for those checkpoints."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seeds the random crop offset, as the official preprocessing does."),
            ],
            outputs=[LuminaTokens.Output(display_name="tokens")],
        )

    @classmethod
    def execute(cls, tokenizer: TokenizerBundle, image, target: str, seed: int) -> io.NodeOutput:
        pil_images = image_to_pil(image)
        size = target_size(target)
        codes = encode_images(tokenizer, pil_images, size, seed,
                              check_cancel=mm.throw_exception_if_processing_interrupted)
        blocks = tuple(tuple(unirep.image_block(c, tokenizer.vocab)) for c in codes)
        return io.NodeOutput(TokenBatch(blocks))
