"""Loader nodes: the decoder checkpoint and the tokenizer bundle (text tokenizer + VQGAN)."""

from __future__ import annotations

import weakref

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths
from comfy_api.latest import io

from ..comfy_lumina_mgpt import download
from ..comfy_lumina_mgpt.model.loading import load_model
from ..comfy_lumina_mgpt.model.quant import QUANT_MODES, check_quant_supported
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle, has_tokenizer, has_vqgan, load_tokenizer_bundle
from ..comfy_lumina_mgpt.sizes import read_layout
from .convert import torch_dtype
from .folders import FOLDER, VQ_FOLDER, list_subfolders, resolve_subfolder
from .progress import DownloadProgress
from .types import LoadedModel, LuminaModel, LuminaTokenizer
from .validation import CheckedNode

SAME_FOLDER = "(same as tokenizer)"
BUNDLED_MODEL = "lumina-mgpt-world"
TOKENIZER_RELEASE = download.RELEASES["tokenizer"]
TOKENIZER_CHOICE = f"{FOLDER}/{TOKENIZER_RELEASE.folder}"


def _model_folders() -> list[str]:
    return list_subfolders(FOLDER, lambda p: (p / "config.json").is_file())


def _model_choices() -> tuple[list[str], str | None]:
    """The folders on disk, then the official checkpoints not yet downloaded (fetched on first run); the
    default is a folder on disk (the bundled model when present), so a fresh node never starts a download."""
    local = _model_folders()
    remote = [name for name in download.MODEL_RELEASES if name not in local]
    default = BUNDLED_MODEL if BUNDLED_MODEL in local else (local[0] if local else None)
    return local + remote, default


def _tokenizer_folders() -> list[str]:
    return [f"{FOLDER}/{d}" for d in list_subfolders(FOLDER, has_tokenizer)] + \
        [f"{VQ_FOLDER}/{d}" for d in list_subfolders(VQ_FOLDER, has_tokenizer)]


def _tokenizer_choices() -> list[str]:
    local = _tokenizer_folders()
    return local + ([] if TOKENIZER_CHOICE in local else [TOKENIZER_CHOICE])


def _download_on_first_use(release_name: str, what: str) -> None:
    """Fetch an official release into ComfyUI's models folder with a progress bar; Cancel stops it between
    chunks and the next run resumes."""
    release = download.RELEASES[release_name]
    if download.hub_offline():
        raise ValueError(f"{what} is not on disk and HF_HUB_OFFLINE is set, so it cannot be downloaded; unset "
                         f"HF_HUB_OFFLINE, or put the files of {release.repo_id} into models/{release.kind}/"
                         f"{release.folder}/")
    progress = DownloadProgress(f"{release_name} from {release.repo_id}")
    try:
        download.fetch(release_name, folder_paths.models_dir, progress=progress.update,
                       should_stop=mm.processing_interrupted)
    except download.DownloadCancelled:
        mm.throw_exception_if_processing_interrupted()
        raise
    except download.DownloadError as err:
        raise ValueError(f"downloading {release_name}: {err}") from err


def _vqgan_folders() -> list[str]:
    return [f"{FOLDER}/{d}" for d in list_subfolders(FOLDER, has_vqgan)] + \
        [f"{VQ_FOLDER}/{d}" for d in list_subfolders(VQ_FOLDER, has_vqgan)]


def _resolve(choice: str):
    root, _, rel = choice.partition("/")
    if root not in (FOLDER, VQ_FOLDER) or not rel:
        raise ValueError(f"{choice!r} is not a folder under models/{FOLDER} or models/{VQ_FOLDER}")
    return resolve_subfolder(root, rel)


