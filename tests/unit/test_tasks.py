"""Task prompts: the token ids of every Omni task equal the official format built by hand."""

from __future__ import annotations

import pytest
import torch

from comfy_lumina_mgpt import conversation, unirep
from comfy_lumina_mgpt.answers import detect_box
from comfy_lumina_mgpt.tasks import user_message
from comfy_lumina_mgpt.conversation import Conversation
from comfy_lumina_mgpt.tasks import TASKS, get_task

# (task, user text, the official message with the image at the end, as LUMINA_SPEC §3.2 quotes it)
OFFICIAL = [
    ("segmentation", "", "Segmentic segmentation. "),
    ("depth", "", "Depth estimation. "),
    ("normals", "", "Surface normal estimation. "),
    ("pose", "", "Human pose estimation. "),
    ("detection", "the red car", "Detect: the red car "),
    ("editing", "Make the sky red.", "Make the sky red. "),
    ("condition_to_image", "a cat on a sofa",
     "Generate an image according to the provided image, and according to the following caption:\n"
     "a cat on a sofa "),
    ("caption", "", "Describe the image in detail. "),
]
# latent grids of several sizes and aspect ratios (official VQGAN: 16 px per code): 512², 864x640, 1024x256
GRIDS = [(32, 32), (40, 54), (16, 64)]


@pytest.mark.parametrize("task,text,before_image", OFFICIAL, ids=[t[0] for t in OFFICIAL])
@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: f"{g[1] * 16}x{g[0] * 16}")
def test_task_prompt_equals_official_layout(official_tokenizer, task, text, before_image, grid):
    tok = official_tokenizer
    vocab = tok.vocab
    codes = torch.randint(0, vocab.num_codes, grid, generator=torch.Generator().manual_seed(sum(grid)))
    message = user_message(task, text)
    assert message == before_image + "<|image|>"
    ids = conversation.build_prompt_ids(tok, [message], [codes])
    block = unirep.image_block(codes, vocab)
    by_hand = [vocab.bos_id] + tok.encode(before_image) + block + [vocab.sep_id]
    assert ids == by_hand
    assert block[:3] == [vocab.boi_id, vocab.size_token(grid[0] // 2), vocab.size_token(grid[1] // 2)]


def test_text_to_image_and_multiview_prompts(official_tokenizer):
    tok = official_tokenizer
    t2i = get_task("text_to_image").message("a dog", width=768, height=512)
    assert t2i == "Generate an image of 768x512 according to the following prompt:\na dog"
    assert conversation.build_prompt_ids(tok, [t2i]) == [tok.vocab.bos_id] + tok.encode(t2i) + [tok.vocab.sep_id]
    mv = user_message("multiview", "a red cube", views=4, width=512, height=512)
    assert mv.startswith("Generate 4 views of 512x512 ") and mv.endswith("\na red cube")


def test_multi_turn_editing_carries_earlier_turns(official_tokenizer):
    tok = official_tokenizer
    vocab = tok.vocab
    first, edited, second = (torch.randint(0, vocab.num_codes, (4, 6)) for _ in range(3))
    conv = Conversation().add_user(user_message("editing", "Make it red."), (first,))
    conv = conv.add_assistant("<|image|>", (edited,))
    conv = conv.add_user(user_message("editing", "Now remove the cat."), (second,))
    ids = conversation.build_prompt_ids(tok, list(conv.turns), list(conv.images))
    sep = [vocab.sep_id]
    by_hand = ([vocab.bos_id] + tok.encode("Make it red. ") + unirep.image_block(first, vocab) + sep
               + unirep.image_block(edited, vocab) + sep
               + tok.encode("Now remove the cat. ") + unirep.image_block(second, vocab) + sep)
    assert ids == by_hand


@pytest.mark.parametrize("task,text,message", [
    ("editing", "", "needs a text prompt"),
    ("detection", "x" * 2000, "characters"),
    ("chat", "look: <|image|>", "must not contain"),
])
def test_bad_task_input_is_refused(task, text, message):
    with pytest.raises(ValueError, match=message):
        user_message(task, text)


def test_every_task_is_reachable():
    with pytest.raises(ValueError, match="choose one of"):
        get_task("segmentation_v2")
    assert {"segmentation", "depth", "normals", "pose", "detection", "editing", "condition_to_image",
            "multiview", "caption", "vqa", "chat", "text_to_image"} == set(TASKS)


def test_detect_box_finds_the_drawn_rectangle():
    before = torch.zeros(3, 32, 48)
    after = before.clone()
    after[:, 5, 10:30] = after[:, 20, 10:30] = 1.0
    after[:, 5:21, 10] = after[:, 5:21, 29] = 1.0
    assert detect_box(before, after) == (10, 5, 30, 21)
    assert detect_box(before, before) is None
