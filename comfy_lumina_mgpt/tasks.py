"""The Omni-SFT task prompts, as one data table.

The strings are the ones the official Omni checkpoint was trained on (LUMINA_SPEC §3.2), spelling included
("Segmentic segmentation." is how the official demo writes it). The image always follows the instruction,
separated by one space. Multiview, captioning and VQA have no official prompt; ours are defined here once
and documented in README.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_PLACEHOLDER = "<|image|>"


def refuse_placeholder(text: str, what: str = "the prompt") -> None:
    """ValueError if user text holds ``<|image|>``: images come only from image inputs. (Every other control
    spelling is allowed and stays literal text: see ``TextTokenizer.encode``.)"""
    if IMAGE_PLACEHOLDER in text:
        raise ValueError(f"{what} must not contain {IMAGE_PLACEHOLDER}; connect images to the image input")


@dataclass(frozen=True)
class Task:
    """One task: how its user message is written.

    Attributes:
        name: stable identifier used by nodes and the benchmark.
        template: user message; ``{prompt}`` is the user's text, ``{image}`` the image placeholder,
            ``{width}``/``{height}``/``{views}`` where the task takes them.
        needs_image: whether the message carries an input image.
    """

    name: str
    template: str
    needs_image: bool

    def message(self, prompt: str = "", **fields: object) -> str:
        """The user message for this task, with ``<|image|>`` where the input image goes."""
        return self.template.format(prompt=prompt, image=IMAGE_PLACEHOLDER, **fields)


TEXT_TO_IMAGE = Task(
    "text_to_image",
    "Generate an image of {width}x{height} according to the following prompt:\n{prompt}",
    False,
)

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        TEXT_TO_IMAGE,
        Task("segmentation", "Segmentic segmentation. {image}", True),
        Task("depth", "Depth estimation. {image}", True),
        Task("normals", "Surface normal estimation. {image}", True),
        Task("pose", "Human pose estimation. {image}", True),
        Task("detection", "Detect: {prompt} {image}", True),
        Task("editing", "{prompt} {image}", True),
        Task(
            "condition_to_image",
            "Generate an image according to the provided image, and according to the following caption:\n"
            "{prompt} {image}",
            True,
        ),
        # Not in the official release: our own wording, trained into the bundled model.
        Task(
            "multiview",
            "Generate {views} views of {width}x{height} of the following object, turning around it:\n{prompt}",
            False,
        ),
        Task("caption", "Describe the image in detail. {image}", True),
        Task("vqa", "{prompt} {image}", True),
        Task("chat", "{prompt}", False),
    )
}

DENSE_PREDICTION_TASKS = ("segmentation", "depth", "normals", "pose")


def get_task(name: str) -> Task:
    """Look a task up by exact name; the error lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; choose one of {sorted(TASKS)}") from None


# Sampling of the official Omni demos (LUMINA_SPEC §4.4): no guidance, image top-k 200, text top-k 5. The task
# nodes take these as their widget defaults.
OMNI_CFG, OMNI_IMAGE_TOP_K, OMNI_TEXT_TOP_K = 1.0, 200, 5
MAX_PROMPT_CHARS = 1024


def user_message(task: str, prompt: str = "", **fields: object) -> str:
    """The exact user message of a task (official wording where one exists); ValueError for a prompt that is
    too long, holds ``<|image|>``, or is missing where the task needs one."""
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}")
    refuse_placeholder(prompt)
    spec = get_task(task)
    if "{prompt}" in spec.template and not prompt.strip():
        raise ValueError(f"the {task} task needs a text prompt (the instruction, object or caption)")
    return spec.message(prompt, **fields)
