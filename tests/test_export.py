"""Exported LoRAs load into diffusers' LTX2Pipeline, consume every key, and reproduce the trained model."""

from __future__ import annotations

import pytest
import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from ltxlab.config.schema import LoraConfig
from ltxlab.export import comfy_state_dict, lora_state_dict, save_lora
from ltxlab.models.loader import load_pipeline, load_transformer
from ltxlab.models.ltx23 import build_meta_transformer
from ltxlab.models.spec import ModelConfig
from ltxlab.modes import ImageToVideo, LatentBatch, ShiftedLogitNormal
from ltxlab.train.lora import attach_lora
from ltxlab.train.step import predict

MODEL = ModelConfig()


def random_inputs(transformer) -> tuple:
    g = torch.Generator().manual_seed(3)
    cfg = transformer.config
    f, h, w = 2, 2, 2
    batch = LatentBatch(video=torch.randn(1, f * h * w, cfg.in_channels, generator=g), video_shape=(f, h, w),
                        audio=torch.randn(1, 5, cfg.audio_in_channels, generator=g),
                        text_video=torch.randn(1, 32, cfg.cross_attention_dim, generator=g),
                        text_audio=torch.randn(1, 32, cfg.audio_cross_attention_dim, generator=g),
                        text_mask=torch.ones(1, 32), fps=24.0)
    inputs = ImageToVideo(1.0, ShiftedLogitNormal(), cfg.audio_in_channels).prepare(batch, g)
    return inputs, batch


def trained_transformer(rank: int, alpha: float | None) -> tuple:
    transformer = load_transformer(MODEL)
    peft_config = attach_lora(transformer, LoraConfig(rank=rank, alpha=alpha), seed=0)
    with torch.no_grad():  # stand-in for training: make every lora_B non-zero so the adapter has an effect
        g = torch.Generator().manual_seed(1)
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return transformer, peft_config


@pytest.mark.parametrize(("rank", "alpha"), [(8, None), (8, 16.0), (16, 4.0)])
def test_both_formats_reproduce_the_trained_model(tmp_path, rank: int, alpha: float | None) -> None:
    transformer, peft_config = trained_transformer(rank, alpha)
    comfy_file, diffusers_file = save_lora(transformer, peft_config, tmp_path)
    inputs, batch = random_inputs(transformer)
    with torch.no_grad():
        expected = predict(transformer, inputs, batch)[0]
        base = load_transformer(MODEL)
        effect = (expected - predict(base, inputs, batch)[0]).abs().max()
    assert effect > 1e-2  # the adapter matters, so matching below is meaningful

    trained_keys = set(lora_state_dict(transformer))
    for path in (comfy_file, diffusers_file):
        pipe = load_pipeline(MODEL)
        pipe.load_lora_weights(str(path), adapter_name="trained")
        loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="trained")
        assert set(loaded) == trained_keys  # every key consumed, none missing
        with torch.no_grad():
            got = predict(pipe.transformer, inputs, batch)[0]
        assert (got - expected).abs().max() < 1e-5, path.name


def test_comfy_format_bakes_alpha_over_rank_into_lora_b() -> None:
    state = {"blocks.0.to_q.lora_A.weight": torch.ones(2, 4), "blocks.0.to_q.lora_B.weight": torch.ones(4, 2)}
    out = comfy_state_dict(state, rank=2, alpha=8.0)
    assert torch.equal(out["diffusion_model.blocks.0.to_q.lora_A.weight"], torch.ones(2, 4))
    assert torch.equal(out["diffusion_model.blocks.0.to_q.lora_B.weight"], torch.full((4, 2), 4.0))


def test_keys_map_onto_the_real_ltx23_transformer(tmp_path) -> None:
    transformer, peft_config = trained_transformer(8, None)
    comfy_file, _ = save_lora(transformer, peft_config, tmp_path)
    real_modules = {name for name, _ in build_meta_transformer().named_modules()}
    keys = load_file(str(comfy_file))
    assert keys
    for key in keys:
        assert key.startswith("diffusion_model.")
        module = key.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0]
        assert module in real_modules, module
        assert "to_gate_logits" not in module
    covered = {k.split(".")[3] for k in keys}  # attention module names within a block
    assert covered == {"attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn",
                       "video_to_audio_attn"}
