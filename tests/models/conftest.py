"""The tiny model's components, built once per test module."""

from __future__ import annotations

import pytest
import torch

from ltxlab.models import loader
from ltxlab.models.spec import ModelConfig

TINY = ModelConfig()


@pytest.fixture(scope="module")
def parts() -> dict:
    return {
        "transformer": loader.load_transformer(TINY),
        "text": loader.load_text_stack(TINY),
        "vae": loader.load_video_vae(TINY),
        "audio_vae": loader.load_audio_vae(TINY),
        "vocoder": loader.load_vocoder(TINY),
    }


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
