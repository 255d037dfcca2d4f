"""Every setting of ``python -m lumina_tools world train`` (``WorldTrainConfig``) and its constants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_OUT = "models/lumina_mgpt/lumina-mgpt-world"
DEFAULT_WORK = "runs/world"
#: Largest size-token value: 80 px / 16 px per size step.
MAX_GRID = 5
#: Relative share of each task in the language-model data (text-to-image dominates).
TASK_WEIGHTS: dict[str, float] = {
    "text_to_image": 10.0, "segmentation": 0.6, "depth": 0.6, "normals": 0.5, "pose": 0.3, "detection": 0.6,
    "editing": 0.8, "condition_to_image": 0.6, "multiview": 0.4, "caption": 0.6, "vqa": 1.0,
}
#: Task shares of the third cycle (``lm_omni_steps``), drawn on fresh scenes: more of the tasks that must copy
#: the input picture cell by cell (editing, detection, depth) and of the text answers, which the second cycle
#: leaves weakest; text-to-image keeps about a fifth so that it is not forgotten.
OMNI_CYCLE_WEIGHTS: dict[str, float] = {
    "text_to_image": 2.5, "segmentation": 0.6, "depth": 1.2, "normals": 0.5, "pose": 0.4, "detection": 1.2,
    "editing": 1.6, "condition_to_image": 0.6, "multiview": 0.5, "caption": 1.0, "vqa": 1.0,
}
#: Task shares of the fourth cycle (``lm_balance_steps``), on fresh scenes again: the tasks the third cycle
#: leaves weakest (editing, detection, depth, the text answers) get the most, every other task is replayed so
#: that none is forgotten (left out, a task's level fell within a few hundred steps in earlier probes).
BALANCE_CYCLE_WEIGHTS: dict[str, float] = {
    "text_to_image": 1.5, "segmentation": 0.5, "depth": 0.8, "normals": 0.5, "pose": 0.3, "detection": 2.0,
    "editing": 2.5, "condition_to_image": 0.6, "multiview": 0.4, "caption": 1.5, "vqa": 2.0,
}
#: Task shares of the fifth cycle (``lm_weak_steps``), on fresh scenes again: the fourth cycle's mix pushed
#: further towards the tasks still furthest from their level (editing, detection, questions), every task
#: still replayed.
WEAK_CYCLE_WEIGHTS: dict[str, float] = {
    "text_to_image": 1.5, "segmentation": 0.5, "depth": 1.0, "normals": 0.5, "pose": 0.3, "detection": 3.0,
    "editing": 3.0, "condition_to_image": 0.6, "multiview": 0.4, "caption": 1.5, "vqa": 2.5,
}
#: Task shares of the seventh cycle (``lm_answer_steps``), on fresh scenes again: the text answers
#: (questions, captions), which the sixth cycle leaves weakest (position questions 0.64, captions 0.82), get
#: the most; editing and detection, which it brings to their level, keep a replay share.
ANSWER_CYCLE_WEIGHTS: dict[str, float] = {
    "text_to_image": 1.5, "segmentation": 0.5, "depth": 1.0, "normals": 0.5, "pose": 0.3, "detection": 2.0,
    "editing": 2.5, "condition_to_image": 0.6, "multiview": 0.4, "caption": 4.5, "vqa": 3.5,
}
#: Task shares of the eighth cycle (``lm_place_steps``), on fresh scenes again: captions and questions still
#: more, since after the seventh cycle the answers that name where an object is are the ones left below
#: their level (and they are asked place-first: ``vqa_conversation``'s ``places_first``).
PLACE_CYCLE_WEIGHTS: dict[str, float] = {
    "text_to_image": 1.5, "segmentation": 0.5, "depth": 1.0, "normals": 0.5, "pose": 0.3, "detection": 2.0,
    "editing": 2.5, "condition_to_image": 0.6, "multiview": 0.4, "caption": 6.0, "vqa": 3.5,
}
#: Task shares of the ninth cycle (``lm_pair_steps``), on fresh scenes of exactly two objects: questions
#: the most (every object's place asked first), captions next, every task replayed. Which of two objects is
#: where is the smallest case of binding a name to a place; a seed-1 retrain that had not learnt it after
#: eight cycles (``world probe``: every object's place 0.59) learnt it here and carried it to three and four
#: objects (0.87 in all).
PAIR_CYCLE_WEIGHTS: dict[str, float] = PLACE_CYCLE_WEIGHTS | {"vqa": 12.0}  # captions keep the eighth's 6
#: Task shares of the eleventh cycle (``lm_caption_steps``), on fresh scenes of one to four objects again:
#: captions the most, questions next, and text-to-image and detection twice the eighth's share. A seed-1
#: retrain after ten cycles named every object of a four-object picture rightly in 0.23 of its captions
#: (``world probe``) and had slipped on text-to-image (0.94, benchmark seed 0).
CAPTION_CYCLE_WEIGHTS: dict[str, float] = PLACE_CYCLE_WEIGHTS | {
    "caption": 12.0, "vqa": 6.0, "text_to_image": 3.0, "detection": 3.0}
#: The cycles on fresh scenes, in the order their scenes are numbered: ``(steps setting, scenes setting,
#: which cycle)``. Each cycle's scenes come after all the ones before (``train.SCENE_BLOCKS``).
FRESH_SCENE_CYCLES: tuple[tuple[str, str, str], ...] = (
    ("lm_omni_steps", "omni_cycle_scenes", "third"), ("lm_balance_steps", "balance_scenes", "fourth"),
    ("lm_weak_steps", "weak_scenes", "fifth"), ("lm_weak2_steps", "weak2_scenes", "sixth"),
    ("lm_answer_steps", "answer_scenes", "seventh"), ("lm_place_steps", "place_scenes", "eighth"),
    ("lm_pair_steps", "pair_scenes", "ninth"), ("lm_spread_steps", "spread_scenes", "tenth"),
    ("lm_caption_steps", "caption_scenes", "eleventh"),
)
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class WorldTrainConfig:
    """Every setting of ``world train`` (the defaults make the bundled model: about 7 h 15 min on one CPU core).

    VQGAN: ``vq_codes`` codebook entries of ``vq_embed_dim`` dims, ``vq_ch`` base channels, ``vq_steps``
    Adam steps of ``vq_batch`` whole images at peak ``vq_lr`` (cosine), from ``vq_pool`` rendered images,
    then ``vq_decoder_steps`` decoder-only steps (see ``train_vqgan``, ``refine_decoder``), then
    ``vq_polish_steps`` decoder-only steps at peak ``vq_polish_lr`` on every task's images of
    ``vq_polish_scenes`` fresh scenes (``polish_decoder``; 0 = none).
    LM: ``lm_dim`` hidden size, ``lm_layers`` layers, ``lm_heads`` heads, ``lm_steps`` steps of ``lm_batch``
    sequences at ``lm_lr``, then ``lm_extra_steps`` more in a second cycle peaking at ``lm_extra_lr`` (0 = no
    second cycle), then ``lm_omni_steps`` in a third cycle peaking at ``lm_omni_lr`` (0 = none) on
    ``omni_cycle_scenes`` fresh scenes whose tasks are drawn with ``OMNI_CYCLE_WEIGHTS``, then
    ``lm_balance_steps`` in a fourth cycle peaking at ``lm_balance_lr`` (0 = none) on ``balance_scenes`` fresh
    scenes whose tasks are drawn with ``BALANCE_CYCLE_WEIGHTS`` and whose question examples ask up to
    ``vqa_turns`` questions in one conversation and a ``second_edit_share`` of whose editing examples go on to
    a second edit of the edited picture, then ``lm_weak_steps`` in a fifth cycle peaking at ``lm_weak_lr``
    (0 = none) on ``weak_scenes`` fresh scenes drawn the same way with ``WEAK_CYCLE_WEIGHTS``, then
    ``lm_weak2_steps`` in a sixth cycle at the same peak (0 = none) on ``weak2_scenes`` more, then
    ``lm_answer_steps`` in a seventh at that peak (0 = none) on ``answer_scenes`` more, drawn with
    ``ANSWER_CYCLE_WEIGHTS``, then ``lm_place_steps`` in an eighth peaking at ``lm_place_lr`` (0 = none) on
    ``place_scenes`` more, drawn with ``PLACE_CYCLE_WEIGHTS``, each picture's questions asking every object's
    place first, then ``lm_pair_steps`` in a ninth peaking at ``lm_pair_lr`` (0 = none) on ``pair_scenes``
    more of exactly two objects each, drawn with ``PAIR_CYCLE_WEIGHTS``, then ``lm_spread_steps`` in a tenth
    peaking at ``lm_spread_lr`` (0 = none) on ``spread_scenes`` more of one to four objects, drawn as the
    eighth's, then ``lm_caption_steps`` in an eleventh peaking at ``lm_caption_lr`` (0 = none) on
    ``caption_scenes`` more, drawn with ``CAPTION_CYCLE_WEIGHTS``. With ``lm_t2i_first`` (a curriculum) the
    first cycle sees only the text-to-image sequences and the second all of them; otherwise both see
    everything. Data of the first two cycles: ``t2i_scenes``
    text-to-image scenes and ``omni_scenes`` scenes whose Omni-task examples are drawn with ``TASK_WEIGHTS``.
    ``text_vocab`` BPE text tokens.
    ``recon_eval`` held-out pictures measure the VQGAN's reconstructions with the analyser.
    ``max_minutes_vq`` / ``max_minutes_lm`` (0 = none) stop a stage early (saving what it has).
    ``threads``: torch CPU threads. The default 1 makes a run repeat bit for bit (more threads sum floats in
    another order); more are faster where cores are free.
    """

    out: str = DEFAULT_OUT
    work_dir: str = DEFAULT_WORK
    seed: int = 0
    vq_codes: int = 512
    vq_embed_dim: int = 16
    vq_ch: int = 32
    vq_steps: int = 1500
    vq_batch: int = 8
    vq_decoder_steps: int = 4000
    vq_lr: float = 2e-3
    vq_pool: int = 3000
    vq_polish_steps: int = 6000
    vq_polish_lr: float = 1e-3
    vq_polish_scenes: int = 1500
    lm_dim: int = 192
    lm_layers: int = 4
    lm_heads: int = 6
    lm_steps: int = 4000
    lm_batch: int = 16
    lm_lr: float = 2e-3
    lm_extra_steps: int = 6000
    lm_extra_lr: float = 1e-3
    lm_t2i_first: bool = True
    lm_omni_steps: int = 6000
    lm_omni_lr: float = 5e-4
    omni_cycle_scenes: int = 4000
    lm_balance_steps: int = 5000
    lm_balance_lr: float = 5e-4
    balance_scenes: int = 20000
    lm_weak_steps: int = 4000
    lm_weak_lr: float = 1e-3
    weak_scenes: int = 16000
    lm_weak2_steps: int = 6000
    weak2_scenes: int = 24000
    lm_answer_steps: int = 4000
    answer_scenes: int = 16000
    lm_place_steps: int = 4000
    lm_place_lr: float = 5e-4
    place_scenes: int = 16000
    lm_pair_steps: int = 2500
    lm_pair_lr: float = 1e-3
    pair_scenes: int = 10000
    lm_spread_steps: int = 2500
    lm_spread_lr: float = 5e-4
    spread_scenes: int = 10000
    lm_caption_steps: int = 5000
    lm_caption_lr: float = 5e-4
    caption_scenes: int = 20000
    vqa_turns: int = 6
    second_edit_share: float = 0.5
    t2i_scenes: int = 16000
    omni_scenes: int = 3000
    text_vocab: int = 500
    cfg_drop_prob: float = 0.1
    recon_eval: int = 64
    max_minutes_vq: float = 0.0
    max_minutes_lm: float = 0.0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("vq_codes", "vq_embed_dim", "vq_steps", "vq_batch", "vq_pool", "lm_dim", "lm_layers",
                     "lm_heads", "lm_steps", "lm_batch", "t2i_scenes", "text_vocab", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cycle_settings = [name for steps, scenes, _ in FRESH_SCENE_CYCLES for name in (steps, scenes)]
        for name in ("lm_extra_steps", "vq_decoder_steps", "vq_polish_steps", "vq_polish_scenes", *cycle_settings):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for steps, scenes, cycle in FRESH_SCENE_CYCLES:
            if getattr(self, steps) > 0 and getattr(self, scenes) == 0:
                raise ValueError(f"{steps} needs {scenes} > 0 (the {cycle} cycle's fresh scenes)")
        if not 0.0 <= self.second_edit_share <= 1.0:
            raise ValueError(f"second_edit_share must be in [0, 1], got {self.second_edit_share}")
        if self.vqa_turns < 1:
            raise ValueError(f"vqa_turns must be >= 1, got {self.vqa_turns}")
        if self.vq_polish_steps > 0 and self.vq_polish_scenes == 0:
            raise ValueError("vq_polish_steps needs vq_polish_scenes > 0 (the scenes whose images it draws)")
        if self.lm_t2i_first and self.lm_extra_steps == 0:
            raise ValueError("lm_t2i_first needs a second cycle (lm_extra_steps > 0) to learn the Omni tasks")
        if self.vq_ch % 32:
            raise ValueError(f"vq_ch must be a multiple of 32 (GroupNorm groups), got {self.vq_ch}")
        if self.lm_dim % self.lm_heads:
            raise ValueError(f"lm_dim {self.lm_dim} must be divisible by lm_heads {self.lm_heads}")