class LuminaMGPTModelLoader(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices, default = _model_choices()
        return io.Schema(
            node_id="LuminaMGPTModelLoader",
            display_name="Lumina-mGPT Model Loader",
            category="Lumina-mGPT/loaders",
            description="Loads a Lumina-mGPT checkpoint folder (config.json + safetensors) from "
                        "models/lumina_mgpt/; an official checkpoint not yet there is downloaded on first run.",
            inputs=[
                io.Combo.Input("model_name", options=choices, default=default,
                               tooltip="Checkpoint folder under models/lumina_mgpt/. The official names listed "
                                       "after the folders on disk (Lumina-mGPT-7B-768, -7B-768-Omni, ...) are "
                                       "downloaded from the Hugging Face hub into that folder when the graph "
                                       "first runs (14 GB each for the 7B; resumable, checked)."),
                io.Combo.Input("dtype", options=["auto", "bf16", "fp16", "fp32"], default="auto",
                               tooltip="Weight precision. auto: bf16 (or fp16) on a GPU, fp32 on the CPU."),
                io.Combo.Input("quant", options=list(QUANT_MODES), default="none", optional=True,
                               tooltip="Weight-only quantization of the transformer layers and LM head while "
                                       "loading: int8 halves bf16's memory (and is faster on CPUs); fp8 "
                                       "also halves it but is a memory option only on CPUs. dtype stays the "
                                       "compute precision."),
            ],
            outputs=[LuminaModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name: str, dtype: str, quant: str = "none") -> io.NodeOutput:
        if model_name in download.MODEL_RELEASES and model_name not in _model_folders():
            _download_on_first_use(model_name, f"checkpoint {model_name}")
        folder = resolve_subfolder(FOLDER, model_name)
        load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
        check_quant_supported(quant, load_device)
        model = load_model(folder, dtype=torch_dtype(dtype, load_device), device=offload_device, quant=quant,
                           check_cancel=mm.throw_exception_if_processing_interrupted)
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        return io.NodeOutput(LoadedModel(patcher, model_name, dtype, read_layout(folder)))


class LuminaMGPTTokenizerLoader(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTTokenizerLoader",
            display_name="Lumina-mGPT Tokenizer Loader",
            category="Lumina-mGPT/loaders",
            description="Loads the text tokenizer (tokenizer.json or text_tokenizer.json) and the VQGAN "
                        "(vqgan.yaml + vqgan.safetensors or vqgan.ckpt).",
            inputs=[
                io.Combo.Input("tokenizer", options=_tokenizer_choices(),
                               tooltip="Folder with tokenizer.json (Lumina-mGPT-7B-768) or Meta's "
                                       "text_tokenizer.json, under models/lumina_mgpt/ or models/vq/. "
                                       f"{TOKENIZER_CHOICE}'s tokenizer files (9 MB) are downloaded on first "
                                       "run when they are not there."),
                io.Combo.Input("vqgan", options=[SAME_FOLDER, *_vqgan_folders()], default=SAME_FOLDER,
                               tooltip="Folder with vqgan.yaml and vqgan.safetensors/.ckpt (Meta's Chameleon "
                                       "tokenizer files)."),
            ],
            outputs=[LuminaTokenizer.Output(display_name="tokenizer")],
        )

    @classmethod
    def execute(cls, tokenizer: str, vqgan: str) -> io.NodeOutput:
        if tokenizer == TOKENIZER_CHOICE and tokenizer not in _tokenizer_folders():
            _download_on_first_use("tokenizer", f"tokenizer {tokenizer}")
        text_folder = _resolve(tokenizer)
        vq_folder = text_folder if vqgan == SAME_FOLDER else _resolve(vqgan)
        # Loaded on the CPU; sampling nodes hand it to ComfyUI's model management (vqgan_patcher), which moves
        # it to the compute device with the language model and back when memory is needed.
        return io.NodeOutput(load_tokenizer_bundle(text_folder, vq_folder, device="cpu"))


_VQ_PATCHERS: dict[int, comfy.model_patcher.ModelPatcher] = {}


def vqgan_patcher(bundle: TokenizerBundle) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher for the bundle's VQGAN (one per VQGAN, dropped when the VQGAN is freed), so previews and
    decoding run on ComfyUI's compute device and the VQGAN is offloaded like any other model."""
    key = id(bundle.vqgan)
    if key not in _VQ_PATCHERS:
        _VQ_PATCHERS[key] = comfy.model_patcher.ModelPatcher(
            bundle.vqgan, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
        weakref.finalize(bundle.vqgan, _VQ_PATCHERS.pop, key, None)
    return _VQ_PATCHERS[key]
