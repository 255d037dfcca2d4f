"""ComfyUI V3 entry point: the extension and its node list."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .folders import register_folders
from .examples import LuminaMGPTExampleDataset, LuminaMGPTExampleImage
from .images import LuminaMGPTVQDecode, LuminaMGPTVQEncode
from .loaders import LuminaMGPTModelLoader, LuminaMGPTTokenizerLoader
from .sizes import install_graph_hook
from .sampling import LuminaMGPTPrompt, LuminaMGPTSampler, LuminaMGPTTextToImage
from .training import LuminaMGPTLoraLoader, LuminaMGPTSaveMerged, LuminaMGPTTrainer
from .tasks import (LuminaMGPTChat, LuminaMGPTConditionToImage, LuminaMGPTDecodeResponse, LuminaMGPTDensePrediction,
                    LuminaMGPTDetect, LuminaMGPTImageEdit, LuminaMGPTMultiview, LuminaMGPTTaskPrompt)

NODES: list[type[io.ComfyNode]] = [
    LuminaMGPTModelLoader,
    LuminaMGPTTokenizerLoader,
    LuminaMGPTPrompt,
    LuminaMGPTSampler,
    LuminaMGPTTextToImage,
    LuminaMGPTVQDecode,
    LuminaMGPTVQEncode,
    LuminaMGPTExampleImage,
    LuminaMGPTImageEdit,
    LuminaMGPTDensePrediction,
    LuminaMGPTDetect,
    LuminaMGPTConditionToImage,
    LuminaMGPTMultiview,
    LuminaMGPTChat,
    LuminaMGPTTaskPrompt,
    LuminaMGPTDecodeResponse,
    LuminaMGPTExampleDataset,
    LuminaMGPTTrainer,
    LuminaMGPTLoraLoader,
    LuminaMGPTSaveMerged,
]


class LuminaMGPTExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI 0.3.75 never calls on_load; the schemas (folder dropdowns) are built right after this.
        register_folders()
        install_graph_hook()  # lets validate_inputs check sizes against the model the graph loads
        return NODES


async def comfy_entrypoint() -> LuminaMGPTExtension:
    return LuminaMGPTExtension()
