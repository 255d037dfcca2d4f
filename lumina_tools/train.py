"""``python -m lumina_tools train --config train.yaml``: finetune from a YAML file.

The YAML holds ``TrainConfig`` keys (see ``docs/train_example.yaml``); at least ``model_dir``, ``data`` and
``output_dir``. Several processes: ``accelerate launch [--config_file docs/accelerate_fsdp.yaml] -m
lumina_tools train --config train.yaml`` (see ``distributed.py``).

What it writes under ``output_dir``: ``token_cache/`` (unless ``cache_dir`` is set), ``step-*/`` checkpoints,
``lora/`` (the adapter, LoRA runs), ``model/`` (a complete model folder with tokenizer and VQGAN files: full
finetunes, or LoRA runs with ``save_merged: true``), ``history.json`` and ``loss.png``. An ``output_dir`` that
already holds a run is refused unless ``--resume`` continues it or ``--overwrite`` moves its results aside.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from comfy_lumina_mgpt.atomic import atomic_folder, claim_new_folder
from comfy_lumina_mgpt.training.checkpoint import STEP_DIR
from comfy_lumina_mgpt.training.config import TrainConfig

logger = logging.getLogger(__name__)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """The YAML config with ``KEY=VALUE`` overrides applied; checks the keys the command line needs."""
    cfg = TrainConfig.from_yaml(path)
    if overrides:
        merged = cfg.to_dict()
        merged.update(_overrides(overrides))
        cfg = TrainConfig.from_dict(merged)
    missing = [k for k in ("model_dir", "data", "output_dir") if not getattr(cfg, k)]
    if missing:
        raise ValueError(f"{path} must set {missing} (the model folder, the data source, where to write)")
    return cfg


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


RUN_RESULTS = ("lora", "model", "history.json", "loss.png")  # besides step-* folders


def run_results(out: Path) -> list[Path]:
    """What an earlier run left in ``out``: checkpoints and exports (a token cache alone is no run)."""
    if not out.is_dir():
        return []
    return [p for p in sorted(out.iterdir()) if p.name in RUN_RESULTS or STEP_DIR.fullmatch(p.name)]


def prepare_output_dir(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to start a fresh run over an earlier one unless ``overwrite``; then its results are moved into
    ``out/replaced-<time>/`` (kept, not deleted). Returns that folder, or None when nothing was moved."""
    earlier = run_results(out)
    if resume or not earlier:
        return None
    if not overwrite:
        names = ", ".join(p.name for p in earlier[:4]) + (" ..." if len(earlier) > 4 else "")
        raise ValueError(f"output_dir {out} already holds a run ({names}); pass --resume to continue it, "
                         "--overwrite to start afresh (its results are moved to a replaced-* folder), or set "
                         "another output_dir")
    aside = claim_new_folder(out, "replaced-" + time.strftime("%Y%m%d-%H%M%S"))
    for p in earlier:
        os.replace(p, aside / p.name)
    return aside


