"""Frozen-base precision, offload and their config rules, in process on the tiny model (the README's "Memory and
speed" section reports the figures these tests print)."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora.torchao import TorchaoLoraLinear

from ltxlab.config.schema import LoraConfig
from ltxlab.config.validate import validate
from ltxlab.errors import ConfigError
from ltxlab.models.loader import load_transformer, place_transformer
from ltxlab.models.quantize import is_quantized, weight_bytes
from ltxlab.models.spec import ModelConfig
from ltxlab.train.lora import attach_lora
from ltxlab.train.step import compute_loss, predict
from tests.test_export import random_inputs


def _relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return float((got.float() - reference).abs().mean() / reference.abs().mean())


def test_int8_base_output_differs_from_bf16_by_a_measured_amount() -> None:
    reference = load_transformer(ModelConfig())
    inputs, batch = random_inputs(reference)
    with torch.no_grad():
        expected = predict(reference, inputs, batch)[0]
        errors = {}
        for precision, dtype in (("bf16", "bfloat16"), ("int8", "float32"), ("int8", "bfloat16")):
            model = load_transformer(ModelConfig(base_precision=precision, dtype=dtype))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                errors[f"{precision}/{dtype}"] = _relative_error(predict(model, inputs, batch)[0], expected)
    print("relative mean abs error of the video prediction vs fp32:", errors)
    assert 0 < errors["int8/float32"] < 0.02  # per-channel int8 on its own
    assert errors["int8/bfloat16"] < 2 * errors["bf16/bfloat16"] + 0.01  # int8 over bf16 adds little to bf16's own


def test_int8_base_stores_blocks_in_int8_under_fp32_lora() -> None:
    plain, quantized = load_transformer(ModelConfig()), load_transformer(ModelConfig(base_precision="int8"))
    to_q = quantized.transformer_blocks[0].attn1.to_q
    assert is_quantized(to_q.weight) and "weight" not in dict(to_q.named_parameters())  # a buffer, never trained
    blocks = weight_bytes(quantized.transformer_blocks) / weight_bytes(plain.transformer_blocks)
    print(f"transformer blocks: int8 holds {blocks:.2f}× the fp32 bytes")
    assert blocks < 0.4  # int8 weights (¼ of fp32) plus fp32 biases, norms and per-channel scales
    attach_lora(quantized, LoraConfig(rank=4), seed=0)
    lora_layer = quantized.transformer_blocks[0].attn1.to_q
    assert isinstance(lora_layer, TorchaoLoraLinear)
    trainable = {n: p.dtype for n, p in quantized.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and d == torch.float32 for n, d in trainable.items())


def _losses(cfg: ModelConfig, steps: int = 4) -> tuple[list[float], torch.nn.Module]:
    transformer = load_transformer(cfg)
    attach_lora(transformer, LoraConfig(rank=4), seed=0)
    transformer = place_transformer(transformer, cfg, torch.device("cpu"))
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    inputs, batch = random_inputs(transformer)
    losses = []
    for _ in range(steps):
        loss = compute_loss(*predict(transformer, inputs, batch), inputs).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, transformer


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_block_offload_gives_the_same_losses(precision: str) -> None:
    base = ModelConfig(base_precision=precision, gradient_checkpointing=True)
    expected, _ = _losses(base)
    got, offloaded = _losses(ModelConfig(base_precision=precision, gradient_checkpointing=True, offload="blocks"))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert expected[-1] < expected[0]  # the LoRA is learning in both
    # Between steps the frozen weights of all but at most one block (the last recomputed: checkpointing stops its
    # recompute early) are out of the model, on the host with the offloader ...
    offloader = offloaded._ltxlab_offloader
    assert len(offloader.attached_blocks()) <= 1 and offloader.host_bytes() > 0
    to_q = offloaded.transformer_blocks[1].attn1.to_q
    assert to_q.base_layer.weight is None
    # ... while LoRA weights stay in place, trainable.
    assert to_q.lora_A["default"].weight.requires_grad


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.dtype=bfloat16"], "model.base_precision=fp32 contradicts model.dtype=bfloat16"),
    (["model.offload=blocks", "deepspeed=zero3"], "cannot be combined with deepspeed=zero3"),
    (["model.offload=blocks", "model.compile=true"], "model.compile=true cannot be combined"),
    (["model.base_precision=int8", "deepspeed=zero3"], "base_precision=int8 cannot be combined"),
    (["model.base_precision=int4"], "model.base_precision='int4' is not allowed"),
    (["optim.optimizer=sgd"], "optim.optimizer='sgd' is not allowed"),
])
def test_memory_option_rules(compose_cfg, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(*overrides))


def test_fp8_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: fp8 may be supported here")
    with pytest.raises(ConfigError, match="fp8 needs a CUDA GPU"):
        load_transformer(ModelConfig(base_precision="fp8"))


def test_encoder_encodes_each_caption_once_before_loading_the_vaes() -> None:
    from ltxlab.data.encode import Encoder, prompt_tensors

    encoder = Encoder(ModelConfig(), with_audio=False, device=torch.device("cpu"),
                      captions=["a red car", "a cat sleeps", "a red car"])
    assert list(encoder._captions) == ["a red car", "a cat sleeps"]  # distinct captions, encoded up front
    with torch.no_grad():
        direct = prompt_tensors(encoder.prompts(["a cat sleeps"]), 0, encoder.dtype)
    cached = encoder.caption_tensors("a cat sleeps")
    assert all(torch.equal(cached[k], direct[k]) for k in direct)
    assert encoder.caption_tensors("unseen caption")["text_video"].shape == direct["text_video"].shape


def test_vae_tiling_encodes_a_clip_larger_than_one_tile() -> None:
    from ltxlab.models.codecs import encode_video
    from ltxlab.models.loader import load_video_vae

    plain, tiled = load_video_vae(ModelConfig()), load_video_vae(ModelConfig(vae_tiling=True))
    assert tiled.use_tiling and tiled.use_framewise_decoding and not plain.use_tiling
    tiled.tile_sample_min_height = tiled.tile_sample_min_width = 64  # tiny tiles so a small clip needs four
    tiled.tile_sample_stride_height = tiled.tile_sample_stride_width = 32
    pixels = torch.rand(1, 3, 9, 96, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a, b = encode_video(plain, pixels), encode_video(tiled, pixels)
    assert a.shape == b.shape and torch.isfinite(b).all()
    print(f"tiled vs untiled latents: relative error {_relative_error(b, a):.3g}")


def test_attention_backend_dispatch_and_compile_flags() -> None:
    reference = load_transformer(ModelConfig())
    math = load_transformer(ModelConfig(attention_backend="_native_math"))
    inputs, batch = random_inputs(reference)
    with torch.no_grad():
        expected, got = predict(reference, inputs, batch)[0], predict(math, inputs, batch)[0]
    assert torch.allclose(got, expected, atol=1e-5)  # same attention, another kernel
    with pytest.raises(ConfigError, match="not a diffusers attention backend"):
        load_transformer(ModelConfig(attention_backend="fastest"))
    compiled = load_transformer(ModelConfig(compile=True))  # compiles lazily, at the first call of each block
    assert all(block._compiled_call_impl is not None for block in compiled.transformer_blocks)


def test_adamw8bit_state_round_trips_exactly() -> None:
    """8-bit AdamW state saved and loaded mid-run continues exactly as the uninterrupted optimizer."""
    from ltxlab.config.schema import OptimConfig
    from ltxlab.train.engine import build_optimizer

    def params() -> list[torch.nn.Parameter]:
        g = torch.Generator().manual_seed(0)
        return [torch.nn.Parameter(torch.randn(64, 80, generator=g)), torch.nn.Parameter(torch.randn(8, generator=g))]

    def steps(optimizer, tensors, n: int) -> None:
        for _ in range(n):
            sum((t.sin() ** 2).sum() for t in tensors).backward()
            optimizer.step()
            optimizer.zero_grad()

    cfg = OptimConfig(optimizer="adamw8bit", learning_rate=1e-2)
    straight = params()
    optimizer = build_optimizer(straight, cfg)
    steps(optimizer, straight, 5)
    assert optimizer.state[straight[0]]["state1"].dtype == torch.uint8  # 5120 elements: 8-bit moments
    resumed = params()
    first = build_optimizer(resumed, cfg)
    steps(first, resumed, 3)
    second = build_optimizer(resumed, cfg)
    second.load_state_dict(first.state_dict())
    steps(second, resumed, 2)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed, strict=True))
