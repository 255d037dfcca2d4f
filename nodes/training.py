"""Trainer, LoRA loader and LoRA merge nodes.

LoRA runs never copy the base weights: the adapter is trained on the loaded model, turned into per-weight
deltas, removed again, and the output model is a ComfyUI patcher clone with those deltas as patches (so
"Unload models" and offloading keep working). Full finetuning trains a copy.
"""

from __future__ import annotations

import copy
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from ..comfy_lumina_mgpt import codec, sizes, unirep
from ..comfy_lumina_mgpt.atomic import check_writable, claim_new_folder
from ..comfy_lumina_mgpt.checks import require
from ..comfy_lumina_mgpt.model.loading import save_model
from ..comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle
from ..comfy_lumina_mgpt.answers import sample_answers
from ..comfy_lumina_mgpt.sampling.settings import SamplerConfig
from ..comfy_lumina_mgpt.training import lora as lora_lib
from ..comfy_lumina_mgpt.training.config import LoraSettings, TrainConfig
from ..comfy_lumina_mgpt.training.data import prepare_dataset
from ..comfy_lumina_mgpt.training.loop import train
from ..comfy_lumina_mgpt.training.plot import loss_curve_image
from .convert import engine_to_image
from .folders import FOLDER, LORA_FOLDER, list_subfolders, resolve_subfolder
from .progress import pil_preview
from .sizes import sizes_for
from .types import LoadedModel, LuminaModel, LuminaTokenizer
from .validation import CheckedNode

CATEGORY = "Lumina-mGPT/training"


def dataset_path(text: str) -> Path:
    """Absolute, or relative to ComfyUI's input folder; ValueError if it is empty, the input folder itself, or
    does not exist."""
    require(dataset_problem(text))
    return _dataset_candidate(text)


def _dataset_candidate(text: str) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else Path(folder_paths.get_input_directory()) / path


def dataset_problem(text: str) -> str | None:
    if not text.strip():
        return ("widget 'dataset' is empty; name a folder of images with .txt captions or a conversation "
                ".json/.jsonl, absolute or relative to ComfyUI's input folder")
    path = _dataset_candidate(text).resolve()
    inputs = Path(folder_paths.get_input_directory()).resolve()
    if path == inputs or path in inputs.parents:
        return (f"widget 'dataset' {text!r} is (or holds) ComfyUI's whole input folder; put the training images "
                "in a sub-folder of it and name that")
    if not path.exists():
        return (f"dataset {text!r} not found (looked at {path}); give a folder of images with .txt captions or a "
                "conversation .json/.jsonl, absolute or relative to ComfyUI's input folder")
    return None


def folder_name_problem(name: str, what: str) -> str | None:
    if not name.strip() or "/" in name or "\\" in name or name.startswith("."):
        return f"{what} {name!r} must be a plain folder name (no slashes, not starting with '.')"
    return None


def output_folder(kind: str, name: str) -> Path:
    """Where a result named ``name`` goes: the existing folder of that name under any root of model folder
    ``kind`` (the one the loaders would find, so nothing is shadowed), else the first root."""
    roots = [Path(p) for p in folder_paths.get_folder_paths(kind)]
    for root in roots:
        if (root / name).exists() or (root / name).is_symlink():
            return root / name
    return roots[0] / name


def output_problem(kind: str, name: str, overwrite: bool, widget: str, what: str) -> str | None:
    """Why the result cannot be written to ``output_folder(kind, name)`` (None if it can)."""
    problem = folder_name_problem(name, f"widget '{widget}'")
    if problem is not None:
        return problem
    try:
        check_writable(output_folder(kind, name), overwrite, what)
    except ValueError as err:
        return f"widget '{widget}': {err}"
    return None