def _copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Tokenizer and VQGAN files next to the weights, so ``dst`` is a complete model folder."""
    from comfy_lumina_mgpt.tokenizer_bundle import TOKENIZER_FILES
    from comfy_lumina_mgpt.vqgan import find_vqgan_files

    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for f in find_vqgan_files(src):
        if f is not None and Path(f).is_file():
            shutil.copy2(f, dst / Path(f).name)


def _export(cfg: TrainConfig, result: Any, fsdp: bool, dtype: torch.dtype) -> list[Path]:
    """Write ``lora/`` and/or ``model/`` from the trained model (or, under FSDP, from the last checkpoint);
    full weights in ``dtype`` (the dtype the model was loaded in)."""
    from comfy_lumina_mgpt.model.loading import is_weights_file, load_model, write_model_files
    from comfy_lumina_mgpt.training.lora import load_lora, merge_lora, save_lora

    out = Path(cfg.output_dir)
    src = Path(cfg.tokenizer_dir or cfg.model_dir)
    written = []
    model = result.model
    if cfg.lora is not None:
        if fsdp:
            model = load_lora(load_model(cfg.model_dir, dtype=dtype), result.last_checkpoint)
        # overwrite: prepare_output_dir let this run in (fresh, resumed or --overwrite) before training
        written.append(save_lora(model, cfg.lora, out / "lora", overwrite=True))
        if not cfg.save_merged:
            return written
        model = merge_lora(model)
    elif fsdp:
        model = load_model(result.last_checkpoint, dtype=dtype)
    with atomic_folder(out / "model", overwrite=True, replaces=is_weights_file, what="model folder") as tmp:
        write_model_files(model, tmp, dtype=dtype)
        _copy_tokenizer_files(src, tmp)
    written.append(out / "model")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumina_tools train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="YAML file of TrainConfig keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (YAML value), e.g. --set max_steps=10")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from a step-* folder, or from the newest one in output_dir")
    parser.add_argument("--pretokenize-only", action="store_true", help="fill the token cache and stop")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in an output_dir that holds an earlier run (its checkpoints and "
                             "exports are moved to output_dir/replaced-*/, nothing is deleted)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from comfy_lumina_mgpt.model.loading import load_model
    from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
    from comfy_lumina_mgpt.training import distributed as dist
    from comfy_lumina_mgpt.training.data import prepare_dataset
    from comfy_lumina_mgpt.training.loop import train
    from comfy_lumina_mgpt.training.plot import loss_curve_image

    try:
        cfg = load_config(args.config, args.overrides)
        # one process decides (before the accelerator exists); if it refuses, the launcher stops the others
        if not args.pretokenize_only and int(os.environ.get("RANK", "0")) == 0:
            aside = prepare_output_dir(Path(cfg.output_dir), args.resume is not None, args.overwrite)
            if aside is not None:
                print(f"--overwrite: the earlier run's results were moved to {aside}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    accelerator = dist.make_accelerator(cfg) if dist.launched_world_size() > 1 else None
    rank, world = dist.rank_and_world(accelerator)
    main_process = dist.is_main(accelerator)
    device = accelerator.device if accelerator is not None else _device(cfg)

    bundle = load_tokenizer_bundle(cfg.tokenizer_dir or cfg.model_dir, device=device)
    dataset, report = prepare_dataset(cfg.data, bundle, cfg.token_cache_dir, target_size=cfg.target_size,
                                      seed=cfg.seed, max_seq_len=cfg.max_seq_len, rank=rank, world=world,
                                      barrier=lambda: dist.barrier(accelerator))
    bundle.vqgan.to("cpu")
    if main_process:
        print(f"data: {len(dataset)} examples; this process {report.summary()}; "
              f"{len(dataset.skipped)} skipped in total")
        for name, reason in dataset.skipped[:20]:
            print(f"  skipped {name}: {reason}")
    if args.pretokenize_only:
        return 0

    model = load_model(cfg.model_dir, dtype=cfg.model_dtype, device="cpu" if accelerator else device)
    bundle.check_model_vocab(model.config.vocab_size)
    dtype = next(model.parameters()).dtype
    try:
        result = train(model, dataset, cfg, accelerator=accelerator, resume_from=args.resume)
    except ValueError as err:  # a run that went non-finite, or no usable checkpoint to resume from
        print(f"error: {err}", file=sys.stderr)
        return 2
    if main_process:
        out = Path(cfg.output_dir)
        written = _export(cfg, result, dist.is_fsdp(accelerator), dtype)
        (out / "history.json").write_text(json.dumps(result.history, indent=1), encoding="utf-8")
        loss_curve_image(result.history).save(out / "loss.png")
        last = result.history[-1] if result.history else {}
        loss = last.get("loss", float("nan"))
        print(f"trained to step {result.step}/{cfg.max_steps}; last loss {loss:.4f}; "
              f"checkpoint {result.last_checkpoint}; wrote {', '.join(map(str, written))}")
    dist.barrier(accelerator)
    if accelerator is not None:
        accelerator.end_training()
    return 0
