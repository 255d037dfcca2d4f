"""Does a world model know which object is where? Every object's place asked, every scene captioned.

    python -m lumina_tools world probe [--model models/lumina_mgpt/lumina-mgpt-world] [--scenes 300]

The benchmark asks one question of a scene and captions 40 scenes; a model that has not bound names to
places is right with one object and at chance with four, so its score there depends on the draw. This asks
"Where is the <object>?" of every object of ``scenes`` scenes (1 to 4 objects each) and captions each scene,
greedily, and splits both by object count. A wrong place that is another object's place is counted apart
(the usual miss: the model knows which places are taken, not which object is in which).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from comfy_lumina_mgpt import conversation
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.sampling.settings import SamplerConfig
from comfy_lumina_mgpt.tasks import get_task
from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle

from . import analyser, benchmark
from .render import render_image
from .scene import Scene, sample_scene
from .threads import torch_threads
from .vq_train import encode_pil


@dataclass
class Tally:
    """Right / asked, overall and by object count (``"n1"`` .. ``"n4"``)."""

    right: Counter = field(default_factory=Counter)
    asked: Counter = field(default_factory=Counter)

    def add(self, n_objects: int, ok: bool) -> None:
        for key in ("all", f"n{n_objects}"):
            self.asked[key] += 1
            self.right[key] += ok

    def share(self, key: str = "all") -> float:
        return self.right[key] / self.asked[key] if self.asked[key] else float("nan")


@dataclass
class ProbeResult:
    places: Tally
    captions: Tally
    #: wrong place answers that name another object's place
    other_object: int
    wrong_places: int


def probe_scenes(n: int, seed: int) -> list[Scene]:
    """The probe's ``n`` scenes (a function of ``seed``; not the benchmark's)."""
    return [sample_scene(random.Random(f"world-probe:{seed}:{i}")) for i in range(n)]  # noqa: S311


def run_probe(model_dir: str | Path, scenes: int = 300, seed: int = 0, batch: int = 64,
              threads: int = 1) -> ProbeResult:
    """Ask every object's place and caption every scene of ``probe_scenes(scenes, seed)``."""
    with torch_threads(threads):
        model = load_model(model_dir, dtype="fp32")
        bundle = load_tokenizer_bundle(model_dir)
        items, prompts = [], []
        drawn = probe_scenes(scenes, seed)
        for sc, picture in zip(drawn, encode_pil(bundle.vqgan, [render_image(sc) for sc in drawn])):
            codes = [picture]  # each prompt carries the scene's one picture
            for obj in sc.objects:
                ask = get_task("vqa").message(f"Where is the {obj.name}?")
                prompts.append(conversation.build_prompt_ids(bundle.text, [ask], codes))
                items.append((sc, obj))
            describe = get_task("caption").message("")
            prompts.append(conversation.build_prompt_ids(bundle.text, [describe], codes))
            items.append((sc, None))
        cfg = SamplerConfig(cfg_scale=1.0, text_top_k=1, max_new_tokens=48)
        tokens = benchmark._run_prompts(model, bundle, prompts, cfg, [None] * len(prompts), seed, batch)
    places, captions, other, wrong = Tally(), Tally(), 0, 0
    for (sc, obj), toks in zip(items, tokens):
        text, _ = conversation.split_response(toks, bundle.text)
        if obj is None:
            captions.add(len(sc.objects), analyser.caption_matches(text, sc))
            continue
        said = analyser.normalise_answer(text)
        ok = said == obj.position
        places.add(len(sc.objects), ok)
        if not ok:
            wrong += 1
            other += any(said == o.position for o in sc.objects if o is not obj)
    return ProbeResult(places, captions, other, wrong)


def report(result: ProbeResult) -> str:
    """A few lines: each probe overall and by object count."""
    lines = []
    for name, tally in (("every object's place", result.places), ("caption", result.captions)):
        by_n = ", ".join(f"{k} {tally.share(k):.2f}" for k in sorted(tally.asked) if k != "all")
        lines.append(f"{name}: {tally.share():.2f} of {tally.asked['all']} ({by_n})")
    lines.append(f"wrong places naming another object's place: {result.other_object} of "
                 f"{result.wrong_places}")
    return "\n".join(lines)
