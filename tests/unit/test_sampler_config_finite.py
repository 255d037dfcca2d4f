"""SamplerConfig refuses NaN and infinite settings (they pass every range comparison unnoticed)."""

from __future__ import annotations

import pytest

from comfy_lumina_mgpt.sampling.settings import SamplerConfig


@pytest.mark.parametrize("name", ["cfg_scale", "image_top_p", "text_top_p", "image_temperature",
                                  "text_temperature"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        SamplerConfig(**{name: value})


def test_finite_settings_still_pass():
    assert SamplerConfig(cfg_scale=4.0, image_temperature=0.5).guided
