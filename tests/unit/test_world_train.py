"""The bundled-model recipe end to end on tiny settings, and the world benchmark's JSON."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lumina_world.benchmark import IMAGE_ANSWER_SUITES, SUITES, evaluate_world, format_table
from lumina_world.benchmark import main as eval_main
from comfy_lumina_mgpt.model.loading import load_model
from comfy_lumina_mgpt.tokenizer_bundle import load_tokenizer_bundle
from lumina_world.dataset import WORLD_TASKS
from lumina_world.train import MAX_GRID, WorldTrainConfig, run


def tiny_config(tmp_path) -> WorldTrainConfig:
    return WorldTrainConfig(out=str(tmp_path / "model"), work_dir=str(tmp_path / "work"), vq_codes=32,
                            vq_embed_dim=4, vq_steps=2, vq_decoder_steps=2, vq_batch=2,
                            vq_pool=12, vq_polish_steps=2, vq_polish_scenes=2, lm_dim=32, lm_layers=1,
                            lm_heads=2, lm_steps=3, lm_extra_steps=2, lm_batch=2, t2i_scenes=6, omni_scenes=3,
                            lm_omni_steps=2, omni_cycle_scenes=2, lm_balance_steps=2, balance_scenes=3,
                            lm_weak_steps=2, weak_scenes=2, lm_weak2_steps=2, weak2_scenes=2, lm_answer_steps=2,
                            answer_scenes=2, lm_place_steps=2, place_scenes=2, lm_pair_steps=2, pair_scenes=2,
                            lm_spread_steps=2, spread_scenes=2, lm_caption_steps=2, caption_scenes=2, text_vocab=60,
                            recon_eval=2)


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("world")
    logs: list[str] = []
    folder = run(tiny_config(tmp), log=logs.append)
    return folder, logs


def test_world_train_writes_a_loadable_folder(trained_folder):
    folder, logs = trained_folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "model.safetensors", "patch_alphabet.json", "tokenizer.json",
                     "vqgan.safetensors", "vqgan.yaml"]
    model = load_model(folder)
    bundle = load_tokenizer_bundle(folder)
    assert bundle.vqgan.config.n_embed == 32 and bundle.patch == 16
    assert bundle.vocab.max_grid == MAX_GRID
    assert model.config.vocab_size == bundle.vocab.vocab_size
    assert any(line.startswith("lm: 3 steps") for line in logs)
    assert any(line.startswith("lm stage 2: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 3: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 4: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 5: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 6: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 7: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 8: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 9: 2 steps") for line in logs)
    assert any(line.startswith("lm stage 10: 2 steps") for line in logs)
    # the curriculum: stage 1 trains on the 6 text-to-image sequences only, stage 2 on all of them
    total = next(int(line.split()[0]) for line in logs if line.endswith("s") and "training sequences" in line)
    assert "stage 1 (text-to-image only): 6 sequences" in logs and total > 6


def test_curriculum_needs_a_second_cycle_and_cli_can_turn_it_off(tmp_path):
    from lumina_world.cli import build_parser

    with pytest.raises(ValueError, match="lm_extra_steps"):
        WorldTrainConfig(lm_extra_steps=0)
    assert WorldTrainConfig(lm_extra_steps=0, lm_t2i_first=False).lm_extra_steps == 0
    parse = build_parser().parse_args
    assert parse(["train"]).lm_t2i_first is True
    assert parse(["train", "--no-lm-t2i-first", "--lm-extra-steps", "0"]).lm_t2i_first is False


def test_third_cycle_draws_fresh_scenes_weighted_to_the_omni_tasks():
    from collections import Counter

    from lumina_world.train import omni_cycle_conversations, world_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=60)
    earlier = {turns[0] + turns[1] for _, turns, _ in world_conversations(cfg)}
    third = omni_cycle_conversations(cfg)
    assert not earlier & {turns[0] + turns[1] for task, turns, _ in third if task == "text_to_image"}
    counts = Counter(task for task, _, _ in third)
    assert counts["editing"] > counts["pose"] and counts["text_to_image"] > 0
    assert len(third) > 2 * cfg.omni_cycle_scenes  # about 2.6 distinct tasks of 3 draws per scene
    assert omni_cycle_conversations(cfg)[5][1] == third[5][1]  # a function of the seed
    with pytest.raises(ValueError, match="omni_cycle_scenes"):
        WorldTrainConfig(omni_cycle_scenes=0)
    assert WorldTrainConfig(omni_cycle_scenes=0, lm_omni_steps=0).lm_omni_steps == 0


def test_fourth_cycle_draws_fresh_scenes_and_asks_several_questions_a_picture():
    from collections import Counter

    from lumina_world.scene import sample_scene, vqa_pairs
    from lumina_world.folder_dataset import scene_rng
    from lumina_world.train import balance_cycle_conversations, omni_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=80, vqa_turns=4)
    third = {turns[0] for task, turns, _ in omni_cycle_conversations(cfg) if task == "text_to_image"}
    fourth = balance_cycle_conversations(cfg)
    assert not third & {turns[0] for task, turns, _ in fourth if task == "text_to_image"}
    counts = Counter(task for task, _, _ in fourth)
    assert set(counts) == set(WORLD_TASKS) and counts["editing"] > counts["pose"]
    questions = [turns for task, turns, _ in fourth if task == "vqa"]
    assert questions and all(len(t) % 2 == 0 and 2 <= len(t) <= 8 for t in questions)
    assert max(len(t) for t in questions) == 8  # some scene has four questions to ask
    for turns in questions:  # the picture comes with the first question only, as a chat about one picture
        assert "<|image|>" in turns[0] and not any("<|image|>" in t for t in turns[1:])
        asked = [turns[0].replace("<|image|>", "").strip()] + turns[2::2]
        assert len(set(asked)) == len(asked)
    # every answer is the world's answer to its question about that scene
    first = cfg.t2i_scenes + cfg.omni_scenes + cfg.omni_cycle_scenes
    truth = {}
    for k in range(cfg.balance_scenes):
        for pairs in vqa_pairs(sample_scene(scene_rng(cfg.seed, first + k, "scene"))).values():
            for q, a in pairs:
                truth.setdefault(q, set()).add(a)
    for turns in questions:
        asked = [turns[0].replace("<|image|>", "").strip()] + turns[2::2]
        assert all(a in truth[q] for q, a in zip(asked, turns[1::2]))
    assert balance_cycle_conversations(cfg)[7][1] == fourth[7][1]  # a function of the seed
    # about half the edits go on to a second edit of the edited picture, given again as the workflow does
    edits = [(turns, ims) for task, turns, ims in fourth if task == "editing"]
    twice = [(turns, ims) for turns, ims in edits if len(turns) == 4]
    assert 0 < len(twice) < len(edits)
    for turns, ims in twice:
        assert [t.count("<|image|>") for t in turns] == [1, 1, 1, 1] and ims[2] is ims[1]
        assert turns[2].startswith(("Change", "Remove", "Move"))
    with pytest.raises(ValueError, match="balance_scenes"):
        WorldTrainConfig(balance_scenes=0)
    with pytest.raises(ValueError, match="vqa_turns"):
        WorldTrainConfig(vqa_turns=0)
    with pytest.raises(ValueError, match="second_edit_share"):
        WorldTrainConfig(second_edit_share=1.5)


def t2i_prompts(convs) -> set[str]:
    """The text-to-image prompts of a cycle's conversations: each names its scene, so cycles on different
    scenes share none."""
    return {turns[0] for task, turns, _ in convs if task == "text_to_image"}


def test_fifth_and_sixth_cycles_draw_fresh_scenes_weighted_to_the_weak_tasks():
    from collections import Counter

    from lumina_world.train import balance_cycle_conversations, weak_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=40,
                           weak_scenes=120, vqa_turns=4)
    fifth = weak_cycle_conversations(cfg)
    assert not t2i_prompts(balance_cycle_conversations(cfg)) & t2i_prompts(fifth)
    counts = Counter(task for task, _, _ in fifth)
    assert set(counts) == set(WORLD_TASKS)  # every task replayed
    assert min(counts["editing"], counts["detection"]) > max(counts["text_to_image"], counts["depth"])
    assert any(task == "vqa" and len(turns) > 2 for task, turns, _ in fifth)  # several questions a picture
    assert any(task == "editing" and len(turns) == 4 for task, turns, _ in fifth)  # edits edited again
    assert weak_cycle_conversations(cfg)[9][1] == fifth[9][1]  # a function of the seed
    sixth = weak_cycle_conversations(replace(cfg, weak2_scenes=60), second=True)
    assert not t2i_prompts(fifth) & t2i_prompts(sixth)  # the sixth cycle's scenes are new too
    assert len(sixth) > 2 * 60
    with pytest.raises(ValueError, match="weak_scenes"):
        WorldTrainConfig(weak_scenes=0)
    with pytest.raises(ValueError, match="weak2_scenes"):
        WorldTrainConfig(weak2_scenes=0)
    assert WorldTrainConfig(weak_scenes=0, lm_weak_steps=0).lm_weak_steps == 0


def test_seventh_cycle_draws_new_scenes_weighted_to_the_text_answers():
    from collections import Counter

    from lumina_world.train import answer_cycle_conversations, weak_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=40,
                           weak_scenes=30, weak2_scenes=40, answer_scenes=150, vqa_turns=4)
    seventh = answer_cycle_conversations(cfg)
    assert not t2i_prompts(weak_cycle_conversations(cfg, second=True)) & t2i_prompts(seventh)
    counts = Counter(task for task, _, _ in seventh)
    assert set(counts) == set(WORLD_TASKS)  # every task replayed
    assert min(counts["vqa"], counts["caption"]) > max(counts["editing"], counts["detection"])
    assert answer_cycle_conversations(cfg)[9][1] == seventh[9][1]  # a function of the seed
    with pytest.raises(ValueError, match="answer_scenes"):
        WorldTrainConfig(answer_scenes=0)
    assert WorldTrainConfig(answer_scenes=0, lm_answer_steps=0).lm_answer_steps == 0


def test_eighth_cycle_draws_new_scenes_and_asks_every_place_first():
    from collections import Counter

    from lumina_world.train import answer_cycle_conversations, place_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=40,
                           weak_scenes=30, weak2_scenes=40, answer_scenes=40, place_scenes=150)
    eighth = place_cycle_conversations(cfg)
    assert not t2i_prompts(answer_cycle_conversations(cfg)) & t2i_prompts(eighth)
    counts = Counter(task for task, _, _ in eighth)
    assert set(counts) == set(WORLD_TASKS)  # every task replayed
    assert counts["caption"] > counts["vqa"] > max(counts["editing"], counts["detection"])
    assert place_cycle_conversations(cfg)[9][1] == eighth[9][1]  # a function of the seed
    follow_ups = [[q.startswith("Where is") for q in turns[2::2]] for task, turns, _ in eighth if task == "vqa"]
    assert all(asks == sorted(asks, reverse=True) for asks in follow_ups)  # places first, then the rest
    assert sum(asks.count(True) >= 2 and False in asks for asks in follow_ups) > 10
    with pytest.raises(ValueError, match="place_scenes"):
        WorldTrainConfig(place_scenes=0)
    assert WorldTrainConfig(place_scenes=0, lm_place_steps=0).lm_place_steps == 0


def test_ninth_cycle_draws_new_two_object_scenes_and_the_tenth_all_counts_again():
    from collections import Counter

    from lumina_world.scene import parse_caption
    from lumina_world.train import pair_cycle_conversations, place_cycle_conversations, spread_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=40,
                           weak_scenes=30, weak2_scenes=40, answer_scenes=40, place_scenes=60, pair_scenes=120,
                           spread_scenes=120)
    eighth, ninth, tenth = (f(cfg) for f in (place_cycle_conversations, pair_cycle_conversations,
                                            spread_cycle_conversations))
    assert not t2i_prompts(eighth) & t2i_prompts(ninth) and not t2i_prompts(ninth) & t2i_prompts(tenth)

    def objects_named(convs):
        return Counter(len(parse_caption(turns[1], *images[0].size).objects) for task, turns, images in convs
                       if task == "caption")

    assert set(objects_named(ninth)) == {2}  # every picture of the ninth cycle holds two objects
    assert set(objects_named(tenth)) == {1, 2, 3, 4}
    counts = Counter(task for task, _, _ in ninth)
    assert set(counts) == set(WORLD_TASKS)  # every task replayed
    assert counts["vqa"] > counts["caption"] > max(counts["editing"], counts["detection"])
    for task, turns, _ in ninth:
        if task == "vqa" and len(turns) >= 6:  # both objects' places asked, before any other follow-up
            asked = [q.replace("<|image|>", "").strip() for q in turns[0::2]]
            assert len({q for q in asked if q.startswith("Where is")}) == 2
            assert all(q.startswith("Where is") for q in asked[1:3]) or asked[0].startswith("Where is")
    assert pair_cycle_conversations(cfg)[9][1] == ninth[9][1]  # a function of the seed
    for steps, scenes in (("lm_pair_steps", "pair_scenes"), ("lm_spread_steps", "spread_scenes"),
                          ("lm_caption_steps", "caption_scenes")):
        with pytest.raises(ValueError, match=scenes):
            WorldTrainConfig(**{scenes: 0})
        assert getattr(WorldTrainConfig(**{scenes: 0, steps: 0}), steps) == 0


def test_eleventh_cycle_draws_new_scenes_of_every_count_captions_the_most():
    from collections import Counter

    from lumina_world.scene import parse_caption
    from lumina_world.train import caption_cycle_conversations, spread_cycle_conversations

    cfg = WorldTrainConfig(t2i_scenes=30, omni_scenes=10, omni_cycle_scenes=20, balance_scenes=40,
                           weak_scenes=30, weak2_scenes=40, answer_scenes=40, place_scenes=60, pair_scenes=60,
                           spread_scenes=100, caption_scenes=150)
    tenth, eleventh = spread_cycle_conversations(cfg), caption_cycle_conversations(cfg)
    assert not t2i_prompts(tenth) & t2i_prompts(eleventh)  # scenes the tenth cycle did not see
    counts, before = Counter(task for task, _, _ in eleventh), Counter(task for task, _, _ in tenth)
    assert set(counts) == set(WORLD_TASKS)  # every task replayed
    assert counts["caption"] > counts["vqa"] > max(counts[t] for t in WORLD_TASKS if t not in ("caption", "vqa"))
    share = {t: counts[t] / counts.total() - before[t] / before.total() for t in WORLD_TASKS}
    assert share["caption"] > 0 and share["text_to_image"] > 0 and share["detection"] > 0
    named = Counter(len(parse_caption(turns[1], *images[0].size).objects) for task, turns, images in eleventh
                    if task == "caption")
    assert set(named) == {1, 2, 3, 4}
    assert caption_cycle_conversations(cfg)[7][1] == eleventh[7][1]  # a function of the seed


def test_places_first_asks_every_object_where_it_is_before_other_questions():
    import random

    from lumina_world.folder_dataset import scene_rng
    from lumina_world.scene import sample_scene, vqa_pairs
    from lumina_world.train import vqa_conversation

    reordered = 0
    for k in range(20):
        scene = sample_scene(scene_rng(0, k, "scene"))
        first = ["How many objects are there? <|image|>", str(len(scene.objects))]
        plain = vqa_conversation(scene, first, 6, random.Random(k))
        placed = vqa_conversation(scene, first, 6, random.Random(k), places_first=True)
        where = dict(vqa_pairs(scene)["position"])
        asked = placed[2::2]
        assert asked[:len(where)] == [q for q in asked if q in where] and set(asked[:len(where)]) == set(where)
        assert all(placed[2 * i + 3] == where[q] for i, q in enumerate(asked) if q in where)
        assert placed[:2] == plain[:2] == first and len(placed) == len(plain)
        reordered += placed != plain
    assert reordered > 5  # without the option the places come anywhere among the other questions


def test_images_the_user_gives_keep_encoder_codes_and_answers_are_snapped(trained_folder):
    """In a two-turn edit the first answer comes back as the second turn's input: as input it must carry
    the encoder's codes (what inference sees), as answer the snapped ones."""
    from comfy_lumina_mgpt.codec import image_codes
    from lumina_world.train import tokenize_conversations
    from lumina_world.vq_train import ALPHABET_FILE, encode_pil, load_alphabet, snap_codes
    from lumina_world.render import render_image
    from lumina_world.scene import sample_scene
    from lumina_world.folder_dataset import scene_rng

    folder, _ = trained_folder
    bundle = load_tokenizer_bundle(folder)
    alphabet = load_alphabet(folder / ALPHABET_FILE)
    a, b = (render_image(sample_scene(scene_rng(0, k, "scene"))) for k in (0, 1))
    convs = [("editing", ["Remove it. <|image|>", "<|image|>", "Move it. <|image|>", "<|image|>"], [a, b, b, a])]
    (ids,), _, _ = tokenize_conversations(convs, bundle, max_seq_len=2048, alphabet=alphabet)
    enc_a, enc_b = encode_pil(bundle.vqgan, [a, b])
    d = bundle.vqgan.downsample
    want = [enc_a, snap_codes(b, enc_b, alphabet, d), enc_b, snap_codes(a, enc_a, alphabet, d)]
    got = image_codes(bundle, ids)
    assert len(got) == 4 and all(torch.equal(g, w) for g, w in zip(got, want))
    assert not torch.equal(want[1], want[2])  # the untrained tiny encoder misses the alphabet: the test can tell


