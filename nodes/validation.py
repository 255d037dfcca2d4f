"""The pack checks every widget value itself, from each node's own schema, before anything runs.

ComfyUI 0.3.75 checks V3 combo values nowhere (its "value not in list" test only runs for list-typed inputs) and
lets NaN through its min/max test (every comparison with NaN is false), so a client can send any string for a
dropdown and NaN for a number. ``CheckedNode`` is the base of every node in the pack: its ``validate_inputs``
checks each widget value against the schema (combo in its options, int/float finite and within min/max, strings
valid text, booleans real booleans) plus the node's own ``value_problem``, so a bad value is a node error before
the prompt is queued. Values that come through a link are unknown at validation time (ComfyUI passes None);
``execute`` is wrapped to check them again when they arrive.

A ``validate_inputs`` that takes ``**kwargs`` makes ComfyUI skip its own min/max test for every widget, which is
why the ranges are checked here too. ComfyUI repeats a failed validation's message once per input name.
"""

from __future__ import annotations

import functools
from typing import Any

from comfy_api.latest import io

from ..comfy_lumina_mgpt.checks import choice_problem, number_problem, text_problem


def widget_problem(widget: io.Input, value: Any) -> str | None:
    """What is wrong with one widget's value (None if nothing, or if the input is not a widget)."""
    what = f"widget '{widget.id}'"
    if isinstance(widget, io.Combo.Input):
        return choice_problem(value, list(widget.options or []), what)
    if isinstance(widget, io.Boolean.Input):
        return None if isinstance(value, bool) else f"{what} must be true or false, got {value!r:.80}"
    if isinstance(widget, io.Int.Input):
        return number_problem(value, what, integer=True, minimum=widget.min, maximum=widget.max)
    if isinstance(widget, io.Float.Input):
        return number_problem(value, what, minimum=widget.min, maximum=widget.max)
    if isinstance(widget, io.String.Input):
        return text_problem(value, what)
    return None


def schema_problem(schema: io.Schema, values: dict[str, Any]) -> str | None:
    """The first bad widget value among ``values`` (None values, i.e. links not yet evaluated, are skipped)."""
    for widget in schema.inputs:
        value = values.get(widget.id)
        if value is not None:
            problem = widget_problem(widget, value)
            if problem is not None:
                return problem
    return None


class CheckedNode(io.ComfyNode):
    """Base of every node of the pack: widget values are checked against the schema at validation time and
    again at execution (see the module docstring). Subclasses add their own checks in ``value_problem``."""

    @classmethod
    def value_problem(cls, values: dict[str, Any]) -> str | None:
        """Node-specific checks beyond the schema (None values are links not yet evaluated: skip them)."""
        return None

    @classmethod
    def input_problem(cls, values: dict[str, Any]) -> str | None:
        # define_schema again: folder dropdowns list what is on disk now, as the editor does on refresh
        return schema_problem(cls.define_schema(), values) or cls.value_problem(values)

    @classmethod
    def validate_inputs(cls, **values: Any) -> bool | str:
        problem = cls.input_problem(values)
        return True if problem is None else problem

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # ComfyUI runs nodes on clones of their class (copied dicts, some locked): wrap each execute once
        execute = cls.__dict__.get("execute")
        if isinstance(execute, classmethod) and not getattr(execute.__func__, "checks_inputs", False):
            cls.execute = classmethod(_checked_execute(execute.__func__))


def _checked_execute(execute):
    @functools.wraps(execute)
    def checked(cls, *args: Any, **values: Any):
        problem = cls.input_problem(values)
        if problem is not None:
            raise ValueError(problem)
        return execute(cls, *args, **values)

    checked.checks_inputs = True
    return checked
