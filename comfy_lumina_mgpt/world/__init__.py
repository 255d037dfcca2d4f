"""The synthetic world of simple shapes: scenes, renders of every Omni task, datasets and a pixel analyser.

The bundled small model is trained on it, and its pictures can be scored exactly (``analyser``).
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
from .dataset import (
    WORLD_TASKS,
    WorldDataset,
    read_jsonl,
    scene_examples,
    write_folder_dataset,
    write_world_dataset,
)
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
    "POSITIONS", "SEGMENTATION_RGB", "SHAPES", "SIZES", "WORLD_SIZES", "WORLD_TASKS", "DetectedObject",
    "Scene",
    "WorldDataset", "WorldObject", "box_iou", "caption", "caption_matches", "depth_accuracy", "depth_error",
    "detect_objects",
    "detection_box",
    "detection_iou", "edit_scene", "edit_score", "find_detection_box", "iou", "label_components",
    "main_object",
    "multiview_consistency", "normalise_answer", "normals_error", "object_radius", "parse_caption", "pose_f1",
    "read_jsonl",
    "render_condition", "render_condition_pairs", "render_depth", "render_detection", "render_image",
    "render_multiview", "render_normals", "render_pose", "render_segmentation", "sample_scene",
    "scene_examples", "scene_problem", "score_text_to_image", "segmentation_iou", "summarise_scores",
    "vqa_accuracy", "vqa_pairs", "write_folder_dataset", "write_world_dataset",
]
