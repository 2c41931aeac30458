"""model.cross_modulation: ltx_core by default, legacy selectable, anything else rejected before training."""

from __future__ import annotations

import pytest

from ltxlab.config.validate import validate
from ltxlab.errors import ConfigError
from ltxlab.models import loader
from ltxlab.models.forward import cross_modulation_of
from ltxlab.models.spec import ModelConfig


@pytest.mark.parametrize("model", ["tiny", "ltx23"])
def test_default_is_current_ltx_core(compose_cfg, model: str) -> None:
    assert compose_cfg(f"model={model}").model.cross_modulation == "ltx_core"


def test_legacy_is_selectable_and_unknown_values_are_rejected(compose_cfg) -> None:
    assert validate(compose_cfg("model.cross_modulation=legacy")).model.cross_modulation == "legacy"
    with pytest.raises(ConfigError, match=r"model.cross_modulation='diffusers' is not allowed"):
        validate(compose_cfg("model.cross_modulation=diffusers"))


def test_the_loaded_transformer_carries_the_behaviour() -> None:
    assert cross_modulation_of(loader.load_transformer(ModelConfig())) == "ltx_core"
    assert cross_modulation_of(loader.load_transformer(ModelConfig(cross_modulation="legacy"))) == "legacy"
