"""Pretraining stages 1 and 2: the tiny video VAE (pixel reconstruction) and the audio VAE + vocoder.

Every step's data is a pure function of (seed, stage, step) — clips rendered from ``world`` with
``numpy.random.default_rng([seed, stage, step])`` — so a stage resumed from its last checkpoint continues exactly as
if it had never stopped. Losses are plain reconstruction losses (no GAN: CPU-sized, and the tiny world is flat
colours and pure tones).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ltxlab.models import codecs, tiny
from ltxlab.pretrain import world

VIDEO_FRAMES = 17  # the demo's clip length: 1 + 2 × 8 (three latent frames)
VIDEO_SIZE = (512, 512)  # the demo's resolution; the VAE trains on crops of it
CROP = 96
VAE_TRAIN_FRAMES = 9  # 1 + 8: the first latent frame and one 8-frame group, half the cost of 17
CLIP_SECONDS = VIDEO_FRAMES / 24
AUDIO_SECONDS = 1.0
VOCODER_RATE = 48000


def step_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


# ------------------------------------------------------------------------------------------------ video VAE


def video_batch(rng: np.random.Generator, batch: int, crop: int | None = CROP,
                frames_per_clip: int = VAE_TRAIN_FRAMES) -> Tensor:
    """[B, 3, F, crop, crop] pixels in [-1, 1]: random clips, each cropped around its shape's path."""
    clips = []
    for _ in range(batch):
        spec = world.random_spec(rng, (*world.AXIS_MOTIONS, *world.DIAGONAL_MOTIONS, "pulsing"))
        frames = world.render_frames(spec, frames_per_clip, 24, VIDEO_SIZE)
        if crop is not None:
            cx, cy, _ = world.centres_and_radii(spec, frames_per_clip, 24, VIDEO_SIZE)
            w, h = VIDEO_SIZE
            # Crops near the shape (edges are where reconstruction is hard), sometimes anywhere (backgrounds).
            if rng.random() < 0.8:
                x0 = int(np.clip(cx.mean() - crop / 2 + rng.uniform(-crop / 2, crop / 2), 0, w - crop))
                y0 = int(np.clip(cy.mean() - crop / 2 + rng.uniform(-crop / 2, crop / 2), 0, h - crop))
            else:
                x0, y0 = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
            x0, y0 = x0 // 32 * 32, y0 // 32 * 32  # the latent grid of the full frame
            frames = frames[:, y0 : y0 + crop, x0 : x0 + crop]
        clips.append(world.to_pixels(frames))
    return torch.from_numpy(np.stack(clips))


