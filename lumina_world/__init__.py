"""The synthetic world of simple shapes, the lab around the engine: scenes, renders of every Omni task, a pixel
analyser, datasets, the recipe that trains the bundled model (``train``, ``vq_train``) and the world benchmark
(``benchmark``). Its pictures can be scored exactly, so the bundled model's every task can be measured.

Layering: ``lumina_world`` imports the engine (``comfy_lumina_mgpt``), never the reverse. The modules re-exported
here (scene, render, analyser, folder_dataset) import nothing outside ``lumina_world``: inside ComfyUI the pack's
packages are reached only by relative imports, and the Example Dataset node loads them there
(``tests/unit/test_import_boundary.py`` holds both rules).
"""

from __future__ import annotations

from .analyser import (
    DetectedObject,
    box_iou,
    caption_matches,
    depth_accuracy,
    depth_error,
    detect_objects,
    detection_iou,
    edit_score,
    find_detection_box,
    iou,
    main_object,
    multiview_consistency,
    normalise_answer,
    normals_error,
    pose_f1,
    score_text_to_image,
    segmentation_iou,
    summarise_scores,
    vqa_accuracy,
)
from .folder_dataset import WorldDataset, write_folder_dataset
from .render import (
    CONDITION_KINDS,
    DETECTION_BOX_RGB,
    MULTIVIEW_SIZES,
    SEGMENTATION_RGB,
    detection_box,
    render_condition,
    render_condition_pairs,
    render_depth,
    render_detection,
    render_image,
    render_multiview,
    render_normals,
    render_pose,
    render_segmentation,
)
from .scene import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    WORLD_SIZES,
    Scene,
    WorldObject,
    caption,
    edit_scene,
    label_components,
    object_radius,
    parse_caption,
    sample_scene,
    scene_problem,
    vqa_pairs,
)

__all__ = [
    "BACKGROUND_RGB", "COLOURS", "COLOUR_RGB", "CONDITION_KINDS", "DETECTION_BOX_RGB", "MULTIVIEW_SIZES",
    "POSITIONS", "SEGMENTATION_RGB", "SHAPES", "SIZES", "WORLD_SIZES", "DetectedObject",
    "Scene",
    "WorldDataset", "WorldObject", "box_iou", "caption", "caption_matches", "depth_accuracy", "depth_error",
    "detect_objects",
    "detection_box",
    "detection_iou", "edit_scene", "edit_score", "find_detection_box", "iou", "label_components",
    "main_object",
    "multiview_consistency", "normalise_answer", "normals_error", "object_radius", "parse_caption", "pose_f1",
    "render_condition", "render_condition_pairs", "render_depth", "render_detection", "render_image",
    "render_multiview", "render_normals", "render_pose", "render_segmentation", "sample_scene",
    "scene_problem", "score_text_to_image", "segmentation_iou", "summarise_scores",
    "vqa_accuracy", "vqa_pairs", "write_folder_dataset",
]
