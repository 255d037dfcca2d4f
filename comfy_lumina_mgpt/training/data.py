"""Training data: sources -> pre-tokenised cache -> length-grouped, resolution-bucketed batches.

Two sources (``iter_source``):

* a folder of images, each with a same-name ``.txt`` caption (sub-folders included), turned into text-to-image
  conversations whose prompt names the size the image is fitted to
  (``Generate an image of {W}x{H} according to the following prompt:\\n{caption}``, then the image as answer);
* the official conversation file (LUMINA_SPEC §6), ``.json`` (a list) or ``.jsonl`` (one item per line):
  ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}], "image": [paths]}``
  with ``<|image|>`` marking each image; paths are relative to the file.

Pre-tokenisation encodes every image once with the VQGAN (the slow part) and stores one record per item,
``<cache>/<settings-hash>/items/<item-hash>.safetensors`` (int32 ``ids`` and ``labels``; name and bucket in
the metadata; no pickle). The settings hash covers the tokenizer and VQGAN fingerprint, target size and seed;
the item hash covers the caption/conversation text and the bytes of its images, so an edited caption or image
is re-encoded and nothing else is. A run that stops midway resumes where it left off (existing records are
kept); items are sharded across processes by index (``rank``/``world``). An unreadable or corrupt image skips
its item: the reason is stored next to the records (``<item-hash>.skip.json``), counted and reported, never
fatal. Crop offsets come from a ``random.Random`` seeded by (seed, item hash), so they do not depend on the
order or sharding of items.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .. import limits
from ..atomic import atomic_file
from ..tasks import IMAGE_PLACEHOLDER, TEXT_TO_IMAGE
from .objective import IGNORE_INDEX

if TYPE_CHECKING:
    from ..tokenizer_bundle import TokenizerBundle
    from ..vocab import LuminaVocab

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CACHE_FORMAT = 2  # 2: text is encoded literally (spelled control tokens stay text)
HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")


# --- sources ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceItem:
    """One training example before tokenisation.

    Attributes:
        name: for reports (file name, or ``file.json#index``).
        turns: alternating human/assistant messages with ``<|image|>`` placeholders; for a captioned image,
            empty (the prompt needs the fitted size first).
        images: image files, in placeholder order.
        caption: the caption of a folder item (None for conversations).
        error: why the item is unusable (it is skipped and counted), or "".
    """

    name: str
    turns: tuple[str, ...] = ()
    images: tuple[Path, ...] = ()
    caption: str | None = None
    error: str = ""


def iter_source(path: str | Path) -> list[SourceItem]:
    """All items of a data source (folder of captioned images, or ``.json`` / ``.jsonl`` conversations)."""
    path = Path(path)
    if path.is_dir():
        return _folder_items(path)
    if path.suffix.lower() in (".json", ".jsonl") and path.is_file():
        return _conversation_items(path)
    raise ValueError(f"data source {path} must be a folder of images with .txt captions, or a conversation "
                     f".json/.jsonl file")


def _folder_items(folder: Path) -> list[SourceItem]:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}) with .txt captions")
    items = []
    for img in images:
        name = str(img.relative_to(folder))
        caption_path = img.with_suffix(".txt")
        try:
            caption = caption_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            reason = f"no readable caption {caption_path.name}: {err}"
            items.append(SourceItem(name, images=(img,), error=reason))
            continue
        if not caption:
            items.append(SourceItem(name, images=(img,), error=f"caption {caption_path.name} is empty"))
            continue
        items.append(SourceItem(name, images=(img,), caption=caption))
    return items


def _conversation_items(path: Path) -> list[SourceItem]:
    text = path.read_text(encoding="utf-8")
    raw: list[Any]
    if path.suffix.lower() == ".jsonl":
        raw = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError as err:
                raw.append(ValueError(f"line {n} is not JSON: {err}"))
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(raw, list):
            raise ValueError(f"{path} must hold a JSON list of conversation items")
    return [_conversation_item(obj, f"{path.name}#{i}", path.parent) for i, obj in enumerate(raw)]


def _conversation_item(obj: Any, name: str, base: Path) -> SourceItem:
    if isinstance(obj, Exception):
        return SourceItem(name, error=str(obj))
    conversations = obj.get("conversations") if isinstance(obj, dict) else None
    if not isinstance(conversations, list) or not conversations:
        return SourceItem(name, error="item needs a non-empty 'conversations' list")
    turns = []
    for i, turn in enumerate(conversations):
        role = str(turn.get("from", "")).lower() if isinstance(turn, dict) else ""
        expected = HUMAN_ROLES if i % 2 == 0 else ASSISTANT_ROLES
        if role not in expected or not isinstance(turn.get("value"), str):
            return SourceItem(name, error=f"turn {i} must be {expected[0]!r} with a string 'value' (turns "
                                          f"alternate human/gpt, starting with human)")
        turns.append(turn["value"])
    if len(turns) % 2:
        return SourceItem(name, error="the last turn is a human turn; nothing to learn from it")
    images = obj.get("image", obj.get("images", [])) or []
    if isinstance(images, str):
        images = [images]
    paths = tuple(base / p for p in images)
    count = sum(t.count(IMAGE_PLACEHOLDER) for t in turns)
    if count == 0 and paths:
        # The official processor puts unmarked images before the first question.
        turns[0] = f"{IMAGE_PLACEHOLDER} " * len(paths) + turns[0]
    elif count != len(paths):
        return SourceItem(name, images=paths, error=f"{count} {IMAGE_PLACEHOLDER} placeholders but "
                                                    f"{len(paths)} images")
    return SourceItem(name, turns=tuple(turns), images=paths)


# --- pre-tokenisation -------------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_fingerprint(bundle: TokenizerBundle) -> str:
    """Hash of what turns an item into ids: the text tokenizer's definition and the VQGAN weights."""
    h = hashlib.sha256()
    text = bundle.text
    path = getattr(text, "path", None)
    if path is not None and Path(path).is_file():
        h.update(Path(path).read_bytes())
    else:
        h.update(text.backend.to_str().encode("utf-8"))
    for name, tensor in sorted(bundle.vqgan.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def settings_key(fingerprint: str, target_size: int, seed: int, patch: int) -> str:
    """Cache sub-folder name for one tokenisation setting."""
    blob = json.dumps({"format": CACHE_FORMAT, "fingerprint": fingerprint, "target_size": target_size,
                       "seed": seed, "patch": patch}, sort_keys=True)
    return _sha(blob.encode())[:24]


def item_key(item: SourceItem) -> str:
    """Content hash of an item: its text and the bytes of its images (unreadable files hash their error)."""
    h = hashlib.sha256()
    h.update(json.dumps({"turns": item.turns, "caption": item.caption, "error": item.error}).encode())
    for p in item.images:
        try:
            h.update(_sha(p.read_bytes()).encode())
        except OSError as err:
            h.update(f"unreadable:{p}:{err}".encode())
    return h.hexdigest()[:32]


@dataclass
class PretokenizeReport:
    """Outcome of one ``pretokenize`` call on one shard."""

    total: int = 0
    encoded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.total} items: {self.encoded} encoded, {self.reused} already cached, "
                f"{len(self.skipped)} skipped")


