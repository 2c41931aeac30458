"""The training forward and the loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ltxlab import distributed
from ltxlab.models.forward import call_transformer
from ltxlab.modes.inputs import LatentBatch, TrainingInputs


def predict(transformer: nn.Module, inputs: TrainingInputs, batch: LatentBatch) -> tuple[Tensor, Tensor]:
    """Velocity predictions (video, audio) for a training batch."""
    video, audio = inputs.video, inputs.audio
    return call_transformer(
        transformer, video=video.noisy, audio=audio.noisy, text_video=batch.text_video, text_audio=batch.text_audio,
        text_mask=batch.text_mask, video_timesteps=video.timesteps, audio_timesteps=audio.timesteps,
        sigma=video.sigma, audio_sigma=audio.sigma, video_shape=inputs.video_shape, fps=inputs.fps,
        isolate_modalities=inputs.isolate_modalities)


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


def read_step_values(video_losses: list[Tensor], audio_losses: list[Tensor],
                     grad_norm: Tensor | None) -> dict[str, float]:
    """The step's mean losses (and gradient norm, when given) as floats: one host sync."""
    names, values = ["video_loss"], [torch.cat(video_losses).float().mean()]
    if audio_losses:
        names.append("audio_loss")
        values.append(torch.cat(audio_losses).float().mean())
    if grad_norm is not None:
        names.append("grad_norm")
        values.append(grad_norm.to(values[0].device))
    # Averaged over ranks: the logged loss is the whole step's, and every rank's guard decides on the same value.
    return dict(zip(names, distributed.mean_over_ranks(torch.stack(values)).tolist(), strict=True))
