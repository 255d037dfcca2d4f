"""``python -m lumina_tools eval --suite world``: the quality benchmark on the synthetic world.

    python -m lumina_tools eval --suite world [--model DIR] [--json] [--n 100] [--n-omni 40] [--seed 0]

A fixed prompt set (scenes drawn from ``seed``, disjoint from the training scenes) and fixed sampling seeds;
every picture is read back by the deterministic pixel analyser (``world.analyser``), no learned judge.

Suites and their ``overall``:

* ``text_to_image`` (GenEval-style, 0/1 per prompt; prompts cycle through 1, 2, 3, 4 objects): single object,
  two objects, counting, colour attribution, position, size, aspect ratio (the model picks the size tokens
  from the ``WxH`` in the prompt: nothing is forced). ``overall`` = share of prompts with every sub-score
  except aspect ratio right (``score_text_to_image``).
* ``segmentation``: mean IoU over shape classes; ``overall`` = mean IoU.
* ``detection``: IoU of the drawn box with the true one; ``overall`` = mean IoU (``acc@0.5`` too;
  ``other_object``: share of boxes around another object of the scene instead; ``picture_kept``: share of
  answers whose picture, box aside, shows the objects the world's answer shows).
* ``depth``: share of surface pixels at the right layer (``depth_accuracy``; a surface in the truth or the
  prediction counts) and the mean absolute grey-level error in [0, 1]; ``overall`` = that share.
* ``normals``: mean angular error in degrees; ``overall`` = 1 - error / 90 (floored at 0).
* ``pose``: F1 of the stick figures' limb pixels, within 1 px (``pose_f1``); ``overall`` = that F1.
* ``editing``: F1 of the edited scene's objects; ``overall`` = accuracy (share of edits exactly right; also
  by kind: ``recolour_accuracy``, ``remove_accuracy``, ``move_accuracy``; ``unchanged``: share of answers
  that copy the input picture with no change).
* ``condition_to_image``: ``overall`` = share of pictures matching the caption's scene exactly.
* ``multiview``: share of frames showing the asked object; ``overall`` = that consistency.
* ``vqa``: ``overall`` = answer accuracy (also per question kind: colour, shape, count, position, size;
  ``position_other_object``: share of position questions answered with the place of another object).
* ``caption``: ``overall`` = share of captions naming exactly the scene's objects (``caption_matches``: in
  any order, except that overlapping objects must be named back to front).

Where the model folder has the world VQGAN's ``patch_alphabet.json`` (``world train`` writes it), each
image-answer suite also reports ``decoder_ceiling``: its ``overall`` had the language model written every
answer's exact codes (``decoder_ceilings``), which separates the decoder's errors from the model's.

Image answers of the Omni tasks are generated at the input picture's size (size tokens forced, as the nodes
do); a missing or unfinished image scores as wrong (IoU 0, error 1 / 90 degrees). Sampling is greedy by
default (``--image-top-k 1``) without guidance (``--cfg 1``; chosen on seed 1 from 1 / 1.5 / 2 / 3, where the
bundled model drew 1.00 / 0.99 / 0.92 / 0.73 of the prompts right): the world has one right picture per
prompt, and guidance only pushes greedy decoding off it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comfy_lumina_mgpt import conversation, unirep
from comfy_lumina_mgpt.codec import decode_codes, image_codes
from comfy_lumina_mgpt.tokenizer_bundle import TokenizerBundle, load_tokenizer_bundle
from comfy_lumina_mgpt.answers import sample_answers
from comfy_lumina_mgpt.sampling.settings import SamplerConfig
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.preprocess import to_pixels
from comfy_lumina_mgpt.tasks import IMAGE_PLACEHOLDER, TEXT_TO_IMAGE

from . import analyser, render, scene as world_scene
from .dataset import scene_examples
from .threads import torch_threads
from .vq_train import ALPHABET_FILE, encode_pil, load_alphabet, snap_codes

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "lumina_mgpt" / "lumina-mgpt-world"
OMNI_SUITES: tuple[str, ...] = ("segmentation", "detection", "depth", "normals", "pose", "editing",
                                "condition_to_image", "multiview", "vqa", "caption")
SUITES: tuple[str, ...] = ("text_to_image", *OMNI_SUITES)
#: The Omni suites whose answer is an image (the others answer in text).
IMAGE_ANSWER_SUITES: tuple[str, ...] = OMNI_SUITES[:-2]
#: Largest world canvas side in size-token steps (80 px / 16 px): caps the tokens one image may take.
MAX_WORLD_GRID = 5
#: What the bundled model promises on the default benchmark (seed 0, 100 / 40 prompts, greedy, cfg 1): the
#: ``overall`` each suite keeps: at or under what the shipped weights measure on benchmark seeds 0 to 4
#: (caption 0.925-0.975 against 0.85, editing 0.925-1.00 against 0.90; the eleven-cycle recipe's retrain with
#: seed 1 meets every level on benchmark seeds 0 and 1).
#: The README's table states them beside the retrain's figures; ``eval`` on the bundled model says which, if
#: any, are missed, and a test checks the shipped weights.
BUNDLED_LEVELS: dict[str, float] = {
    "text_to_image": 0.95, "pose": 0.95, "segmentation": 0.95, "multiview": 0.95, "normals": 0.90,
    "condition_to_image": 0.90, "depth": 0.90, "vqa": 0.90, "detection": 0.90, "caption": 0.85, "editing": 0.90,
}
#: Sub-scores the bundled model keeps besides each suite's ``overall`` (the other levels of issue 17 are
#: ``overall`` itself: editing's is its exact-edit share, detection's its IoU >= 0.5 share, depth's its
#: layer accuracy). A position question is about one in five of the questions, so ``vqa`` could meet its
#: level while every place is wrong.
BUNDLED_SUB_LEVELS: dict[tuple[str, str], float] = {("vqa", "position_accuracy"): 0.80}
T2I_SUBSCORES = ("single_object", "two_objects", "counting", "colour_attribution", "position", "size",
                 "aspect_ratio")


@dataclass(frozen=True)
class EvalSettings:
    """Sampling of the benchmark (fixed so numbers compare across runs)."""

    image_top_k: int = 1
    text_top_k: int = 1
    cfg_scale: float = 1.0
    batch: int = 64
    jacobi_window: int = 0


def _to_array(img: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8."""
    return to_pixels(img[0]).cpu().numpy()


