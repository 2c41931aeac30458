"""What a mode hands the transformer: per-modality noisy tokens, per-token timesteps and loss masks.

Conditioning is nothing but tensor surgery here: a clean token has timestep 0 and no loss; a frozen modality has
σ = 0 everywhere and contributes no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ModalityInputs:
    noisy: Tensor  # [B, N, C] tokens fed to the transformer
    timesteps: Tensor  # [B, N] per-token σ in [0, 1]; 0 on clean (conditioning) tokens
    sigma: Tensor  # [B] the sampled σ of the modality (prompt AdaLN and cross-modal modulation)
    target: Tensor  # [B, N, C] velocity target ε − x₀
    loss_mask: Tensor  # [B, N] float, 1 where the loss counts


@dataclass
class LatentBatch:
    """A training batch as read from the latent shards (packed tokens, text embeddings)."""

    video: Tensor  # [B, N, C] packed in (f, h, w) order
    video_shape: tuple[int, int, int]  # latent (frames, height, width)
    audio: Tensor | None  # [B, L, D] packed audio latents, None when audio is off
    text_video: Tensor  # [B, S, Dv] connector output for the video stream
    text_audio: Tensor  # [B, S, Da]
    text_mask: Tensor  # [B, S]
    fps: float | Tensor  # one rate, or [B] per-clip rates (RoPE positions are in seconds)


@dataclass
class TrainingInputs:
    video: ModalityInputs
    audio: ModalityInputs
    audio_in_loss: bool  # False for a2v (frozen conditioning) and for video-only runs
    isolate_modalities: bool  # video-only runs: no audio↔video cross-attention, as if audio were absent
    video_shape: tuple[int, int, int]
    fps: float | Tensor


def noise_tokens(clean: Tensor, sigma: Tensor, clean_mask: Tensor, generator: torch.Generator) -> ModalityInputs:
    """Flow-matching noising x_σ = (1−σ)x₀ + σε with ``clean_mask`` tokens kept clean and out of the loss."""
    # Drawn on the CPU generator so a seed gives the same noise on every device (and on resume).
    noise = torch.randn(clean.shape, generator=generator).to(device=clean.device, dtype=clean.dtype)
    token_sigma = sigma[:, None].to(clean.dtype) * (~clean_mask).to(clean.dtype)
    s = token_sigma[..., None]
    return ModalityInputs(
        noisy=(1 - s) * clean + s * noise,
        timesteps=token_sigma,
        sigma=sigma.to(clean.dtype),
        target=noise - clean,
        loss_mask=(~clean_mask).to(clean.dtype),
    )


def frozen_tokens(clean: Tensor) -> ModalityInputs:
    """A conditioning modality: clean tokens, σ = 0 and timesteps 0 passed explicitly, no loss."""
    b, n, _ = clean.shape
    zeros = clean.new_zeros(b, n)
    return ModalityInputs(noisy=clean, timesteps=zeros, sigma=clean.new_zeros(b), target=torch.zeros_like(clean),
                          loss_mask=zeros)


def absent_audio(batch_size: int, width: int, like: Tensor) -> ModalityInputs:
    """Video-only runs: the LTX-2 forward always takes an audio stream, so pass one silent frozen token and
    isolate the modalities so it cannot influence the video."""
    return frozen_tokens(like.new_zeros(batch_size, 1, width))


def first_frame_mask(batch_size: int, video_shape: tuple[int, int, int], held: Tensor, device: torch.device) -> Tensor:
    """[B, N] bool mask of the first latent frame's tokens (the first H'·W' tokens) for samples where ``held``."""
    f, h, w = video_shape
    mask = torch.zeros(batch_size, f * h * w, dtype=torch.bool, device=device)
    mask[:, : h * w] = held.to(device)[:, None]
    return mask