def validation_image(lm, bundle: TokenizerBundle, prompt: str, width: int, height: int) -> torch.Tensor:
    """Sample the validation prompt (seed 0) with the weights as they are now -> IMAGE ``[H, W, 3]`` in 0..1."""
    tokens = codec.text_to_image_prompt(bundle, prompt, width, height)
    grid = tokens.grid_for(bundle.patch)
    settings = SamplerConfig(cfg_scale=3.0, image_top_k=200, force_size=grid, force_images=1,
                             max_new_tokens=unirep.forced_images_tokens(grid))
    was_training = lm.training
    lm.eval()
    try:
        answers = sample_answers(lm, bundle, [list(tokens.ids)], settings, generator=torch.Generator(
            device=next(lm.parameters()).device).manual_seed(0))
    finally:
        lm.train(was_training)
    return engine_to_image(codec.decode_codes(bundle, answers.images[0][0]))[0]


class LuminaMGPTTrainer(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTTrainer", display_name="Lumina-mGPT Trainer", category=CATEGORY,
            is_experimental=True,
            description="Finetunes the model (LoRA or full) on a dataset, with live loss, validation previews "
                        "and checkpoints. Cancel saves a checkpoint. The trained model is usable at once.",
            inputs=[
                LuminaModel.Input("model", tooltip="The model to finetune (it is not modified)."),
                LuminaTokenizer.Input("tokenizer", tooltip="Its tokenizer bundle (encodes the images)."),
                io.String.Input("dataset", default="",
                                tooltip="A folder of images with same-name .txt captions, or a conversation "
                                        ".json/.jsonl; absolute or relative to ComfyUI's input folder."),
                io.Combo.Input("mode", options=["lora", "full"], default="lora",
                               tooltip="lora: small adapter on attention and MLP; full: every weight."),
                io.Int.Input("steps", default=500, min=1, max=1_000_000, tooltip="Optimizer steps."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-6, round=1e-7,
                               tooltip="Peak learning rate (2e-5 for full finetuning, ~1e-4 for LoRA)."),
                io.Int.Input("batch_size", default=1, min=1, max=256, tooltip="Examples per step."),
                io.Int.Input("grad_accum", default=1, min=1, max=256,
                             tooltip="Micro-batches accumulated per optimizer step."),
                io.Int.Input("lora_rank", default=16, min=1, max=512, tooltip="LoRA rank (lora mode)."),
                io.Float.Input("lora_alpha", default=32.0, min=0.1, max=1024.0, step=0.1,
                               tooltip="LoRA alpha; the update is scaled by alpha / rank."),
                io.Combo.Input("target_size", options=["auto", "512", "768", "1024", "64"], default="auto",
                               tooltip="Resolution family images are fitted to. auto: the loaded model's own "
                                       "(768 for Lumina-mGPT-7B-768; 64 for lumina-mgpt-world and small models)."),
                io.Int.Input("save_every", default=100, min=1, max=1_000_000,
                             tooltip="Write a resumable checkpoint every N steps."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Seeds data order and dropout."),
                io.String.Input("output_name", default="my-finetune",
                                tooltip="Name of the result: models/lumina_mgpt_lora/<name> (LoRA) or "
                                        "models/lumina_mgpt/<name> (full)."),
                io.String.Input("validation_prompt", default="", optional=True,
                                tooltip="Sampled every validate_every steps and shown as a preview."),
                io.String.Input("validation_size", default="auto", optional=True,
                                tooltip="WxH of the validation image, a size the model draws; auto: the "
                                        "model's own size (64x48 for lumina-mgpt-world)."),
                io.Int.Input("validate_every", default=0, min=0, max=1_000_000, optional=True,
                             tooltip="0 = no validation previews."),
                io.Boolean.Input("overwrite", default=False, optional=True,
                                 tooltip="Off: an existing output_name folder is refused before training. On: "
                                         "its weights are replaced when the run ends; its other files (tokenizer, "
                                         "VQGAN, your own) are kept."),
            ],
            outputs=[LuminaModel.Output(display_name="model"), io.Image.Output(display_name="loss_curve"),
                     io.String.Output(display_name="summary")],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        if values.get("dataset") is not None:
            problem = dataset_problem(values["dataset"])
            if problem is not None:
                return problem
        if values.get("output_name") is not None and values.get("mode") is not None:
            kind = LORA_FOLDER if values["mode"] == "lora" else FOLDER
            return output_problem(kind, values["output_name"], bool(values.get("overwrite")), "output_name",
                                  "LoRA folder" if kind == LORA_FOLDER else "model folder")
        return None

    @classmethod
    def execute(cls, model: LoadedModel, tokenizer: TokenizerBundle, dataset: str, mode: str, steps: int,
                learning_rate: float, batch_size: int, grad_accum: int, lora_rank: int, lora_alpha: float,
                target_size: str, save_every: int, seed: int, output_name: str, validation_prompt: str = "",
                validation_size: str = "auto", validate_every: int = 0, overwrite: bool = False
                ) -> io.NodeOutput:
        source = dataset_path(dataset)
        model_sizes = sizes_for(model, tokenizer)
        val_w, val_h = (model_sizes.choose(sizes.AUTO) if validation_size.strip() in ("", sizes.AUTO) else
                        model_sizes.choose(sizes.CUSTOM, custom_size=validation_size))
        if target_size == "auto":
            target_size = str(model.layout.family or 64)
        # a new run folder per run: a second run of the same name never touches the first one's checkpoints
        run_dir = claim_new_folder(Path(folder_paths.get_output_directory()) / "lumina_mgpt_training", output_name)
        cfg = TrainConfig(lr=learning_rate, max_steps=steps, batch_size=batch_size, grad_accum=grad_accum,
                          warmup_steps=min(100, steps // 10), save_every=save_every, seed=seed,
                          target_size=int(target_size), output_dir=str(run_dir),
                          lora=LoraSettings(rank=lora_rank, alpha=lora_alpha) if mode == "lora" else None)
        mm.load_models_gpu([model.patcher])
        base = model.patcher.model
        lm = base if mode == "lora" else copy.deepcopy(base)
        data, report = prepare_dataset(source, tokenizer, run_dir / "cache", target_size=cfg.target_size,
                                       seed=seed, max_seq_len=cfg.max_seq_len,
                                       check_cancel=mm.throw_exception_if_processing_interrupted)
        if len(data) == 0:
            raise ValueError(f"no usable examples in {source} ({report.summary()})")
        pbar = comfy.utils.ProgressBar(steps)

        def on_step(step: int, total: int, metrics: dict) -> None:
            if mm.processing_interrupted():
                return  # ComfyUI's progress hook would raise now; let the trainer save a checkpoint first
            preview = None
            if validate_every and validation_prompt.strip() and step % validate_every == 0:
                preview = pil_preview(validation_image(lm, tokenizer, validation_prompt, val_w, val_h))
            pbar.update_absolute(step, total, preview)

        with torch.inference_mode(False), torch.enable_grad():
            try:
                result = train(lm, data, cfg, on_step=on_step, should_stop=mm.processing_interrupted)
                out = cls.finish(model, result, mode, cfg, output_name, overwrite)
            finally:
                if mode == "lora" and lora_lib.has_lora(base):
                    lora_lib.unload_lora(base)  # the input model stays as it was
                mm.soft_empty_cache()
        mm.throw_exception_if_processing_interrupted()  # cancelled: checkpoint written, end as interrupted
        losses = [h["loss"] for h in result.history]
        summary = (f"{mode} finetune '{output_name}': {result.step} steps on {len(data)} examples "
                   f"({report.summary()}); loss {losses[0]:.4f} -> {losses[-1]:.4f}; "
                   f"checkpoint {result.last_checkpoint}; run folder {run_dir}")
        curve = torch.from_numpy(np.asarray(loss_curve_image(result.history), dtype=np.float32) / 255.0)[None]
        return io.NodeOutput(out, curve, summary)

    @staticmethod
    def finish(model: LoadedModel, result, mode: str, cfg: TrainConfig, name: str, overwrite: bool
               ) -> LoadedModel:
        """Save the result where the loaders find it and wrap it for ComfyUI."""
        if mode == "lora":
            folder = output_folder(LORA_FOLDER, name)
            lora_lib.save_lora(result.model, cfg.lora, folder, overwrite=overwrite)
            patcher = model.patcher.clone()
            patcher.add_patches({k: (v,) for k, v in lora_lib.lora_weight_deltas(folder).items()}, 1.0)
            return LoadedModel(patcher, f"{model.name}+{name}", model.dtype_name, model.layout)
        folder = output_folder(FOLDER, name)
        save_model(result.model, folder, dtype=next(model.patcher.model.parameters()).dtype, overwrite=overwrite)
        patcher = comfy.model_patcher.ModelPatcher(result.model.eval(), load_device=model.patcher.load_device,
                                                   offload_device=model.patcher.offload_device)
        return LoadedModel(patcher, name, model.dtype_name, model.layout)


class LuminaMGPTLoraLoader(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTLoraLoader", display_name="Lumina-mGPT LoRA Loader", category="Lumina-mGPT/loaders",
            description="Applies a trained LoRA adapter (models/lumina_mgpt_lora/) to a model.",
            inputs=[
                LuminaModel.Input("model", tooltip="The base model."),
                io.Combo.Input("lora_name", options=list_subfolders(
                    LORA_FOLDER, lambda p: (p / "adapter_model.safetensors").is_file()),
                    tooltip="Adapter folder (adapter_model.safetensors + adapter_config.json)."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               tooltip="0 = base model, 1 = as trained."),
            ],
            outputs=[LuminaModel.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model: LoadedModel, lora_name: str, strength: float) -> io.NodeOutput:
        folder = resolve_subfolder(LORA_FOLDER, lora_name)
        shapes = {k: tuple(v.shape) for k, v in model.patcher.model.state_dict().items()}
        deltas = lora_lib.lora_weight_deltas(folder, weight_shapes=shapes)
        patcher = model.patcher.clone()
        applied = patcher.add_patches({k: (v,) for k, v in deltas.items()}, strength)
        if len(applied) != len(deltas):
            raise ValueError(f"{lora_name} adapts {len(deltas)} weights but only {len(applied)} exist in "
                             f"{model.name}; it was trained for another model")
        return io.NodeOutput(LoadedModel(patcher, f"{model.name}+{lora_name}", model.dtype_name, model.layout))


class LuminaMGPTSaveMerged(CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LuminaMGPTSaveMerged", display_name="Lumina-mGPT Save Merged Model", category=CATEGORY,
            is_output_node=True,
            description="Writes the model with its LoRA patches folded in, as a checkpoint folder in the "
                        "published layout under models/lumina_mgpt/.",
            inputs=[LuminaModel.Input("model", tooltip="A model, e.g. from the LoRA Loader or the Trainer."),
                    io.String.Input("name", default="merged", tooltip="Folder name under models/lumina_mgpt/."),
                    io.Boolean.Input("overwrite", default=False, optional=True,
                                     tooltip="Off: an existing folder of that name is refused. On: its weights "
                                             "are replaced; its other files (tokenizer, VQGAN, your own) are "
                                             "kept.")],
            outputs=[io.String.Output(display_name="path")],
        )

    @classmethod
    def value_problem(cls, values: dict) -> str | None:
        if values.get("name") is None:
            return None
        return output_problem(FOLDER, values["name"], bool(values.get("overwrite")), "name", "model folder")

    @classmethod
    def execute(cls, model: LoadedModel, name: str, overwrite: bool = False) -> io.NodeOutput:
        mm.load_models_gpu([model.patcher], force_full_load=True)  # patches are applied while loaded
        folder = output_folder(FOLDER, name)
        save_model(model.patcher.model, folder, overwrite=overwrite)
        return io.NodeOutput(str(folder))