def _encode(bundle: TokenizerBundle, images: Sequence[Image.Image]) -> list[torch.Tensor]:

    return encode_pil(bundle.vqgan, images)


def _max_tokens(images: int) -> int:
    return unirep.forced_images_tokens((MAX_WORLD_GRID, MAX_WORLD_GRID), images) + 7  # + a few text tokens


def _run_prompts(model, bundle: TokenizerBundle, prompts: list[list[int]], cfg: SamplerConfig,
                 force_sizes: Sequence[tuple[int, int] | None], seed: int, batch: int,
                 stats: dict[str, int] | None = None, group_by: Sequence[object] | None = None
                 ) -> list[list[int]]:
    """Generate for every prompt (batched by forced size, or by ``group_by``), ``torch.Generator`` seeded per
    batch. ``stats`` (if given) adds up the model passes (``forwards``) and the tokens (``steps``)."""
    out: list[list[int] | None] = [None] * len(prompts)
    groups: dict[object, list[int]] = {}
    for i, key in enumerate(group_by if group_by is not None else force_sizes):
        groups.setdefault(key, []).append(i)
    device = model.lm_head.weight.device
    for k, (_, idx) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            gen = torch.Generator(device=device).manual_seed(seed * 1000 + k * 100 + s)
            sizes = {force_sizes[i] for i in part}
            c = SamplerConfig(**{**cfg.__dict__, "force_size": sizes.pop() if len(sizes) == 1 else None})
            res = sample_answers(model, bundle, [prompts[i] for i in part], c, generator=gen)
            if stats is not None:
                stats["forwards"] = stats.get("forwards", 0) + res.forwards
                stats["steps"] = stats.get("steps", 0) + res.steps
            for i, toks in zip(part, res.tokens):
                out[i] = toks
    return [o or [] for o in out]


