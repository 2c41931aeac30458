"""The one place that knows the LTX-2.3 forward-call rules, shared by training and sampling.

diffusers' LTX-2.3 transformer crashes or silently mis-conditions unless σ and timesteps are pre-multiplied by
1000, ``audio_timestep``, ``sigma`` and ``audio_sigma`` are always passed (a2v needs ``audio_sigma=0`` explicitly:
it otherwise defaults to the video σ) and ``use_cross_timestep=True`` (DESIGN.md §3).
"""

from __future__ import annotations

from torch import Tensor, nn

TIMESTEP_SCALE = 1000.0


def call_transformer(transformer: nn.Module, *, video: Tensor, audio: Tensor, text_video: Tensor, text_audio: Tensor,
                     text_mask: Tensor, video_timesteps: Tensor, audio_timesteps: Tensor, sigma: Tensor,
                     audio_sigma: Tensor, video_shape: tuple[int, int, int], fps: float,
                     isolate_modalities: bool = False, stg_blocks: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """Velocity predictions (video [B,N,C], audio [B,L,D]). Timesteps are per token ([B,N], [B,L]) in [0, 1];
    ``sigma``/``audio_sigma`` are the per-sample σ ([B]) that drive the prompt AdaLN and cross-modal modulation."""
    frames, height, width = video_shape
    return transformer(
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
        isolate_modalities=isolate_modalities,
        spatio_temporal_guidance_blocks=stg_blocks,
        use_cross_timestep=True,
        return_dict=False,
    )
