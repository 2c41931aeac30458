"""One way to get model components, whatever `model.name` is.

Code outside `ltxlab.models` calls only these functions, so the tiny model (tests, CI, CPU) and the real
LTX-2.3 share every other line. Every component comes back frozen (`requires_grad=False`, eval mode) in
`model.dtype`; training adds LoRA adapters on top of the frozen transformer. Nothing is cached: each call
builds or loads afresh (tiny: identical weights for the same seed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2VideoTransformer3DModel,
)

from ltxlab.errors import ConfigError
from ltxlab.models import ltx23, pretrained, tiny
from ltxlab.models.forward import CROSS_MODULATIONS, set_cross_modulation
from ltxlab.models.quantize import UNQUANTIZED, quantize_base, quantize_linears
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import TextStack

MODEL_NAMES = ("tiny", "ltx23")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_TINY_BUILDERS: dict[str, Callable[[int], torch.nn.Module]] = {
    "transformer": tiny.build_transformer,
    "connectors": tiny.build_connectors,
    "video_vae": tiny.build_video_vae,
    "audio_vae": tiny.build_audio_vae,
    "vocoder": tiny.build_vocoder,
    "text_encoder": tiny.build_text_encoder,
}


def torch_dtype(cfg: ModelConfig) -> torch.dtype:
    """The torch dtype named by `model.dtype`."""
    if cfg.dtype not in _DTYPES:
        raise ConfigError(f"model.dtype: {cfg.dtype!r} is not supported; use one of {sorted(_DTYPES)}")
    return _DTYPES[cfg.dtype]


def _check_name(cfg: ModelConfig) -> None:
    if cfg.name not in MODEL_NAMES:
        raise ConfigError(f"model.name: unknown model {cfg.name!r}; expected one of {list(MODEL_NAMES)}")


def _frozen(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    tensors = [*module.parameters(), *module.buffers()]
    if any(t.is_floating_point() and t.dtype != dtype for t in tensors):
        # torch's own `to`: diffusers' override warns about fp32-kept modules even when there are none.
        torch.nn.Module.to(module, dtype)
    return module.eval().requires_grad_(False)


def _component(cfg: ModelConfig, name: str) -> torch.nn.Module:
    _check_name(cfg)
    dtype = torch_dtype(cfg)
    if cfg.name == "tiny":
        return _frozen(_tiny_component(cfg, name), dtype)
    return _frozen(ltx23.load_component(cfg, name, dtype), dtype)


def _tiny_component(cfg: ModelConfig, name: str) -> torch.nn.Module:
    """Random weights from ``model.seed``, or with ``model.tiny_weights`` the pretrained ones (their own sizes,
    from the folder's manifest) for the components pretraining trains; the text stack stays seed-built, from the
    seed pretraining used."""
    if cfg.tiny_weights and name in pretrained.COMPONENTS:
        return pretrained.PretrainedTiny.open(cfg.tiny_weights).build(name)
    return _TINY_BUILDERS[name](_tiny_seed(cfg))


def _tiny_seed(cfg: ModelConfig) -> int:
    return pretrained.PretrainedTiny.open(cfg.tiny_weights).seed if cfg.tiny_weights else cfg.seed


def load_transformer(cfg: ModelConfig, init_context: contextlib.AbstractContextManager | None = None,
                     ) -> LTX2VideoTransformer3DModel:
    """The audio-video transformer (the only component training loads), its frozen blocks stored at
    `model.base_precision`."""
    if cfg.cross_modulation not in CROSS_MODULATIONS:
        raise ConfigError(f"model.cross_modulation: {cfg.cross_modulation!r} is not one of {list(CROSS_MODULATIONS)}")
    with init_context or contextlib.nullcontext():  # deepspeed.zero.Init partitions the weights as they are built
        if init_context is not None and cfg.name == "ltx23":  # real weights: streamed into the shards
            from ltxlab.models.partitioned import load_partitioned_transformer

            model = _frozen(load_partitioned_transformer(cfg, torch_dtype(cfg)), torch_dtype(cfg))
        else:
            model = _component(cfg, "transformer")
    set_cross_modulation(model, cfg.cross_modulation)
    quantize_base(model, cfg.base_precision)
    if cfg.attention_backend != "native":
        set_attention_backend(model, cfg.attention_backend)
    if cfg.compile:
        for block in model.transformer_blocks:
            block.compile()  # per block: one graph reused 48 times, the step's Python stays outside
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model


def set_attention_backend(model: torch.nn.Module, backend: str) -> None:
    """diffusers' attention dispatch: a named backend for every attention module (checked before use)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    names = [b.value for b in AttentionBackendName]
    if backend not in names:
        raise ConfigError(f"model.attention_backend: {backend!r} is not a diffusers attention backend; "
                          f"use one of {names}")
    model.set_attention_backend(backend)


def place_transformer(model: torch.nn.Module, cfg: ModelConfig, device: torch.device) -> torch.nn.Module:
    """Move the (LoRA-wrapped) transformer to ``device``; with ``model.offload=blocks`` the frozen block weights
    stay on the host and stream in block by block (call after LoRA is attached: LoRA weights never move)."""
    if cfg.offload == "blocks":
        from ltxlab.models.offload import offload_blocks

        offload_blocks(model, device)
        return model
    return model.to(device)


def load_text_stack(cfg: ModelConfig) -> TextStack:
    """Tokenizer + Gemma 3 + text connectors, checked against `model.max_sequence_length`."""
    _check_name(cfg)
    dtype = torch_dtype(cfg)
    if cfg.name == "tiny":
        tokenizer, encoder = tiny.build_tokenizer(), tiny.build_text_encoder(_tiny_seed(cfg))
    else:
        tokenizer, encoder = ltx23.load_text_encoder(cfg, dtype)
    connectors = _component(cfg, "connectors")
    registers = {
        connectors.config.video_connector_num_learnable_registers,
        connectors.config.audio_connector_num_learnable_registers,
    } - {None}
    length = cfg.max_sequence_length
    # Connectors replace padding with learned registers tiled along the sequence: it must divide evenly.
    if length <= 0 or any(length % r for r in registers):
        raise ConfigError(
            f"model.max_sequence_length: {length} must be a positive multiple of the text connectors' "
            f"{max(registers, default=1)} learnable registers"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoder = _frozen(encoder, dtype)
    if cfg.text_encoder_precision not in UNQUANTIZED:  # int8 Gemma: ≈12 GB instead of ≈24 GB at encode time
        quantize_linears(encoder, cfg.text_encoder_precision, "model.text_encoder_precision", skip=("lm_head",))
    return TextStack(tokenizer, text_encoder=encoder, connectors=connectors, max_sequence_length=length)


def load_video_vae(cfg: ModelConfig) -> AutoencoderKLLTX2Video:
    vae = _component(cfg, "video_vae")
    if cfg.vae_tiling:
        vae.enable_tiling()  # spatial tiles (512 px, stride 448)
        vae.use_framewise_decoding = True  # diffusers' switch for temporal tiles, encode included (16 frames, stride 8)
        vae.use_framewise_encoding = True
    return vae


def load_audio_vae(cfg: ModelConfig) -> AutoencoderKLLTX2Audio:
    return _component(cfg, "audio_vae")


def load_vocoder(cfg: ModelConfig) -> torch.nn.Module:
    """`LTX2VocoderWithBWE`: mel (16 kHz frames) -> 48 kHz stereo waveform."""
    return _component(cfg, "vocoder")


def load_scheduler(cfg: ModelConfig) -> FlowMatchEulerDiscreteScheduler:
    """The LTX-2.3 sampling scheduler (same for tiny: the schedule does not depend on model size)."""
    _check_name(cfg)
    return FlowMatchEulerDiscreteScheduler.from_config(ltx23.scheduler_config())


def load_pipeline(cfg: ModelConfig):
    """The diffusers ``LTX2Pipeline`` over the same components (used to prove exported LoRAs load there)."""
    from diffusers import LTX2Pipeline

    text = load_text_stack(cfg)
    return LTX2Pipeline(scheduler=load_scheduler(cfg), vae=load_video_vae(cfg), audio_vae=load_audio_vae(cfg),
                        text_encoder=text.text_encoder, tokenizer=text.tokenizer, connectors=text.connectors,
                        transformer=load_transformer(cfg), vocoder=load_vocoder(cfg))