def _images_of(bundle: TokenizerBundle, tokens: Sequence[int]) -> list[np.ndarray]:
    try:
        codes = image_codes(bundle, tokens)
    except ValueError:
        return []
    return [_to_array(decode_codes(bundle, c)) for c in codes]


def _sampler(settings: EvalSettings, images: int) -> SamplerConfig:
    return SamplerConfig(cfg_scale=settings.cfg_scale, image_top_k=settings.image_top_k,
                         text_top_k=settings.text_top_k, max_new_tokens=_max_tokens(max(images, 1)),
                         force_images=images, jacobi_window=settings.jacobi_window)


def eval_text_to_image(model, bundle: TokenizerBundle, n: int, seed: int, settings: EvalSettings,
                       examples: list[dict] | None = None) -> dict[str, float]:
    """GenEval-style scores of ``n`` prompts (1..4 objects in turn) at their requested sizes."""
    scenes = [world_scene.sample_scene(random.Random(f"lumina-world-eval:{seed}:t2i:{i}"),  # noqa: S311  seeded
                                       n_objects=1 + i % 4)
              for i in range(n)]
    prompts = [conversation.build_prompt_ids(bundle.text, [TEXT_TO_IMAGE.message(
        world_scene.caption(s), width=s.width, height=s.height)]) for s in scenes]
    stats: dict[str, int] = {}
    # batches of one requested size, so their rows draw grids of one size side by side (what SJD needs)
    tokens = _run_prompts(model, bundle, prompts, _sampler(settings, 1), [None] * n, seed, settings.batch, stats,
                          group_by=[(s.width, s.height) for s in scenes])
    scores = []
    for i, (scene, toks) in enumerate(zip(scenes, tokens)):
        imgs = _images_of(bundle, toks)
        if examples is not None and i < 4:  # the first prompt of each object count, as generated
            examples.append({"suite": "text_to_image", "prompt": world_scene.caption(scene),
                             "size": f"{scene.width}x{scene.height}",
                             "images": {"generated": imgs[0] if imgs else None,
                                        "world": np.asarray(render.render_image(scene))}})
        if not imgs:
            s = {k: 0.0 for k in ("aspect_ratio", "counting", "colour_attribution", "position", "size",
                                  "overall")}
            if len(scene.objects) in (1, 2):
                s["single_object" if len(scene.objects) == 1 else "two_objects"] = 0.0
            scores.append(s)
        else:
            scores.append(analyser.score_text_to_image(imgs[0], scene))
    summary = analyser.summarise_scores(scores)
    return {**{k: summary[k] for k in T2I_SUBSCORES if k in summary}, "overall": summary["overall"],
            "count": float(n), "forwards_per_prompt": stats["forwards"] / n}


def _omni_items(task: str, n: int, seed: int):
    """``(scene, example, images, truth)`` of ``n`` eval scenes for one task (``scene_examples``)."""

    items = []
    for i in range(n):
        scene = world_scene.sample_scene(random.Random(f"lumina-world-eval:{seed}:{task}:{i}"))  # noqa: S311  seeded
        exs, imgs, truth = scene_examples(scene, seed + 7919, 10**6 + i, (task,))
        items.append((scene, exs[0], imgs, truth))
    return items


