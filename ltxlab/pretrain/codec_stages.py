"""Pretraining stages 1 and 2: the tiny video VAE and the audio VAE + vocoder, both on a designed latent.

Each VAE's latent has a fixed meaning — per latent cell, mean colours (video) or mean log-mel (audio) — so encoder
and decoder learn as two supervised problems instead of waiting on each other (README, "Pretraining the tiny
model"). Every step's data is a pure function of (seed, stage, step) — clips rendered from ``world`` with
``numpy.random.default_rng([seed, stage, step])`` — so a stage resumed from its last checkpoint continues exactly as
if it had never stopped. Losses are plain reconstruction losses (no GAN: CPU-sized, and the tiny world is flat
colours and pure tones); the VAE stages run under bf16 autocast, 6–7× faster on AVX-512 BF16 CPUs.
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
CROP = 192  # a 6×6 latent grid, mostly interior cells as in a whole frame (96² crops taught edge behaviour)
CLIP_SECONDS = VIDEO_FRAMES / 24
AUDIO_SECONDS = 1.0
VOCODER_RATE = 48000
# The designed latent: each 32×32 cell holds TIME_BINS × (THUMB × THUMB) × RGB mean colours of its frames.
THUMB = 4
TIME_BINS = 2
DESIGNED_CHANNELS = TIME_BINS * THUMB * THUMB * 3


def step_rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


# ------------------------------------------------------------------------------------------------ video VAE


def video_batch(rng: np.random.Generator, batch: int, crop: int | None = CROP,
                frames_per_clip: int = VIDEO_FRAMES) -> Tensor:
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


def designed_latent(pixels: Tensor) -> Tensor:
    """[B, 3, 1 + 8k, H, W] -> [B, DESIGNED_CHANNELS, 1 + k, H/32, W/32]: per latent cell, the mean colours of a
    THUMB×THUMB grid in each of TIME_BINS equal slices of its frames (frame 0 is its own cell, as the causal VAE
    groups it, so its slices are all frame 0). Channel order: (time bin, colour, row, column)."""
    b, c, frames, h, w = pixels.shape
    first = pixels[:, :, :1].expand(b, c, TIME_BINS, h, w)[:, :, None]  # [B, 3, 1, bins, H, W]
    rest = pixels[:, :, 1:].reshape(b, c, (frames - 1) // 8, TIME_BINS, 8 // TIME_BINS, h, w).mean(dim=4)
    bins = torch.cat([first, rest], dim=2)  # [B, 3, F', bins, H, W]
    cell = 32 // THUMB
    thumbs = torch.nn.functional.avg_pool2d(bins.flatten(0, 3), cell).unflatten(0, bins.shape[:4])
    latent_frames = bins.shape[2]
    thumbs = thumbs.reshape(b, c, latent_frames, TIME_BINS, h // 32, THUMB, w // 32, THUMB)
    return thumbs.permute(0, 3, 1, 5, 7, 2, 4, 6).reshape(b, DESIGNED_CHANNELS, latent_frames, h // 32, w // 32)


def video_decoder_loss(vae: nn.Module, pixels: Tensor, generator: torch.Generator,
                       latent_noise: float = 0.05) -> Tensor:
    """L1 + MSE of frames painted by the decoder alone from the designed latent (plus a little noise, so it
    tolerates the encoder's and the flow model's small latent errors)."""
    target = designed_latent(pixels)
    err = vae.decode(target + latent_noise * torch.randn(target.shape, generator=generator)).sample.float() - pixels
    return err.abs().mean() + err.pow(2).mean()


def video_encoder_loss(vae: nn.Module, pixels: Tensor) -> Tensor:
    """MSE of the encoder's posterior mean to the designed latent."""
    return (vae.encode(pixels).latent_dist.mean.float() - designed_latent(pixels)).pow(2).mean()


def video_vae_loss(vae: nn.Module, pixels: Tensor, generator: torch.Generator, latent_noise: float = 0.05) -> Tensor:
    """End to end: reconstruction (L1 + MSE) from the encoder's latent + its distance to the designed latent, which
    stays as the latent's regulariser (in place of a KL term)."""
    latents = vae.encode(pixels).latent_dist.mean
    design = (latents.float() - designed_latent(pixels)).pow(2).mean()
    err = vae.decode(latents + latent_noise * torch.randn(latents.shape, generator=generator)).sample.float() - pixels
    return err.abs().mean() + err.pow(2).mean() + design


def heldout_clips(seed: int, clips: int) -> list[world.ClipSpec]:
    """World clips no training step draws (their own stage number), for the measured codec quality."""
    return [world.random_spec(step_rng(seed, 95, i), (*world.AXIS_MOTIONS, *world.DIAGONAL_MOTIONS, "pulsing"))
            for i in range(clips)]


