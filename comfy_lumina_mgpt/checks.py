"""Pure checks of user-given values, shared by the ComfyUI nodes (``nodes/validation.py``) and the command lines.

Each ``*_problem`` function returns None when the value is fine, else one sentence that names the setting, says
what is wrong and what to give instead; ``require`` turns such a sentence into a ``ValueError``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence

MAX_LISTED_CHOICES = 20  # longer option lists (e.g. every size) are shown cut, with their count
ALLOWED_CONTROLS = "\t\n\r"


def require(problem: str | None) -> None:
    """Raise ``ValueError(problem)`` when there is one."""
    if problem is not None:
        raise ValueError(problem)


def text_problem(value: object, what: str) -> str | None:
    """A string that is valid text: encodable as UTF-8 (no lone surrogates) and without control characters
    other than tab and line breaks (a NUL cuts strings short in C libraries and file names)."""
    if not isinstance(value, str):
        return f"{what} must be text, got {type(value).__name__} {value!r:.80}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"{what} is not valid text: position {err.start} holds a lone surrogate "
                f"({value[err.start]!r}); send it as UTF-8 text")
    for i, char in enumerate(value):
        if char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            return (f"{what} holds the control character {char!r} at position {i}; remove it "
                    "(only tabs and line breaks are allowed)")
    return None


def number_problem(value: object, what: str, *, integer: bool = False, minimum: float | None = None,
                   maximum: float | None = None) -> str | None:
    """A real number (an ``int`` when ``integer``), finite, within ``[minimum, maximum]`` where given."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        return f"{what} must be {kind}, got {type(value).__name__} {value!r:.80}"
    if not math.isfinite(value):
        return f"{what} must be a finite number, got {value}; give {_range_text(minimum, maximum) or 'a number'}"
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        return f"{what} must be {_range_text(minimum, maximum)}, got {value}"
    return None


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"between {minimum} and {maximum}"
    if minimum is not None:
        return f"at least {minimum}"
    if maximum is not None:
        return f"at most {maximum}"
    return ""


def choice_problem(value: object, options: Sequence[str], what: str) -> str | None:
    """``value`` must be one of ``options`` (exactly, no case folding)."""
    if isinstance(value, str) and value in options:
        return None
    if not options:
        return f"{what}: there is nothing to choose from (got {value!r:.80}); add the files it lists, then refresh"
    shown = list(options[:MAX_LISTED_CHOICES])
    listed = ", ".join(repr(o) for o in shown)
    if len(options) > len(shown):
        listed += f", ... ({len(options)} choices in all)"
    return f"{what}: {value!r:.80} is not one of the allowed values {listed}"
