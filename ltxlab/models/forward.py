"""The one place that knows the LTX-2.3 forward-call rules, shared by training and sampling.

diffusers' LTX-2.3 transformer crashes or silently mis-conditions unless σ and timesteps are pre-multiplied by
1000, ``audio_timestep``, ``sigma`` and ``audio_sigma`` are always passed (a2v needs ``audio_sigma=0`` explicitly:
it otherwise defaults to the video σ) and ``use_cross_timestep=True`` (DESIGN.md §3).

Audio↔video cross-attention modulation (``model.cross_modulation``):

- ``ltx_core`` (default): current ltx-core (``_prepare_cross_attention_timestep``, since 2026-05-28) — each
  modality's scale/shift AdaLN reads its **own per-token timesteps**, only the gate reads the other modality's σ.
- ``legacy``: diffusers 0.42.1 / ltx-core 1.0.0 — the other modality's σ drives both scale/shift and gate.

diffusers implements only ``legacy``; ``ltx_core`` is obtained by feeding the two scale/shift AdaLN modules
(``av_cross_attn_{video,audio}_scale_shift``) the own timesteps through forward pre-hooks held for one call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

TIMESTEP_SCALE = 1000.0
CROSS_MODULATIONS = ("ltx_core", "legacy")
_MODE_ATTRIBUTE = "_ltxlab_cross_modulation"


def set_cross_modulation(transformer: nn.Module, mode: str) -> None:
    """Record which A↔V cross-modulation ``call_transformer`` uses for this transformer (the loader calls it)."""
    if mode not in CROSS_MODULATIONS:
        raise ValueError(f"cross modulation {mode!r}: expected one of {list(CROSS_MODULATIONS)}")
    setattr(transformer, _MODE_ATTRIBUTE, mode)


def _base_model(transformer: nn.Module) -> nn.Module:
    return getattr(transformer, "module", transformer)  # a DeepSpeed engine wraps the transformer


def cross_modulation_of(transformer: nn.Module) -> str:
    return getattr(_base_model(transformer), _MODE_ATTRIBUTE, CROSS_MODULATIONS[0])


@contextmanager
def _own_timestep_scale_shift(model: nn.Module, video_timesteps: Tensor, audio_timesteps: Tensor) -> Iterator[None]:
    """For one call: the scale/shift AdaLN of each modality's cross-attention gets that modality's per-token
    timesteps (×1000, flattened as diffusers flattens its own timesteps) instead of the other modality's σ."""
    handles = []
    for name, timesteps in (("av_cross_attn_video_scale_shift", video_timesteps),
                            ("av_cross_attn_audio_scale_shift", audio_timesteps)):
        own = (timesteps * TIMESTEP_SCALE).flatten()

        def replace_timestep(module, args, kwargs, own=own):
            return (own.to(args[0].dtype), *args[1:]), kwargs

        handles.append(getattr(model, name).register_forward_pre_hook(replace_timestep, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def call_transformer(transformer: nn.Module, *, video: Tensor, audio: Tensor, text_video: Tensor, text_audio: Tensor,
                     text_mask: Tensor, video_timesteps: Tensor, audio_timesteps: Tensor, sigma: Tensor,
                     audio_sigma: Tensor, video_shape: tuple[int, int, int], fps: float | Tensor,
                     isolate_modalities: bool = False, stg_blocks: list[int] | None = None,
                     video_coords: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Velocity predictions (video [B,N,C], audio [B,L,D]). Timesteps are per token ([B,N], [B,L]) in [0, 1];
    ``sigma``/``audio_sigma`` are the per-sample σ ([B]) that drive the prompt AdaLN and cross-modal modulation.
    ``fps`` is one rate for the batch, or ``[B]`` rates (one per clip) from which per-sample RoPE positions are
    built; ``video_coords`` overrides both."""
    frames, height, width = video_shape
    model = _base_model(transformer)
    if video_coords is None and isinstance(fps, Tensor):
        video_coords = per_sample_video_coords(model, fps, video_shape, video.device)
        fps = float(fps[0])
    call = dict(
        hidden_states=video,
        audio_hidden_states=audio,
        encoder_hidden_states=text_video,
        audio_encoder_hidden_states=text_audio,
        encoder_attention_mask=text_mask,
        audio_encoder_attention_mask=text_mask,
        timestep=video_timesteps * TIMESTEP_SCALE,
        audio_timestep=audio_timesteps * TIMESTEP_SCALE,
        sigma=sigma * TIMESTEP_SCALE,
        audio_sigma=audio_sigma * TIMESTEP_SCALE,
        num_frames=frames,
        height=height,
        width=width,
        fps=fps,
        audio_num_frames=audio.shape[1],
        video_coords=video_coords,
        isolate_modalities=isolate_modalities,
        spatio_temporal_guidance_blocks=stg_blocks,
        use_cross_timestep=True,  # the gate always reads the other modality's σ
        return_dict=False,
    )
    if cross_modulation_of(transformer) == "legacy" or isolate_modalities:
        # Isolated passes skip the A↔V cross-attention: its modulation is unused, so skip the per-token AdaLN.
        return transformer(**call)
    with _own_timestep_scale_shift(model, video_timesteps, audio_timesteps):
        return transformer(**call)


def per_sample_video_coords(model: nn.Module, fps: Tensor, video_shape: tuple[int, int, int], device) -> Tensor:
    """RoPE coordinates [B, 3, N, 2] with each clip's own frame rate (temporal positions are in seconds)."""
    frames, height, width = video_shape
    rates = [float(r) for r in fps.tolist()]
    if len(set(rates)) == 1:
        return model.rope.prepare_video_coords(len(rates), frames, height, width, device, fps=rates[0])
    return torch.cat([model.rope.prepare_video_coords(1, frames, height, width, device, fps=r) for r in rates])
