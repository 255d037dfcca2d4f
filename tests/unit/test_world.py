"""The synthetic world: seeded scenes, task renders, the conversation dataset and the pixel analyser."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from comfy_lumina_mgpt.tasks import IMAGE_PLACEHOLDER
from lumina_world.analyser import box_iou
from lumina_world.benchmark import vqa_scores
from lumina_world.scene import CELL, POSITIONS, Scene, edit_kind, nearest_position, place
from lumina_world import (
    COLOURS,
    SHAPES,
    WORLD_SIZES,
    caption,
    depth_error,
    detect_objects,
    detection_box,
    detection_iou,
    edit_scene,
    edit_score,
    multiview_consistency,
    normals_error,
    render_depth,
    render_detection,
    render_image,
    render_multiview,
    render_normals,
    render_segmentation,
    sample_scene,
    scene_problem,
    score_text_to_image,
    segmentation_iou,
    summarise_scores,
    vqa_accuracy,
)
from lumina_world.dataset import WORLD_TASKS, read_jsonl, write_world_dataset
from lumina_world.cli import main as world_main
from lumina_world.scene import WorldObject, label_components, label_components_numpy, label_map

SCENES = [sample_scene(random.Random(i)) for i in range(50)]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_bytes(tmp_path):
    a = write_world_dataset(tmp_path / "a", 5, seed=7)
    b = write_world_dataset(tmp_path / "b", 5, seed=7)
    c = write_world_dataset(tmp_path / "c", 5, seed=8)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert Path(a).read_bytes() != Path(c).read_bytes()
    assert a.counts == b.counts == {t: 5 for t in WORLD_TASKS}


def test_fewer_tasks_keep_the_same_records(tmp_path):
    full = read_jsonl(write_world_dataset(tmp_path / "full", 3, seed=1).path)
    sub = read_jsonl(write_world_dataset(tmp_path / "sub", 3, seed=1, tasks=["vqa", "editing"]).path)
    assert sub == [r for r in full if r["task"] in ("vqa", "editing")]
    with pytest.raises(ValueError, match="choose from"):
        write_world_dataset(tmp_path / "bad", 1, seed=1, tasks=["depth", "colouring"])


def test_jsonl_has_every_task_in_the_official_format(tmp_path):
    ds = write_world_dataset(tmp_path, 4, seed=3)
    records = read_jsonl(ds.path)
    assert Counter(r["task"] for r in records) == Counter({t: 4 for t in WORLD_TASKS})
    fixed = {"segmentation": "Segmentic segmentation. <|image|>", "depth": "Depth estimation. <|image|>",
             "normals": "Surface normal estimation. <|image|>", "pose": "Human pose estimation. <|image|>",
             "caption": "Describe the image in detail. <|image|>"}
    for r in records:
        human, gpt = r["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        n_placeholders = human["value"].count(IMAGE_PLACEHOLDER) + gpt["value"].count(IMAGE_PLACEHOLDER)
        assert n_placeholders == len(r["image"]) >= 1
        assert all((tmp_path / p).is_file() for p in r["image"])
        sizes = {Image.open(tmp_path / p).size for p in r["image"]}
        assert len(sizes) == 1  # every image of a record has the scene's (or the multiview canvas') size
        task, q, a = r["task"], human["value"], gpt["value"]
        if task in fixed:
            assert q == fixed[task]
        if task == "text_to_image":
            w, h = sizes.pop()
            assert q.startswith(f"Generate an image of {w}x{h} according to the following prompt:\na ")
        elif task == "detection":
            assert q.startswith("Detect: ") and q.endswith(" <|image|>")
            assert q.split()[1] in COLOURS and q.split()[2] in SHAPES
        elif task == "editing":
            assert q.split()[0] in ("Change", "Remove", "Move") and q.endswith(". <|image|>")
        elif task == "condition_to_image":
            assert q.startswith("Generate an image according to the provided image, and according to the "
                                "following caption:\na ") and q.endswith(" <|image|>")
        elif task == "multiview":
            w, h = sizes.pop()
            assert q.startswith(f"Generate 4 views of {w}x{h} of the following object, turning around it:\n")
            assert a == IMAGE_PLACEHOLDER * 4
        elif task == "vqa":
            assert q.endswith("? <|image|>") and a and IMAGE_PLACEHOLDER not in a
        elif task == "caption":
            assert a.startswith("a ") and IMAGE_PLACEHOLDER not in a
        if task not in ("caption", "vqa", "multiview"):
            assert a == IMAGE_PLACEHOLDER
    truth = read_jsonl(tmp_path / "scenes.jsonl")
    assert [t["scene_id"] for t in truth] == [0, 1, 2, 3]


def test_cli_folder_mode_writes_captioned_images(tmp_path, capsys):
    argv = ["generate", "--out", str(tmp_path), "--scenes", "3", "--seed", "2", "--folder-mode"]
    assert world_main(argv) == 0
    pngs, txts = sorted(tmp_path.glob("*.png")), sorted(tmp_path.glob("*.txt"))
    assert [p.stem for p in pngs] == [t.stem for t in txts] == ["000000", "000001", "000002"]
    assert txts[0].read_text(encoding="utf-8").startswith("a ")
    assert world_main(["generate", "--out", str(tmp_path / "j"), "--scenes", "1", "--tasks", "nope"]) == 2


def test_scenes_are_seeded_and_unambiguous():
    assert sample_scene(random.Random(11)) == sample_scene(random.Random(11))
    assert {s.size for s in SCENES} <= set(WORLD_SIZES)
    for s in SCENES:
        assert scene_problem(s) is None
        assert len({o.name for o in s.objects}) == len(s.objects)
    one = sample_scene(3, size=(64, 48), n_objects=2)
    assert caption(one).count(" and ") == 1 and one.size == (64, 48)
    more = [sample_scene(random.Random(i)) for i in range(400)]  # occlusion is rare on the grid (~2 %)
    assert any(int((label_map(s) >= 0).sum()) < sum(_full_area(o, s) for o in s.objects) for s in more), \
        "the sample should contain at least one scene with occlusion"


def test_objects_sit_on_the_grid_nearest_their_anchor():
    for s in SCENES:
        for o in s.objects:
            x0, y0, x1, y1 = o.bbox
            assert (x0 - 1) % CELL == 0 and (y0 - 1) % CELL == 0
            assert x1 - x0 + 1 == (CELL - 1 if o.size == "small" else 2 * CELL - 1)
            assert nearest_position(o.cx, o.cy, s.width, s.height) == o.position
    # a small object in the centre of a 48-px canvas: cells are 0..5, the anchor (24 px) lies between
    # cells 2 and 3; the tie goes to the one whose centre is nearer (cell 2, centre 20.5 px)
    assert place("centre", 3, 48, 48) == (20, 20)
    assert place("right", 7, 64, 32) == (48, 16)
    bad = Scene(48, 48, (WorldObject("square", "red", "small", "centre", 21, 20, 3, 0),))
    assert "grid" in scene_problem(bad)


def _full_area(o: WorldObject, s) -> int:
    from lumina_world.scene import shape_mask

    return int(shape_mask(o.shape, o.cx, o.cy, o.radius, s.width, s.height).sum())


def test_analyser_scores_the_worlds_own_pictures_perfectly():
    scores = [score_text_to_image(render_image(s), s) for s in SCENES]
    summary = summarise_scores(scores)
    assert set(summary) >= {"aspect_ratio", "single_object", "two_objects", "counting", "colour_attribution",
                            "position", "size", "overall"}
    assert summary == {k: 1.0 for k in summary}


def test_analyser_tolerates_slight_blur():
    blur = ImageFilter.GaussianBlur(0.8)
    scores = [score_text_to_image(render_image(s).filter(blur), s) for s in SCENES[:20]]
    assert summarise_scores(scores)["overall"] >= 0.9


def test_analyser_is_low_on_noise_and_blank_pictures():
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (s.height, s.width, 3), dtype=np.uint8) for s in SCENES]
    scores = [score_text_to_image(image, s) for image, s in zip(noise, SCENES)]
    summary = summarise_scores(scores)
    assert summary["aspect_ratio"] == 1.0
    assert all(v <= 0.1 for k, v in summary.items() if k != "aspect_ratio"), summary
    assert detect_objects(Image.new("RGB", (48, 48), (240, 240, 240))) == []
    assert score_text_to_image(render_image(SCENES[0]).resize((80, 80)), SCENES[0])["aspect_ratio"] == 0.0


def test_dense_metrics():
    s = next(s for s in SCENES if len(s.objects) >= 3)
    seg = render_segmentation(s)
    assert segmentation_iou(seg, seg) == 1.0
    shifted = Image.fromarray(np.roll(np.asarray(seg), 3, axis=1))
    assert segmentation_iou(shifted, seg) < 0.8
    assert depth_error(render_depth(s), render_depth(s)) == 0.0
    assert depth_error(Image.new("RGB", s.size), render_depth(s)) > 0.0
    from lumina_world import depth_accuracy

    assert depth_accuracy(render_depth(s), render_depth(s)) == 1.0
    assert depth_accuracy(Image.new("RGB", s.size), render_depth(s)) == 0.0  # a blank map scores nothing
    swapped = np.asarray(render_depth(s)).copy()
    swapped[label_map(s) == 0] = 195  # one uncovered object pushed a layer back
    assert 0.0 < depth_accuracy(swapped, render_depth(s)) < 1.0
    assert normals_error(render_normals(s), render_normals(s)) < 1e-3
    assert normals_error(Image.new("RGB", s.size, (128, 128, 255)), render_normals(s)) > 5.0
    from lumina_world import pose_f1, render_pose

    pose = render_pose(s)
    assert pose_f1(pose, pose) == 1.0
    assert pose_f1(Image.fromarray(np.roll(np.asarray(pose), 1, axis=0)), pose) == 1.0  # 1 px off is found
    assert pose_f1(Image.fromarray(np.roll(np.asarray(pose), 6, axis=1)), pose) < 0.6
    assert pose_f1(Image.new("RGB", s.size), pose) == 0.0
    noise = np.random.default_rng(0).integers(0, 256, (s.height, s.width, 3), dtype=np.uint8)
    assert pose_f1(noise, pose) < 0.3


def test_detection_iou_of_own_render():
    ious = [detection_iou(render_detection(s, o), detection_box(s, o)) for s in SCENES[:20]
            for o in s.objects]
    assert min(ious) > 0.9
    assert detection_iou(render_image(SCENES[0]), detection_box(SCENES[0], SCENES[0].objects[0])) == 0.0


def test_edits_are_seeded_varied_and_scored():
    kinds = Counter()
    for i, s in enumerate(SCENES):
        instruction, edited = edit_scene(s, random.Random(i))
        assert edit_scene(s, random.Random(i)) == (instruction, edited)
        assert scene_problem(edited) is None
        kinds[instruction.split()[0]] += 1
        assert edit_score(render_image(edited), edited) == 1.0
        assert edit_score(render_image(s), edited) < 1.0
    assert set(kinds) == {"Change", "Remove", "Move"}


def _suite_scores(task: str, scene: Scene, truth: dict, answer: Image.Image,
                  target: Image.Image | None = None) -> dict:
    from lumina_world.benchmark import _score_images

    got: dict = {}
    _score_images(task, scene, truth, [] if target is None else [target], [np.asarray(answer)], got.__setitem__)
    return got


def test_benchmark_names_the_usual_wrong_answers():
    """An edit answered with the input picture is ``unchanged`` and wrong under its kind, a box around
    another object is ``other_object``, a right box in a picture missing an object is not ``picture_kept``,
    a position answer naming another object's place is
    ``position_other_object``; the right answers are none of these."""
    boxed_other = 0
    for i, s in enumerate(SCENES[:30]):
        instruction, edited = edit_scene(s, random.Random(i))
        truth = {"editing": {"instruction": instruction, "scene": edited.to_dict()}}
        kind = edit_kind(instruction)
        right = _suite_scores("editing", s, truth, render_image(edited))
        assert right["accuracy"] and right[f"{kind}_accuracy"] and not right["unchanged"], instruction
        copied = _suite_scores("editing", s, truth, render_image(s))
        assert not copied["accuracy"] and not copied[f"{kind}_accuracy"] and copied["unchanged"], instruction
        if len(s.objects) < 2:
            continue
        target, other = s.objects[:2]
        truth = {"detection": {"object": target.name, "box": list(detection_box(s, target))}}
        boxed = render_detection(s, target)
        right = _suite_scores("detection", s, truth, boxed, boxed)
        assert right["picture_kept"] and not right["other_object"]
        # the right box, but the other object left out of the redrawn picture
        dropped = Scene(s.width, s.height, tuple(o for o in s.objects if o is not other))
        assert not _suite_scores("detection", s, truth, render_detection(dropped, target), boxed)["picture_kept"]
        if box_iou(detection_box(s, target), detection_box(s, other)) < 0.5:  # boxes apart: a wrong answer
            wrong = _suite_scores("detection", s, truth, render_detection(s, other), boxed)
            assert wrong["other_object"] and not wrong["acc@0.5"], (target.name, other.name)
            boxed_other += 1
        question = {"kind": "position", "question": f"Where is the {target.name}?", "answer": target.position}
        assert vqa_scores(target.position, s, question) == {
            "accuracy": True, "position_accuracy": True, "position_other_object": False}
        assert vqa_scores(other.position.upper(), s, question)["position_other_object"]
        for empty in set(POSITIONS) - {o.position for o in s.objects}:
            assert vqa_scores(empty, s, question) == {
                "accuracy": False, "position_accuracy": False, "position_other_object": False}
    assert boxed_other >= 10
    assert vqa_scores("red", SCENES[0], {"kind": "colour", "question": "?", "answer": "red"}) == {
        "accuracy": True, "colour_accuracy": True}
    with pytest.raises(ValueError, match="not a world edit"):
        edit_kind("Paint the red circle blue.")


def test_multiview_frames_turn_and_stay_consistent():
    for shape in SHAPES:
        obj = WorldObject(shape, "green", "small", "centre", 0, 0, 0, 0)
        frames = render_multiview(obj, 4, (48, 48))
        arrays = [np.asarray(f) for f in frames]
        assert all(not np.array_equal(a, b) for a, b in zip(arrays, arrays[1:]))
        assert multiview_consistency(frames, obj) == 1.0
        other = render_multiview(WorldObject(shape, "blue", "small", "centre", 0, 0, 0, 0), 4, (48, 48))
        assert multiview_consistency(frames[:3] + other[:1], obj) == 0.75


def test_vqa_accuracy_normalises_answers():
    assert vqa_accuracy(["Red.", "three", "On the left", "center"], ["red", "3", "left", "centre"]) == 1.0
    assert vqa_accuracy(["blue", "2"], ["red", "2"]) == 0.5
    with pytest.raises(ValueError):
        vqa_accuracy(["a"], [])


def test_numpy_labelling_matches():
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = rng.random((23, 31)) < rng.uniform(0.2, 0.7)
        a, n = label_components(mask)
        b, k = label_components_numpy(mask)
        assert n == k and np.array_equal(a, b)
    ring = np.zeros((7, 7), bool)
    ring[1, 1:6] = ring[5, 1:6] = ring[1:6, 1] = ring[1:6, 5] = True
    ring[3, 3] = True
    assert label_components_numpy(ring)[1] == 2


def test_records_round_trip_through_json(tmp_path):
    ds = write_world_dataset(tmp_path, 1, seed=0, tasks=["text_to_image"])
    line = Path(ds).read_text(encoding="utf-8").splitlines()[0]
    assert list(json.loads(line)) == ["conversations", "image", "task", "scene_id"]


def test_captions_parse_back_into_their_scenes():
    from lumina_world import parse_caption

    for s in SCENES:
        assert parse_caption(caption(s), s.width, s.height) == s
    with pytest.raises(ValueError, match="names no world object"):
        parse_caption("a photo of a cat", 48, 48)
    with pytest.raises(ValueError, match="share a position"):
        parse_caption("a large red circle on the left and a small blue square on the left", 48, 48)


def test_caption_matches_any_order_except_where_objects_overlap():
    from lumina_world import caption_matches

    apart = next(s for s in SCENES if len(s.objects) >= 2 and not any(
        a.bbox[0] <= b.bbox[2] and b.bbox[0] <= a.bbox[2] and a.bbox[1] <= b.bbox[3] and b.bbox[1] <= a.bbox[3]
        for i, a in enumerate(s.objects) for b in s.objects[i + 1:]))
    reversed_caption = " and ".join(reversed(caption(apart).split(" and ")))
    assert caption_matches(caption(apart), apart) and caption_matches(reversed_caption, apart)
    assert not caption_matches(" and ".join(caption(apart).split(" and ")[:-1]), apart)  # an object missing
    first = apart.objects[0]
    other = next(c for c in ("red", "green", "blue", "yellow") if c != first.colour)
    assert not caption_matches(caption(apart).replace(first.colour, other, 1), apart)  # a wrong colour
    assert not caption_matches("a photo of a cat", apart)

    for seed in range(2000):  # an overlapping pair: only the back-to-front order matches
        s = sample_scene(seed, n_objects=2)
        a, b = s.objects
        if a.bbox[0] <= b.bbox[2] and b.bbox[0] <= a.bbox[2] and a.bbox[1] <= b.bbox[3] and b.bbox[1] <= a.bbox[3]:
            break
    else:
        pytest.fail("no overlapping two-object scene in 2000 seeds")
    assert caption_matches(caption(s), s)
    assert not caption_matches(" and ".join(reversed(caption(s).split(" and "))), s)


def test_depth_map_shows_only_the_layer_order_a_picture_shows():
    """Two scenes that draw the same picture get the same depth map (the drawing order of objects that do
    not touch is hidden), and an object another covers sits a layer behind it."""
    import itertools
    import random
    from dataclasses import replace

    from lumina_world.render import DEPTH_LEVELS, occlusion_layers, render_image

    reorderings = covered = 0
    for i in range(400):
        s = sample_scene(random.Random(f"depth-layers:{i}"))
        picture, depth = np.asarray(render_image(s)), np.asarray(render_depth(s))
        for perm in itertools.permutations(range(len(s.objects))):
            other = Scene(s.width, s.height, tuple(replace(s.objects[k], depth=d) for d, k in enumerate(perm)))
            if perm != tuple(range(len(perm))) and np.array_equal(np.asarray(render_image(other)), picture):
                reorderings += 1
                assert np.array_equal(np.asarray(render_depth(other)), depth)
        layers = occlusion_layers(s)
        if any(layers):
            covered += 1
            back = layers.index(max(layers))
            visible = label_map(s) == back
            assert (depth[visible][:, 0] == DEPTH_LEVELS[max(layers)]).all() and max(layers) >= 1
    assert reorderings > 100 and covered >= 3  # both cases were met
