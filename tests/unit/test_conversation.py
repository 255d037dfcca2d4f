"""Conversation format: prompt ids, training labels, response splitting, multi-turn memory."""

from __future__ import annotations

import pytest
import torch

from comfy_lumina_mgpt import unirep
from comfy_lumina_mgpt.conversation import (
    IGNORE_INDEX,
    Conversation,
    build_prompt_ids,
    build_training_example,
    split_response,
)
from comfy_lumina_mgpt.tasks import IMAGE_PLACEHOLDER, TEXT_TO_IMAGE


def _codes(h, w, seed, n=64):
    return torch.randint(0, n, (h, w), generator=torch.Generator().manual_seed(seed))


def test_t2i_worked_example(official_tokenizer):
    tok = official_tokenizer
    text = TEXT_TO_IMAGE.message("a cat", width=768, height=768)
    assert text == "Generate an image of 768x768 according to the following prompt:\na cat"
    ids = build_prompt_ids(tok, [text])
    assert ids == [0] + tok.encode(text) + [8710]
    # identical to encoding the whole conversation string with the raw file, as the official code does
    assert ids == [tok.vocab.bos_id] + tok.backend.encode(text + "<reserved08706>", add_special_tokens=False).ids


def test_multi_turn_layout(tiny_tokenizer):
    tok = tiny_tokenizer
    turns = ["what is this?", "a cat", "and its colour?"]
    ids = build_prompt_ids(tok, turns)
    sep = tok.vocab.sep_id
    want = [tok.vocab.bos_id]
    for t in turns:
        want += tok.encode(t) + [sep]
    assert ids == want
    official = tok.backend.encode("<reserved08706>".join(turns) + "<reserved08706>", add_special_tokens=False)
    assert ids == [tok.vocab.bos_id] + official.ids
    with pytest.raises(ValueError, match="odd number"):
        build_prompt_ids(tok, turns[:2])
    with pytest.raises(ValueError, match="odd number"):
        build_prompt_ids(tok, [])


def test_images_replace_placeholders_in_order(tiny_tokenizer):
    tok = tiny_tokenizer
    vocab = tok.vocab
    a, b = _codes(2, 4, 1), _codes(4, 2, 2)
    ids = build_prompt_ids(tok, [f"Depth estimation. {IMAGE_PLACEHOLDER} and {IMAGE_PLACEHOLDER}"], [a, b])
    head = tok.encode("Depth estimation. ")
    block_a, block_b = unirep.image_block(a, vocab), unirep.image_block(b, vocab)
    mid = tok.encode(" and ")
    assert ids == [vocab.bos_id] + head + block_a + mid + block_b + [vocab.sep_id]
    assert tok.image_placeholder_id not in ids
    with pytest.raises(ValueError, match="2 <\\|image\\|> placeholders but 1 images"):
        build_prompt_ids(tok, [f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER}"], [a])


def test_implicit_placeholder_goes_first(tiny_tokenizer):
    tok = tiny_tokenizer
    a, b = _codes(2, 2, 3), _codes(2, 2, 4)
    implicit = build_prompt_ids(tok, ["describe them"], [a, b])
    explicit = build_prompt_ids(tok, [f"{IMAGE_PLACEHOLDER} {IMAGE_PLACEHOLDER} describe them"], [a, b])
    assert implicit == explicit


def test_training_labels_mask_human_turns(tiny_tokenizer):
    tok = tiny_tokenizer
    vocab = tok.vocab
    img_in, img_out = _codes(2, 4, 5), _codes(4, 4, 6)
    turns = [f"Detect: the cat {IMAGE_PLACEHOLDER}", IMAGE_PLACEHOLDER, "and now?", "It is red."]
    ids, labels = build_training_example(tok, turns, [img_in, img_out])
    h1 = tok.encode("Detect: the cat ") + unirep.image_block(img_in, vocab) + [vocab.sep_id]
    a1 = unirep.image_block(img_out, vocab) + [vocab.sep_id]
    h2 = tok.encode("and now?") + [vocab.sep_id]
    a2 = tok.encode("It is red.") + [vocab.sep_id]
    assert ids == [vocab.bos_id] + h1 + a1 + h2 + a2
    start_h2 = 1 + len(h1) + len(a1)
    human = {0} | set(range(1, 1 + len(h1))) | set(range(start_h2, start_h2 + len(h2)))
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        assert lab == (IGNORE_INDEX if i in human else t), i
    # the same ids as the generation prompt up to the last human turn
    assert build_prompt_ids(tok, turns[:3], [img_in, img_out]) == ids[: 1 + len(h1) + len(a1) + len(h2)]
    with pytest.raises(ValueError, match="nothing is supervised"):
        build_training_example(tok, ["only a question"])


def test_split_response(tiny_tokenizer):
    tok = tiny_tokenizer
    vocab = tok.vocab
    a, b = _codes(2, 2, 7), _codes(2, 4, 8)
    block_a, block_b = unirep.image_block(a, vocab), unirep.image_block(b, vocab)
    gen = tok.encode("Here it is: ") + block_a + tok.encode(" done") + block_b[:5] + [vocab.sep_id]
    text, blocks = split_response(gen, tok)
    assert text == f"Here it is: {IMAGE_PLACEHOLDER} done"
    assert blocks == [block_a]
    text, blocks = split_response(block_a + block_b + [vocab.sep_id], tok)
    assert text == IMAGE_PLACEHOLDER * 2 and blocks == [block_a, block_b]
    # an unfinished block followed by a new one: the first is dropped
    text, blocks = split_response(block_a[:4] + block_b, tok)
    assert blocks == [block_b] and text == IMAGE_PLACEHOLDER
    assert split_response(tok.encode("plain text") + [vocab.sep_id], tok) == ("plain text", [])


def test_conversation_memory(tiny_tokenizer):
    tok = tiny_tokenizer
    vocab = tok.vocab
    img, answer = _codes(2, 2, 9), _codes(2, 2, 10)
    conv = Conversation().add_user("Depth estimation.", [img])
    assert conv.turns == (f"{IMAGE_PLACEHOLDER} Depth estimation.",)
    text, blocks = split_response(unirep.image_block(answer, vocab) + [vocab.sep_id], tok)
    codes = [unirep.parse_image_block(bl, vocab) for bl in blocks]
    conv2 = conv.add_assistant(text, codes).add_user(f"Now this one {IMAGE_PLACEHOLDER}", [img])
    assert len(conv.turns) == 1 and len(conv2.turns) == 3 and len(conv2.images) == 3
    ids = conv2.prompt_ids(tok)
    assert ids == build_prompt_ids(tok, list(conv2.turns), list(conv2.images))
    assert ids.count(vocab.boi_id) == 3 and ids.count(vocab.sep_id) == 3
    with pytest.raises(ValueError, match="belongs to the assistant"):
        conv.add_user("again")
    with pytest.raises(ValueError, match="1 <\\|image\\|> placeholders but 0 images"):
        conv.add_assistant(IMAGE_PLACEHOLDER)