def eval_omni(model, bundle: TokenizerBundle, task: str, n: int, seed: int, settings: EvalSettings,
              examples: list[dict] | None = None) -> dict[str, float]:
    """Scores of one Omni task on ``n`` eval scenes (see the module docstring for the metrics)."""
    items = _omni_items(task, n, seed)
    prompts, force, answers_n = [], [], []
    for scene, ex, imgs, _ in items:
        n_in = ex.human.count(IMAGE_PLACEHOLDER)
        inputs = [imgs[name] for name in ex.images[:n_in]]
        targets = [imgs[name] for name in ex.images[n_in:]]
        codes = _encode(bundle, inputs) if inputs else []
        prompts.append(conversation.build_prompt_ids(bundle.text, [ex.human], codes))
        answers_n.append(len(targets))
        size = targets[0].size if targets else None
        force.append(None if size is None else (size[1] // bundle.patch, size[0] // bundle.patch))
    n_images = answers_n[0]
    stats: dict[str, int] = {}
    tokens = _run_prompts(model, bundle, prompts, _sampler(settings, n_images) if n_images else
                          SamplerConfig(cfg_scale=1.0, text_top_k=settings.text_top_k, max_new_tokens=48),
                          force, seed, settings.batch, stats)
    vals: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        vals.setdefault(key, []).append(float(v))

    for k, ((scene, ex, imgs, truth), toks) in enumerate(zip(items, tokens)):
        n_in = ex.human.count(IMAGE_PLACEHOLDER)
        targets = [imgs[name] for name in ex.images[n_in:]]
        preds = _images_of(bundle, toks)
        if examples is not None and k == 0:
            examples.append(_omni_example(task, ex, imgs, n_in, preds, toks, bundle))
        if task in IMAGE_ANSWER_SUITES:
            _score_images(task, scene, truth, targets, preds, add)
        else:
            text, _ = conversation.split_response(toks, bundle.text)
            if task == "vqa":
                for key, value in vqa_scores(text, scene, truth["vqa"]).items():
                    add(key, value)
            else:
                add("accuracy", analyser.caption_matches(text, scene))
    out = _with_overall(task, {k: float(np.mean(v)) for k, v in vals.items()})
    out["count"] = float(n)
    out["forwards_per_prompt"] = stats["forwards"] / n
    return out


def vqa_scores(answer: str, scene: world_scene.Scene, truth: dict) -> dict[str, bool]:
    """Scores of one answer to the question ``truth`` (``{"kind", "question", "answer"}``) about ``scene``:
    ``accuracy``, ``<kind>_accuracy`` and, for a position question, ``position_other_object`` (the answer is
    the place of another object of the scene: the usual wrong answer)."""
    said = analyser.normalise_answer(answer)
    right = said == analyser.normalise_answer(truth["answer"])
    out = {"accuracy": right, f"{truth['kind']}_accuracy": right}
    if truth["kind"] == "position":
        out["position_other_object"] = not right and any(o.position == said for o in scene.objects)
    return out


def _score_images(task: str, scene, truth: dict, targets: Sequence[Image.Image], preds: Sequence[np.ndarray],
                  add) -> None:
    """``add(metric, value)`` for one image answer ``preds`` (``[H, W, 3]`` uint8 each; empty when none was
    written) of an image-answer suite, against the world's ``targets`` and ``truth``."""
    pred = preds[0] if preds else None
    if task == "segmentation":
        add("iou", 0.0 if pred is None else analyser.segmentation_iou(pred, targets[0]))
    elif task == "detection":
        found = None if pred is None else analyser.find_detection_box(pred)
        iou = 0.0 if found is None else analyser.box_iou(found, truth["detection"]["box"])
        add("iou", iou)
        add("acc@0.5", iou >= 0.5)
        # the usual wrong answer: a box around another object of the scene (often repainted as the asked one)
        others = [o for o in scene.objects if o.name != truth["detection"]["object"]]
        add("other_object", found is not None and iou < 0.5 and any(
            analyser.box_iou(found, render.detection_box(scene, o)) >= 0.5 for o in others))
        # a right box can come with the rest of the picture redrawn wrong (an object recoloured or gone)
        add("picture_kept", pred is not None and analyser.detection_keeps_picture(pred, targets[0]))
    elif task == "depth":
        add("error", 1.0 if pred is None else analyser.depth_error(pred, targets[0]))
        add("layer_accuracy", 0.0 if pred is None else analyser.depth_accuracy(pred, targets[0]))
    elif task == "normals":
        add("error_deg", 90.0 if pred is None else analyser.normals_error(pred, targets[0]))
    elif task == "pose":
        add("f1", 0.0 if pred is None else analyser.pose_f1(pred, targets[0]))
    elif task == "editing":
        f1 = 0.0 if pred is None else analyser.edit_score(pred, world_scene.Scene.from_dict(truth["editing"]["scene"]))
        add("f1", f1)
        add("accuracy", f1 == 1.0)
        add(f"{world_scene.edit_kind(truth['editing']['instruction'])}_accuracy", f1 == 1.0)
        # the usual wrong answer: the input picture copied with no change at all
        add("unchanged", pred is not None and analyser.edit_score(pred, scene) == 1.0)
    elif task == "condition_to_image":
        add("accuracy", 0.0 if pred is None else analyser.score_text_to_image(pred, scene)["overall"])
    elif task == "multiview":
        mv = truth["multiview"]
        obj = next(o for o in scene.objects if o.colour == mv["colour"] and o.shape == mv["shape"])
        frames = list(preds[: mv["views"]])
        shown = analyser.multiview_consistency(frames, obj) * len(frames) / mv["views"] if frames else 0.0
        add("consistency", shown)
    else:
        raise ValueError(f"{task!r} answers in text, not images")


def _with_overall(task: str, out: dict[str, float]) -> dict[str, float]:
    """``out`` (a suite's mean metrics) with the suite's ``overall`` added (see the module docstring)."""
    if task in ("segmentation", "detection"):
        out["overall"] = out["iou"]
    elif task == "depth":
        out["overall"] = out["layer_accuracy"]
    elif task == "normals":
        out["overall"] = max(0.0, 1.0 - out["error_deg"] / 90.0)
    elif task == "multiview":
        out["overall"] = out["consistency"]
    elif task == "pose":
        out["overall"] = out["f1"]
    else:
        out["overall"] = out["accuracy"]
    return out


def decoder_ceilings(vqgan, alphabet: dict[bytes, int], n: int = 40, seed: int = 0,
                     suites: Sequence[str] = IMAGE_ANSWER_SUITES) -> dict[str, float]:
    """Each image-answer suite's ``overall`` when every answer is exactly right: the target images written in
    their alphabet codes (what the language model is trained to write) and drawn by ``vqgan``'s decoder. The
    benchmark's prompts (``n`` scenes from ``seed``); what the language model can reach at best."""

    out: dict[str, float] = {}
    for task in suites:
        vals: dict[str, list[float]] = {}
        for scene, ex, imgs, truth in _omni_items(task, n, seed):
            targets = [imgs[name] for name in ex.images[ex.human.count(IMAGE_PLACEHOLDER):]]
            codes = [snap_codes(t, c, alphabet, vqgan.config.downsample)
                     for t, c in zip(targets, encode_pil(vqgan, targets))]
            with torch.no_grad():
                preds = [_to_array(vqgan.decode_codes(c[None])) for c in codes]
            _score_images(task, scene, truth, targets, preds,
                          lambda key, v: vals.setdefault(key, []).append(float(v)))
        out[task] = _with_overall(task, {k: float(np.mean(v)) for k, v in vals.items()})["overall"]
    return out


def _omni_example(task: str, ex, imgs: dict, n_in: int, preds: list[np.ndarray], toks: Sequence[int],
                  bundle: TokenizerBundle) -> dict:
    """What one Omni prompt showed: its message, input images, generated images / text and the truth."""
    shown: dict[str, np.ndarray | None] = {}
    for j, name in enumerate(ex.images[:n_in]):
        shown[f"input {j + 1}" if n_in > 1 else "input"] = np.asarray(imgs[name])
    targets = ex.images[n_in:]
    for j, name in enumerate(targets):
        label = f"view {j + 1}" if len(targets) > 1 else "generated"
        shown[label] = preds[j] if j < len(preds) else None
    if len(targets) == 1:
        shown["world"] = np.asarray(imgs[targets[0]])
    record = {"suite": task, "prompt": ex.human.replace(IMAGE_PLACEHOLDER, "").strip(), "images": shown}
    if not targets:
        record["answer"] = conversation.split_response(toks, bundle.text)[0].strip()
        record["expected"] = ex.gpt
    return record


def save_examples(examples: Sequence[dict], folder: str | Path, scale: int = 4) -> list[Path]:
    """Write one PNG strip per suite (its images side by side, nearest-neighbour upscaled by ``scale``,
    a missing image as a black square) and ``examples.json`` (prompts, answers, file names). Returns the
    files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, index = [], []
    by_suite: dict[str, list[dict]] = {}
    for ex in examples:
        by_suite.setdefault(ex["suite"], []).append(ex)
    for suite, exs in by_suite.items():
        tiles, labels = [], []
        for ex in exs:
            for label, arr in ex["images"].items():
                tiles.append(arr)
                labels.append(label)
        side = max((max(a.shape[:2]) for a in tiles if a is not None), default=16)
        height = max((a.shape[0] for a in tiles if a is not None), default=side)
        gap = 2
        widths = [a.shape[1] if a is not None else side for a in tiles]
        strip = np.full((height, sum(widths) + gap * (len(tiles) - 1), 3), 255, dtype=np.uint8)
        x = 0
        for a, wd in zip(tiles, widths):
            if a is None:
                strip[:side, x:x + wd] = 0
            else:
                strip[: a.shape[0], x:x + a.shape[1]] = a
            x += wd + gap
        path = folder / f"{suite}.png"
        Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST).save(path)
        written.append(path)
        index.append({"suite": suite, "file": path.name, "tiles": labels,
                      "prompts": [{k: v for k, v in ex.items() if k != "images"} for ex in exs]})
    meta = folder / "examples.json"
    meta.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*written, meta]


def evaluate_world(model_dir: str | Path, *, n: int = 100, n_omni: int = 40, seed: int = 0,
                   suites: Sequence[str] = SUITES, settings: EvalSettings = EvalSettings(),
                   examples_dir: str | Path | None = None) -> dict:
    """Run the world benchmark on a model folder.

    Returns ``{suite: {metric: value, ..., "overall": x}, "meta": {...}}``.

    Raises:
        ValueError: unknown suite names or an unreadable model folder.
    """

    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise ValueError(f"unknown suite(s) {bad}; choose from {list(SUITES)}")
    model_dir = Path(model_dir)
    start = time.perf_counter()
    model = load_model(model_dir, dtype="fp32")
    bundle = load_tokenizer_bundle(model_dir)
    bundle.check_model_vocab(model.config.vocab_size)
    results: dict = {}
    examples: list[dict] | None = [] if examples_dir is not None else None
    for suite in suites:
        t = time.perf_counter()
        if suite == "text_to_image":
            results[suite] = eval_text_to_image(model, bundle, n, seed, settings, examples)
        else:
            results[suite] = eval_omni(model, bundle, suite, n_omni, seed, settings, examples)
        results[suite]["seconds"] = round(time.perf_counter() - t, 2)

    alphabet_file = model_dir / ALPHABET_FILE  # world train writes it next to the weights
    image_suites = [s for s in suites if s in IMAGE_ANSWER_SUITES]
    if alphabet_file.is_file() and image_suites:
        ceilings = decoder_ceilings(bundle.vqgan, load_alphabet(alphabet_file), n_omni, seed, image_suites)
        for suite, value in ceilings.items():
            results[suite]["decoder_ceiling"] = value
    if examples is not None:
        save_examples(examples, examples_dir)
    results["meta"] = {"model": str(model_dir), "seed": seed, "n": n, "n_omni": n_omni,
                       "settings": settings.__dict__, "seconds": round(time.perf_counter() - start, 2)}
    return results


def format_table(results: dict) -> str:
    """A plain-text table: one line per suite and metric, ``overall`` first."""
    lines = [f"{'suite':<20} {'metric':<22} {'value':>8}", "-" * 52]
    for suite, metrics in results.items():
        if suite == "meta":
            continue
        keys = ["overall"] + [k for k in metrics if k not in ("overall", "count", "seconds",
                                                              "forwards_per_prompt")]
        for j, k in enumerate(keys):
            lines.append(f"{suite if j == 0 else '':<20} {k:<22} {metrics[k]:>8.3f}")
    meta = results.get("meta", {})
    lines.append("-" * 52)
    lines.append(f"model {meta.get('model')}  seed {meta.get('seed')}  "
                 f"n {meta.get('n')}/{meta.get('n_omni')}  {meta.get('seconds')} s")
    return "\n".join(lines)


def missed_levels(results: dict, levels: dict[str, float] = BUNDLED_LEVELS,
                  sub_levels: dict[tuple[str, str], float] = BUNDLED_SUB_LEVELS) -> list[str]:
    """``"suite 0.xx < 0.yy"`` for each suite in ``results`` whose ``overall`` is under its level, then
    ``"suite metric 0.xx < 0.yy"`` for each sub-score under its own."""
    missed = [f"{suite} {results[suite]['overall']:.2f} < {level:.2f}" for suite, level in levels.items()
              if suite in results and results[suite]["overall"] < level]
    return missed + [f"{suite} {metric} {results[suite][metric]:.2f} < {level:.2f}"
                     for (suite, metric), level in sub_levels.items()
                     if metric in results.get(suite, {}) and results[suite][metric] < level]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lumina_tools eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="world", choices=["world"], help="benchmark suite (only 'world')")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--n", type=int, default=100, help="text-to-image prompts")
    p.add_argument("--n-omni", type=int, default=40, help="scenes per Omni task")
    p.add_argument("--seed", type=int, default=0, help="prompt set and sampling seed")
    p.add_argument("--tasks", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    p.add_argument("--image-top-k", type=int, default=EvalSettings.image_top_k)
    p.add_argument("--cfg", type=float, default=EvalSettings.cfg_scale, help="guidance scale (1 = off)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--jacobi-window", type=int, default=0,
                   help="decode images by speculative Jacobi decoding (16 = the SJD default; 0 = off)")
    p.add_argument("--examples", default=None, metavar="DIR",
                   help="also write one PNG strip per task (the first prompt's inputs, output and the world's "
                        "own answer) and examples.json to DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.n < 1 or args.n_omni < 1:
        print("error: --n and --n-omni must be >= 1", file=sys.stderr)
        return 2
    suites = [s.strip() for s in args.tasks.split(",") if s.strip()]
    try:
        with torch_threads(args.threads):
            results = evaluate_world(args.model, n=args.n, n_omni=args.n_omni, seed=args.seed, suites=suites,
                                     settings=EvalSettings(image_top_k=args.image_top_k, cfg_scale=args.cfg,
                                                           jacobi_window=args.jacobi_window),
                                     examples_dir=args.examples)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    default_run = (Path(args.model).resolve() == DEFAULT_MODEL.resolve() and (args.n, args.n_omni, args.seed)
                   == (100, 40, 0) and (args.image_top_k, args.cfg) == (1, 1.0) and set(suites) == set(SUITES)
                   and args.jacobi_window == 0)
    if default_run and not args.json:
        missed = missed_levels(results)
        print("stated levels (README): " + ("every one met" if not missed else "MISSED " + "; ".join(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