def test_world_train_reuses_finished_stages(trained_folder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import lumina_world.train as world_train

    folder, _ = trained_folder
    work = folder.parent / "work"
    assert (work / "vqgan" / "DONE").is_file() and (work / "vqgan_polished" / "DONE").is_file()
    assert all(any(work.glob(f"{stage}/step-*")) for stage in ("lm", "lm2", "lm3", "lm4"))
    before = load_file(folder / "model.safetensors")
    logs: list[str] = []
    threads = torch.get_num_threads()

    def not_again():
        raise AssertionError("a finished cycle's scenes were drawn again")

    for name in ("omni_cycle_conversations", "balance_cycle_conversations", "weak_cycle_conversations",
                 "answer_cycle_conversations", "place_cycle_conversations", "pair_cycle_conversations",
                 "spread_cycle_conversations", "caption_cycle_conversations"):
        monkeypatch.setattr(world_train, name, lambda *args, **kwargs: not_again())
    run(replace(tiny_config(folder.parent), threads=threads + 1), log=logs.append)  # every stage is found finished
    assert torch.get_num_threads() == threads  # the run's thread count does not leak into the caller
    assert any("reusing the VQGAN" in line for line in logs)
    assert any("reusing the polished VQGAN" in line for line in logs)
    assert any("reusing the language model after three cycles" in line for line in logs)
    # the finished fourth cycle is read back from its last checkpoint, its scenes not tokenised again
    assert any("reusing the language model after cycle 4" in line for line in logs)
    assert not any(line.startswith("stage 4:") for line in logs)
    recorded = (work / "world_train_config.json").read_bytes()
    with pytest.raises(ValueError, match="seed-0 run, not seed 1"):  # another seed never reuses this model
        run(replace(tiny_config(folder.parent), seed=1), log=lambda _: None)
    assert (work / "world_train_config.json").read_bytes() == recorded  # the refused run wrote nothing
    after = load_file(folder / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow  # trains the whole recipe twice more: 6-18 s
def test_world_train_repeats_bit_for_bit_and_depends_on_the_seed(trained_folder, tmp_path):
    """The documented command is reproducible: the same config from nothing (one thread) gives the same
    weights, every stage included; another seed gives others."""
    from safetensors.torch import load_file

    folder, _ = trained_folder
    torch.set_num_threads(1)
    again = run(tiny_config(tmp_path / "again"), log=lambda _: None)
    other = run(replace(tiny_config(tmp_path / "other"), seed=1), log=lambda _: None)
    for name in ("model.safetensors", "vqgan.safetensors"):
        first, second, third = (load_file(f / name) for f in (folder, again, other))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first), name
        assert not all(torch.equal(first[k], third[k]) for k in first), name
    assert (again / "patch_alphabet.json").read_bytes() == (folder / "patch_alphabet.json").read_bytes()


def test_polish_trains_the_decoder_only_and_records_its_ceilings(trained_folder):
    from safetensors.torch import load_file

    folder, logs = trained_folder
    work = folder.parent / "work"
    joint = load_file(work / "vqgan" / "vqgan.safetensors")
    polished = load_file(work / "vqgan_polished" / "vqgan.safetensors")
    shipped = load_file(folder / "vqgan.safetensors")
    assert all(torch.equal(polished[k], shipped[k]) for k in shipped)  # the folder ships the polished one
    moved = {k for k in joint if not torch.equal(joint[k], polished[k])}
    assert moved and all(k.startswith(("decoder.", "post_quant_conv.")) for k in moved)  # codes unchanged
    done = json.loads((work / "vqgan_polished" / "DONE").read_text(encoding="utf-8"))
    for key in ("ceilings_before", "ceilings_after"):
        assert set(done[key]) == set(IMAGE_ANSWER_SUITES)
        assert all(0.0 <= v <= 1.0 for v in done[key].values())
    assert any(line.startswith("vqgan polish: ") and "task images of 2 scenes" in line for line in logs)
    with pytest.raises(ValueError, match="vq_polish_scenes"):
        WorldTrainConfig(vq_polish_scenes=0)


def test_eval_json_has_every_suite_with_overall(trained_folder, capsys):
    folder, _ = trained_folder
    results = evaluate_world(folder, n=1, n_omni=1, seed=3)
    for suite in SUITES:
        assert 0.0 <= results[suite]["overall"] <= 1.0, suite
    assert "aspect_ratio" in results["text_to_image"]
    for suite in IMAGE_ANSWER_SUITES:  # the folder ships its patch alphabet: the decoder's ceiling is known
        assert 0.0 <= results[suite]["decoder_ceiling"] <= 1.0, suite
    assert "decoder_ceiling" not in results["vqa"] and "decoder_ceiling" not in results["text_to_image"]
    assert "overall" in format_table(results)
    assert eval_main(["--suite", "world", "--model", str(folder), "--json", "--n", "1", "--n-omni", "1",
                      "--tasks", "text_to_image,vqa"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"text_to_image", "vqa", "meta"}


def test_eval_writes_one_example_strip_per_suite(trained_folder, tmp_path):
    from PIL import Image

    folder, _ = trained_folder
    out = tmp_path / "examples"
    evaluate_world(folder, n=2, n_omni=1, seed=3, suites=["text_to_image", "depth", "vqa", "multiview"],
                   examples_dir=out)
    index = json.loads((out / "examples.json").read_text(encoding="utf-8"))
    assert [e["suite"] for e in index] == ["text_to_image", "depth", "vqa", "multiview"]
    t2i = index[0]
    assert t2i["tiles"] == ["generated", "world"] * 2 and len(t2i["prompts"]) == 2
    assert index[1]["tiles"] == ["input", "generated", "world"]
    assert "answer" in index[2]["prompts"][0] and "expected" in index[2]["prompts"][0]
    assert index[3]["tiles"][0] == "view 1"
    with Image.open(out / "depth.png") as im:  # three tiles of a world canvas, 4x upscaled, 2-px gaps
        assert im.height % 4 == 0 and im.width > 3 * im.height // 2


def test_eval_rejects_unknown_suite(trained_folder):
    folder, _ = trained_folder
    with pytest.raises(ValueError, match="unknown suite"):
        evaluate_world(folder, suites=["nope"])


def test_patch_alphabet_ranks_patches_and_labels_them():
    from PIL import Image

    from lumina_world import render_image, sample_scene
    from lumina_world.vq_train import patch_alphabet, patch_labels, snap_codes

    images = [render_image(sample_scene(i)) for i in range(20)]
    alphabet = patch_alphabet(images, 8, size=16)
    assert sorted(alphabet.values()) == list(range(16))
    background = bytes(np.full((8, 8, 3), 240, dtype=np.uint8))
    assert alphabet[background] == 0  # the commonest patch gets code 0
    assert patch_alphabet(list(reversed(images)), 8, size=16) == alphabet  # order of images does not matter
    labels = patch_labels(images[0], alphabet, 8)
    assert labels.shape == (images[0].height // 8, images[0].width // 8)
    assert int((labels == 0).sum()) > 0 and int(labels.min()) >= -1
    odd = Image.new("RGB", (16, 8), (240, 240, 240))
    odd.putpixel((12, 3), (1, 2, 3))  # the right patch is unlike any world patch
    codes = torch.tensor([[7, 9]])
    assert snap_codes(odd, codes, alphabet, 8).tolist() == [[0, 9]]


def test_world_probe_asks_every_object_and_captions_every_scene(trained_folder, capsys):
    from collections import Counter

    from lumina_world.binding_probe import probe_scenes, run_probe
    from lumina_world.cli import main

    folder, _ = trained_folder
    scenes = probe_scenes(4, seed=3)
    assert [s.to_dict() for s in probe_scenes(4, seed=3)] == [s.to_dict() for s in scenes]  # seeded
    result = run_probe(folder, scenes=4, seed=3)
    objects = Counter(f"n{len(s.objects)}" for s in scenes for _ in s.objects)
    assert result.places.asked == objects + Counter({"all": sum(objects.values())})
    assert result.captions.asked["all"] == 4
    assert result.wrong_places == result.places.asked["all"] - result.places.right["all"]
    assert 0 <= result.other_object <= result.wrong_places
    assert main(["probe", "--model", str(folder), "--scenes", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("every object's place: ") and "\ncaption: " in out
    assert main(["probe", "--model", str(folder), "--scenes", "0"]) == 2
    assert main(["probe", "--model", str(folder.parent / "no-such-model")]) == 2
    assert "no-such-model does not exist" in capsys.readouterr().err