@torch.no_grad()
def heldout_video_psnr(vae: nn.Module, seed: int, clips: int = 4) -> float:
    """Mean PSNR (dB, uint8 frames) of encode → decode on held-out clips at the demo's size and length."""
    values = []
    for spec in heldout_clips(seed, clips):
        frames = world.render_frames(spec, VIDEO_FRAMES, 24, VIDEO_SIZE)
        pixels = torch.from_numpy(world.to_pixels(frames))[None]
        decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample[0]
        values.append(world.psnr(world.to_frames(decoded.numpy()), frames))
    return round(float(np.mean(values)), 2)


# ------------------------------------------------------------------------------------------------ audio


def audio_batch(rng: np.random.Generator, batch: int, seconds: float = AUDIO_SECONDS) -> tuple[Tensor, Tensor]:
    """(16 kHz [B, 2, T], 48 kHz [B, 2, 3T]) waveforms of random tones with loudness envelopes."""
    specs = [world.random_spec(rng) for _ in range(batch)]
    low = np.stack([world.render_audio(s, seconds, codecs.SAMPLE_RATE) for s in specs])
    high = np.stack([world.render_audio(s, seconds, VOCODER_RATE) for s in specs])
    return torch.from_numpy(low), torch.from_numpy(high)


def designed_audio_latent(mel: Tensor) -> Tensor:
    """[B, 2, 1 + 4k, M] log-mel -> [B, 2, 1 + k, M/4]: per stereo channel, the mean log-mel of each latent cell
    (mel frame 0 alone, then groups of 4 frames, as the causal audio VAE groups them; 4 mel bins wide)."""
    b, c, frames, mels = mel.shape
    rest = mel[:, :, 1:].reshape(b, c, (frames - 1) // 4, 4, mels).mean(dim=3)
    cells = torch.cat([mel[:, :, :1], rest], dim=2)
    return cells.reshape(b, c, cells.shape[2], mels // 4, 4).mean(dim=-1)


def audio_vae_loss(audio_vae: nn.Module, wave16k: Tensor, generator: torch.Generator, teacher: bool) -> Tensor:
    """Mel L1 + the first two latent channels' distance to :func:`designed_audio_latent` (the other channels are
    learnt freely): the video VAE's recipe, for the same reason (end to end, the envelope was lost: mel
    correlation 0.3 after 800 steps)."""
    mel = codecs.log_mel(wave16k, audio_vae.config.mel_bins)
    mel = mel[:, :, : 1 + (mel.shape[2] - 1) // 4 * 4]
    target = designed_audio_latent(mel)
    latents = audio_vae.encode(mel).latent_dist.mean
    design = (latents[:, : target.shape[1]] - target).pow(2).mean()
    source = torch.cat([target, latents[:, target.shape[1] :]], dim=1) if teacher else latents
    recon = audio_vae.decode(source + 0.05 * torch.randn(source.shape, generator=generator)).sample
    return (recon - mel).abs().mean() + design


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


@torch.no_grad()
def calibrate_vocoder_level(vocoder: nn.Module, seed: int, clips: int = 8) -> float:
    """Set the vocoder's output level, which its spectral loss leaves ~200× low, and return the gain applied.

    The stage-1 vocoder's output convolution is scaled so held-out tones come out at their source RMS, and the
    bandwidth extension's output convolution is zeroed: the world's tones (220–660 Hz) have nothing above the
    16 kHz stage's band to add, so the 48 kHz output is the resampled stage-1 wave."""
    specs = heldout_clips(seed, clips)
    waves = torch.stack([torch.from_numpy(world.render_audio(s, AUDIO_SECONDS, codecs.SAMPLE_RATE)) for s in specs])
    produced = vocoder.vocoder(codecs.log_mel(waves, tiny.MEL_BINS))
    gain = float(waves.pow(2).mean().sqrt() / produced.pow(2).mean().sqrt().clamp(min=1e-8))
    for param in vocoder.vocoder.conv_out.parameters():
        param.mul_(gain)
    for param in vocoder.bwe_generator.conv_out.parameters():
        param.zero_()
    return gain


@torch.no_grad()
def heldout_envelope_correlation(audio_vae: nn.Module, vocoder: nn.Module, seed: int, clips: int = 6) -> float:
    """Mean Pearson correlation between the loudness envelope of held-out beating tones and of their audio VAE +
    vocoder round trip (RMS in 40 ms windows every 20 ms)."""
    values = []
    specs = [s for s in heldout_clips(seed, 4 * clips) if s.beat_hz > 0][:clips]
    for spec in specs:
        wave = torch.from_numpy(world.render_audio(spec, AUDIO_SECONDS, codecs.SAMPLE_RATE))[None]
        decoded, rate = codecs.decode_audio(audio_vae, vocoder, codecs.encode_audio(audio_vae, wave))
        times = np.arange(0.06, decoded.shape[-1] / rate - 0.06, 0.02)
        source = world.envelope_of(world.render_audio(spec, AUDIO_SECONDS, rate), rate, times)
        values.append(np.corrcoef(source, world.envelope_of(decoded[0].numpy(), rate, times))[0, 1])
    return round(float(np.mean(values)), 3)


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
