"""The transformer call and the loss: the single place that knows the LTX-2.3 forward-call rules."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ltxlab.modes.inputs import LatentBatch, TrainingInputs

TIMESTEP_SCALE = 1000.0  # the 2.3 transformer expects σ and timesteps pre-multiplied by 1000


def predict(transformer: nn.Module, inputs: TrainingInputs, batch: LatentBatch) -> tuple[Tensor, Tensor]:
    """Velocity predictions (video, audio). Always passes audio_timestep, sigma and audio_sigma: diffusers'
    LTX-2.3 forward crashes or silently mis-conditions without them (DESIGN.md §3)."""
    frames, height, width = inputs.video_shape
    video, audio = inputs.video, inputs.audio
    return transformer(
        hidden_states=video.noisy,
        audio_hidden_states=audio.noisy,
        encoder_hidden_states=batch.text_video,
        audio_encoder_hidden_states=batch.text_audio,
        encoder_attention_mask=batch.text_mask,
        audio_encoder_attention_mask=batch.text_mask,
        timestep=video.timesteps * TIMESTEP_SCALE,
        audio_timestep=audio.timesteps * TIMESTEP_SCALE,
        sigma=video.sigma * TIMESTEP_SCALE,
        audio_sigma=audio.sigma * TIMESTEP_SCALE,
        num_frames=frames,
        height=height,
        width=width,
        fps=inputs.fps,
        audio_num_frames=audio.noisy.shape[1],
        isolate_modalities=inputs.isolate_modalities,
        use_cross_timestep=True,
        return_dict=False,
    )


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-sample MSE over the tokens where ``mask`` is 1 ([B])."""
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)
    return (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@dataclass
class LossParts:
    total: Tensor  # scalar, what is back-propagated
    video: Tensor  # [B]
    audio: Tensor | None  # [B] when audio is generated


def compute_loss(video_pred: Tensor, audio_pred: Tensor, inputs: TrainingInputs, video_weight: float = 1.0,
                 audio_weight: float = 1.0) -> LossParts:
    video = masked_mse(video_pred, inputs.video.target, inputs.video.loss_mask)
    total = video_weight * video.mean()
    audio = None
    if inputs.audio_in_loss:
        audio = masked_mse(audio_pred, inputs.audio.target, inputs.audio.loss_mask)
        total = total + audio_weight * audio.mean()
    return LossParts(total=total, video=video.detach(), audio=None if audio is None else audio.detach())


def autocast_for(device: torch.device, dtype: str) -> torch.autocast:
    """bf16 autocast on CUDA when the base model is bf16; full precision elsewhere (CPU tests, fp32 runs)."""
    enabled = device.type == "cuda" and dtype == "bfloat16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