def _load_image(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()  # decode now so a truncated file fails here
    return img


@torch.no_grad()
def encode_item(item: SourceItem, bundle: TokenizerBundle, target_size: int, rng: random.Random
                ) -> tuple[list[int], list[int], str]:
    """Fit, VQ-encode and tokenise one item -> ``(ids, labels, bucket)``; bucket is the fitted ``WxH`` sizes
    (``"text"`` without images). Raises ``OSError`` / ``ValueError`` for unusable images or text."""
    from .. import conversation, unirep
    from ..codec import encode_picture

    crops = unirep.crop_size_list(target_size, bundle.patch)
    codes, sizes = [], []
    for path in item.images:
        item_codes, size = encode_picture(bundle, _load_image(path), crops, rng, name=path.name)
        codes.append(item_codes)
        sizes.append(size)
    if item.caption is not None:
        width, height = sizes[0]
        turns = [TEXT_TO_IMAGE.message(item.caption, width=width, height=height), IMAGE_PLACEHOLDER]
    else:
        turns = list(item.turns)
    ids, labels = conversation.build_training_example(bundle.text, turns, codes)
    bucket = "+".join(f"{w}x{h}" for w, h in sizes) or "text"
    return [int(i) for i in ids], [int(v) for v in labels], bucket


def _atomic_write_json(path: Path, payload: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload), encoding="utf-8")