def colour_target(pixels: Tensor) -> Tensor:
    """[B, 3, 1 + 8k, H, W] -> [B, 3, 1 + k, H/32, W/32]: the mean colour of each latent cell (frame 0 alone, then
    8-frame groups, as the causal VAE groups them)."""
    first, rest = pixels[:, :, :1], pixels[:, :, 1:]
    b, c, frames, h, w = rest.shape
    grouped = torch.cat([first, rest.reshape(b, c, frames // 8, 8, h, w).mean(dim=3)], dim=2)
    return torch.nn.functional.avg_pool3d(grouped, (1, 32, 32))


def video_vae_loss(vae: nn.Module, pixels: Tensor, generator: torch.Generator, latent_noise: float = 0.05,
                   colour_weight: float = 1.0) -> Tensor:
    """L1 + MSE reconstruction from the posterior mean plus a little noise (the flow model trains on the mean;
    the noise keeps the decoder tolerant of small latent errors), plus a pull of the first three latent channels
    towards each cell's mean colour. The randomly initialised LTX-2 encoder passes almost no colour to its latents
    (its per-pixel RMS norms drop brightness: a linear read-out of flat colours from them has R² < 0.2), so encoder
    and decoder each wait on the other; the pull breaks that (reconstruction loss 0.34 after 900 steps instead of
    0.65). It also bounds the latents' scale, in place of a KL term."""
    mean = vae.encode(pixels).latent_dist.mean
    latents = mean + latent_noise * torch.randn(mean.shape, generator=generator)
    err = vae.decode(latents).sample - pixels
    colour = (mean[:, :3] - colour_target(pixels)).pow(2).mean()
    return err.abs().mean() + err.pow(2).mean() + colour_weight * colour


# ------------------------------------------------------------------------------------------------ audio


def audio_batch(rng: np.random.Generator, batch: int, seconds: float = AUDIO_SECONDS) -> tuple[Tensor, Tensor]:
    """(16 kHz [B, 2, T], 48 kHz [B, 2, 3T]) waveforms of random tones with loudness envelopes."""
    specs = [world.random_spec(rng) for _ in range(batch)]
    low = np.stack([world.render_audio(s, seconds, codecs.SAMPLE_RATE) for s in specs])
    high = np.stack([world.render_audio(s, seconds, VOCODER_RATE) for s in specs])
    return torch.from_numpy(low), torch.from_numpy(high)


def audio_vae_loss(audio_vae: nn.Module, wave16k: Tensor, generator: torch.Generator,
                   kl_weight: float = 1e-6) -> Tensor:
    mel = codecs.log_mel(wave16k, audio_vae.config.mel_bins)
    posterior = audio_vae.encode(mel).latent_dist
    latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    recon = audio_vae.decode(latents).sample
    frames = min(recon.shape[2], mel.shape[2])  # the causal decoder returns 4L - 3 frames
    kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
    return (recon[:, :, :frames] - mel[:, :, :frames]).abs().mean() + kl_weight * kl


def _stft_magnitude(wave: Tensor, n_fft: int) -> Tensor:
    flat = wave.reshape(-1, wave.shape[-1])
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, return_complex=True)
    return (spec.real.pow(2) + spec.imag.pow(2) + 1e-9).sqrt()  # |z| has no gradient at 0: NaN in silence


def spectral_loss(pred: Tensor, target: Tensor, ffts: tuple[int, ...] = (512, 1024, 2048)) -> Tensor:
    """Multi-resolution STFT loss: spectral convergence + log magnitude, averaged over resolutions."""
    length = min(pred.shape[-1], target.shape[-1])
    pred, target = pred[..., :length], target[..., :length]
    total = pred.new_zeros(())
    for n_fft in ffts:
        p, t = _stft_magnitude(pred, n_fft), _stft_magnitude(target, n_fft)
        convergence = torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-6)
        log_mag = (torch.log(p.clamp(min=1e-5)) - torch.log(t.clamp(min=1e-5))).abs().mean()
        total = total + convergence + log_mag
    return total / len(ffts)


@torch.no_grad()
def init_vocoder_stft(vocoder: nn.Module) -> None:
    """Fill the bandwidth-extension stage's STFT and mel buffers, which diffusers and ltx-core build as zeros and
    load from the real checkpoint: a Hann-windowed DFT basis (real rows, then imaginary) and the Slaney mel
    filterbank of the 16 kHz stage-1 output."""
    stft = vocoder.mel_stft.stft_fn
    n_freqs, _, length = stft.forward_basis.shape
    n_freqs //= 2
    window = torch.hann_window(stft.window_length, periodic=True, dtype=torch.float64)
    window = torch.nn.functional.pad(window, ((length - window.numel()) // 2, (length - window.numel() + 1) // 2))
    k = torch.arange(n_freqs, dtype=torch.float64)[:, None]
    n = torch.arange(length, dtype=torch.float64)[None]
    angle = 2 * math.pi * k * n / length
    basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])[:, None]
    stft.forward_basis.copy_(basis.to(stft.forward_basis.dtype))
    mels = vocoder.mel_stft.mel_basis.shape[0]
    filters = codecs.mel_filterbank(n_freqs, mels, codecs.SAMPLE_RATE).T
    vocoder.mel_stft.mel_basis.copy_(filters.to(vocoder.mel_stft.mel_basis.dtype))


def vocoder_loss(vocoder: nn.Module, wave16k: Tensor, wave48k: Tensor) -> Tensor:
    mel = codecs.log_mel(wave16k, tiny.MEL_BINS)
    return spectral_loss(vocoder(mel), wave48k)


# ------------------------------------------------------------------------------------------------ normalisation


@torch.no_grad()
def set_video_latent_stats(vae: nn.Module, seed: int, clips: int = 16) -> None:
    """Per-channel mean/std of the encoded world at full resolution -> the VAE's ``latents_mean/std`` buffers,
    so normalised latents are unit-scale for the flow model (the real VAE ships its own statistics)."""
    rng = step_rng(seed, 90, 0)
    latents = torch.cat([vae.encode(video_batch(rng, 1, None, VIDEO_FRAMES)).latent_dist.mode() for _ in range(clips)])
    vae.latents_mean.copy_(latents.mean(dim=(0, 2, 3, 4)))
    vae.latents_std.copy_(latents.std(dim=(0, 2, 3, 4)).clamp(min=1e-3))


@torch.no_grad()
def set_audio_latent_stats(audio_vae: nn.Module, seed: int, clips: int = 64) -> None:
    """Packed-token mean/std of the encoded world's audio -> the audio VAE's ``latents_mean/std``."""
    wave, _ = audio_batch(step_rng(seed, 91, 0), clips)
    mel = codecs.log_mel(wave, audio_vae.config.mel_bins)
    tokens = codecs.pack_audio(audio_vae.encode(mel).latent_dist.mode())
    audio_vae.latents_mean.copy_(tokens.mean(dim=(0, 1)))
    audio_vae.latents_std.copy_(tokens.std(dim=(0, 1)).clamp(min=1e-3))
