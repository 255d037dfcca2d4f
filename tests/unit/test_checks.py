"""The pure value checks the nodes and the command lines share."""

from __future__ import annotations

import pytest

from comfy_lumina_mgpt.checks import choice_problem, number_problem, require, text_problem


@pytest.mark.parametrize("value, words", [
    ("bad \ud800 half", "lone surrogate"),
    ("nul \x00 inside", "control character '\\x00'"),
    ("escape \x1b[31m", "control character '\\x1b'"),
    (5, "must be text"),
])
def test_text_that_is_not_valid_is_refused(value, words):
    problem = text_problem(value, "widget 'prompt'")
    assert problem is not None and words in problem and "widget 'prompt'" in problem


def test_ordinary_text_passes():
    assert text_problem("Ein Hund im Schnee 🐕\n\twith tabs and line breaks", "prompt") is None


@pytest.mark.parametrize("value, kwargs, words", [
    (float("nan"), {}, "must be a finite number"),
    (float("inf"), {"minimum": 0.0, "maximum": 16.0}, "between 0.0 and 16.0"),
    (-1, {"integer": True, "minimum": 0}, "must be at least 0, got -1"),
    (2.5, {"integer": True}, "must be a whole number"),
    (True, {}, "must be a number"),
    ("3", {}, "must be a number"),
])
def test_numbers_must_be_finite_and_in_range(value, kwargs, words):
    problem = number_problem(value, "cfg", **kwargs)
    assert problem is not None and words in problem


def test_good_numbers_pass():
    assert number_problem(3, "cfg", minimum=0.0, maximum=16.0) is None
    assert number_problem(0.5, "p", minimum=0.0, maximum=1.0) is None


def test_choices_name_the_setting_and_the_allowed_values():
    problem = choice_problem("fp64", ["auto", "bf16", "fp16", "fp32"], "widget 'dtype'")
    assert problem == "widget 'dtype': 'fp64' is not one of the allowed values 'auto', 'bf16', 'fp16', 'fp32'"
    assert choice_problem(64, ["64"], "target_size") is not None  # no silent str() of a number
    many = choice_problem("999x999", [f"{i}x{i}" for i in range(100)], "resolution")
    assert "... (100 choices in all)" in many
    assert "nothing to choose from" in choice_problem("x", [], "lora_name")
    assert choice_problem("bf16", ["auto", "bf16"], "dtype") is None


def test_require_raises_the_problem():
    require(None)
    with pytest.raises(ValueError, match="broken"):
        require("broken")