def pretokenize(items: Sequence[SourceItem], bundle: TokenizerBundle, cache_dir: str | Path, *,
                target_size: int, seed: int, rank: int = 0, world: int = 1, fingerprint: str | None = None,
                check_cancel: Callable[[], None] | None = None) -> tuple[Path, PretokenizeReport]:
    """Encode this process's shard of ``items`` (index ``i % world == rank``) into the cache.

    Items already in the cache are not encoded again. The shard's item order and keys are written to
    ``index/{rank}-of-{world}.json`` for ``load_dataset``. A ``target_size`` without size tokens is refused
    first; ``check_cancel`` runs before each item (raise from it to stop; finished items stay cached).

    Returns:
        ``(folder, report)``: the settings folder that holds the records, and what happened.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    limits.check_target_size(target_size, bundle.patch, bundle.vocab)
    fingerprint = fingerprint or bundle_fingerprint(bundle)
    folder = Path(cache_dir) / settings_key(fingerprint, target_size, seed, bundle.patch)
    (folder / "items").mkdir(parents=True, exist_ok=True)
    (folder / "index").mkdir(exist_ok=True)
    report = PretokenizeReport()
    index = {}
    for i in range(rank, len(items), world):
        if check_cancel is not None:
            check_cancel()
        item = items[i]
        key = item_key(item)
        index[str(i)] = key
        report.total += 1
        record = folder / "items" / f"{key}.safetensors"
        skip = folder / "items" / f"{key}.skip.json"
        if record.is_file() or skip.is_file():
            report.reused += 1
            if skip.is_file():
                report.skipped.append((item.name, json.loads(skip.read_text(encoding="utf-8"))["reason"]))
            continue
        reason = item.error
        if not reason:
            rng = random.Random(f"{seed}:{key}")  # noqa: S311  seeded, not a secret
            try:
                ids, labels, bucket = encode_item(item, bundle, target_size, rng)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                reason = f"{type(err).__name__}: {err}"
            else:
                if all(v == IGNORE_INDEX for v in labels):
                    reason = "nothing to learn: every label is masked (no assistant turn)"
        if reason:
            logger.warning("skipping training item %s: %s", item.name, reason)
            _atomic_write_json(skip, {"name": item.name, "reason": reason})
            report.skipped.append((item.name, reason))
            continue
        tensors = {"ids": torch.tensor(ids, dtype=torch.int32),
                   "labels": torch.tensor(labels, dtype=torch.int32)}
        with atomic_file(record) as tmp:
            save_file(tensors, str(tmp), metadata={"name": item.name, "bucket": bucket})
        report.encoded += 1
    _atomic_write_json(folder / "index" / f"{rank}-of-{world}.json", {"items": index})
    logger.info("pre-tokenised shard %d/%d: %s", rank, world, report.summary())
    return folder, report


# --- dataset ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenExample:
    """One tokenised example: ``ids`` / ``labels`` ``[T]`` (int64, labels -100 where unsupervised)."""

    ids: Tensor
    labels: Tensor
    bucket: str = ""
    name: str = ""

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class TokenDataset:
    """Tokenised examples plus what the trainer needs to know about them.

    Attributes:
        examples: the usable examples.
        vocab: special-token ids (``boi_id``/``eoi_id`` for condition dropout); None disables the dropout.
        skipped: ``(name, reason)`` of every item left out (unreadable image, too long, ...).
    """

    examples: list[TokenExample]
    vocab: LuminaVocab | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TokenExample:
        return self.examples[i]

    @classmethod
    def from_sequences(cls, ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None = None,
                       buckets: Sequence[str] | None = None, vocab: LuminaVocab | None = None
                       ) -> TokenDataset:
        """Build from token lists (labels default to the ids with position 0 masked)."""
        examples = []
        for n, seq in enumerate(ids):
            t = torch.as_tensor(list(seq), dtype=torch.long)
            lab = torch.as_tensor(list(labels[n]), dtype=torch.long) if labels is not None else t.clone()
            if labels is None:
                lab[0] = IGNORE_INDEX
            if lab.shape != t.shape:
                raise ValueError(f"example {n}: {t.numel()} ids but {lab.numel()} labels")
            examples.append(TokenExample(t, lab, buckets[n] if buckets else "", f"#{n}"))
        return cls(examples, vocab)


def load_dataset(folder: str | Path, *, world: int = 1, max_seq_len: int | None = None,
                 vocab: LuminaVocab | None = None) -> TokenDataset:
    """Read the records that ``pretokenize`` wrote for all ``world`` shards, in source order.

    Examples longer than ``max_seq_len`` are skipped (and listed in ``skipped``), so changing the limit needs
    no re-encoding.
    """
    folder = Path(folder)
    order: dict[int, str] = {}
    for rank in range(world):
        path = folder / "index" / f"{rank}-of-{world}.json"
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: shard {rank} of {world} was not pre-tokenised")
        order.update({int(i): k for i, k in json.loads(path.read_text(encoding="utf-8"))["items"].items()})
    examples, skipped = [], []
    for i in sorted(order):
        key = order[i]
        skip = folder / "items" / f"{key}.skip.json"
        if skip.is_file():
            info = json.loads(skip.read_text(encoding="utf-8"))
            skipped.append((info["name"], info["reason"]))
            continue
        with safe_open(str(folder / "items" / f"{key}.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
            ids, labels = f.get_tensor("ids").long(), f.get_tensor("labels").long()
        name = meta.get("name", key)
        if max_seq_len is not None and ids.numel() > max_seq_len:
            skipped.append((name, f"{ids.numel()} tokens, longer than max_seq_len {max_seq_len}"))
            continue
        examples.append(TokenExample(ids, labels, meta.get("bucket", ""), name))
    if skipped:
        logger.warning("%d training items skipped, e.g. %s: %s", len(skipped), *skipped[0])
    return TokenDataset(examples, vocab, skipped)


def prepare_dataset(source: str | Path, bundle: TokenizerBundle, cache_dir: str | Path, *, target_size: int,
                    seed: int, max_seq_len: int | None = None, rank: int = 0, world: int = 1,
                    barrier: Callable[[], None] | None = None, check_cancel: Callable[[], None] | None = None
                    ) -> tuple[TokenDataset, PretokenizeReport]:
    """Pre-tokenise this process's shard, wait for the others (``barrier``), then load every shard.

    Returns:
        the dataset (every process gets all examples) and this shard's report.
    """
    items = iter_source(source)
    folder, report = pretokenize(items, bundle, cache_dir, target_size=target_size, seed=seed, rank=rank,
                                 world=world, check_cancel=check_cancel)
    if barrier is not None:
        barrier()
    dataset = load_dataset(folder, world=world, max_seq_len=max_seq_len, vocab=bundle.vocab)
    if not dataset.examples:
        raise ValueError(f"no usable training example in {source} ({len(dataset.skipped)} skipped, e.g. "
                         f"{dataset.skipped[:3]})")
    return dataset, report


# --- batching ---------------------------------------------------------------------------------------------
def plan_batches(dataset: TokenDataset, batch_size: int, seed: int, epoch: int, *, window: int = 50,
                 rank: int = 0, world: int = 1) -> list[list[int]]:
    """One epoch of batches (example indices) for process ``rank``.

    Examples are grouped by bucket (the fitted image sizes), shuffled with a ``(seed, epoch)`` generator,
    sorted by length inside windows of ``window`` global batches (so padding is small while order stays
    random), cut into global batches of ``batch_size * world``, and the global batches are shuffled. Process
    ``rank`` takes the ``rank``-th slice of each, so all processes see similar lengths at the same step.
    With several processes an incomplete last global batch of a bucket is dropped (every process must run the
    same number of steps).
    """
    rng = random.Random(seed * 1_000_003 + epoch)  # noqa: S311  seeded, not a secret
    by_bucket: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(dataset.examples):
        by_bucket[ex.bucket].append(i)
    per_global = batch_size * world
    groups: list[list[int]] = []
    for bucket in sorted(by_bucket):
        idx = by_bucket[bucket]
        rng.shuffle(idx)
        span = per_global * window
        for start in range(0, len(idx), span):
            chunk = sorted(idx[start:start + span], key=lambda i: len(dataset.examples[i]))
            groups.extend(chunk[j:j + per_global] for j in range(0, len(chunk), per_global))
    rng.shuffle(groups)
    batches = [group[rank * batch_size:(rank + 1) * batch_size] for group in groups
               if world == 1 or len(group) == per_global]
    if not batches:
        raise ValueError(f"{len(dataset)} examples are too few for {world} processes")
    return batches


class BatchStream:
    """Endless batches across epochs with a resumable position ``(epoch, index)``."""

    def __init__(self, dataset: TokenDataset, batch_size: int, seed: int, *, window: int = 50, rank: int = 0,
                 world: int = 1, epoch: int = 0, index: int = 0) -> None:
        if not len(dataset):
            raise ValueError("the training dataset is empty")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.window, self.rank, self.world = window, rank, world
        self.epoch, self.index = epoch, index
        self._plan = self._make_plan()

    def _make_plan(self) -> list[list[int]]:
        return plan_batches(self.dataset, self.batch_size, self.seed, self.epoch, window=self.window,
                            rank=self.rank, world=self.world)

    def __iter__(self) -> Iterator[list[TokenExample]]:
        return self

    def __next__(self) -> list[TokenExample]:
        while self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = self._make_plan()
        batch = self._plan[self.index]
        self.index += 1
        return [self.dataset.examples[i] for i in batch]

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.index


def collate(examples: Sequence[tuple[Sequence[int] | Tensor, Sequence[int] | Tensor]],
            device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-pad a batch: ids with 0, labels with -100 -> ``ids [B, T]``, ``labels [B, T]`` (int64).

    Padding sits after each sequence, so causal attention never lets a real token see it.
    """
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(len(ids) for ids, _ in examples)
    ids_out = torch.zeros(len(examples), width, dtype=torch.long)
    labels_out = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, labels) in enumerate(examples):
        ids_out[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        labels_out[row, : len(labels)] = torch.as_tensor(labels, dtype=torch.long)
    return ids_out.to(device), labels_out.to(device)
