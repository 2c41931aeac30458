"""Pixels/waveforms <-> normalised, packed LTX-2.3 latents, in one place.

Conventions (as in diffusers' `LTX2Pipeline`):
- video latents [B, C, F', H', W'] are normalised per channel with the VAE's `latents_mean/std` and packed to
  tokens [B, F'*H'*W', C] in (f, h, w) order, so the first latent frame is the first H'*W' tokens;
- audio: 16 kHz stereo -> log-mel [B, 2, frames, mels] -> audio VAE [B, C, L, mels/4] -> tokens
  [B, L, C*mels/4] (channel-major), normalised with the audio VAE's `latents_mean/std` on the packed width.
Encoders use the posterior mode (ltx-core trains on the mean). Encoded latents are returned in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# ltx-core's mel front-end (torchaudio MelSpectrogram settings).
SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 160
F_MIN = 0.0
F_MAX = 8000.0
LOG_FLOOR = 1e-5
AUDIO_LATENT_DOWNSAMPLE = 4  # hard-coded 4x time compression of the LTX-2 audio VAE


def _module_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


# ----------------------------------------------------------------------------------------------- video


def _video_stats(vae: torch.nn.Module, ref: Tensor) -> tuple[Tensor, Tensor, float]:
    mean = vae.latents_mean.view(1, -1, 1, 1, 1).to(ref.device, ref.dtype)
    std = vae.latents_std.view(1, -1, 1, 1, 1).to(ref.device, ref.dtype)
    return mean, std, float(vae.config.scaling_factor)


@torch.no_grad()
def encode_video(vae: torch.nn.Module, pixels: Tensor) -> Tensor:
    """[B, 3, F, H, W] in [-1, 1] -> normalised latents [B, C, (F-1)/8+1, H/32, W/32] (float32)."""
    _, _, frames, height, width = pixels.shape
    t_ratio, s_ratio = vae.temporal_compression_ratio, vae.spatial_compression_ratio
    if (frames - 1) % t_ratio or height % s_ratio or width % s_ratio:
        raise ValueError(
            f"video of {frames} frames at {height}x{width}: frames must be {t_ratio}k+1 and height/width "
            f"multiples of {s_ratio}"
        )
    device, dtype = _module_device_dtype(vae)
    latents = vae.encode(pixels.to(device=device, dtype=dtype)).latent_dist.mode().float()
    mean, std, scale = _video_stats(vae, latents)
    return (latents - mean) * scale / std


@torch.no_grad()
def decode_video(
    vae: torch.nn.Module,
    latents: Tensor,
    decode_timestep: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Normalised latents [B, C, F', H', W'] -> pixels [B, 3, 8(F'-1)+1, 32H', 32W'] in [-1, 1] (float32).

    `decode_timestep` only matters for VAEs built with `timestep_conditioning` (LTX-2.3's is not): the decoder
    then gets that timestep and the latents are mixed with that much noise first, as the pipeline does.
    """
    device, dtype = _module_device_dtype(vae)
    latents = latents.to(device=device, dtype=torch.float32)
    temb = None
    if vae.config.timestep_conditioning:
        if decode_timestep > 0:
            noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
            latents = (1 - decode_timestep) * latents + decode_timestep * noise
        temb = torch.full((latents.shape[0],), float(decode_timestep), device=device, dtype=dtype)
    mean, std, scale = _video_stats(vae, latents)
    raw = latents * std / scale + mean
    pixels = vae.decode(raw.to(dtype), temb).sample
    return pixels.float().clamp(-1.0, 1.0)


def pack_video(latents: Tensor) -> Tensor:
    """[B, C, F, H, W] -> tokens [B, F*H*W, C] in (f, h, w) order (patch size 1, as in LTX-2.3)."""
    batch, channels = latents.shape[:2]
    return latents.permute(0, 2, 3, 4, 1).reshape(batch, -1, channels)


def unpack_video(tokens: Tensor, frames: int, height: int, width: int) -> Tensor:
    """Inverse of `pack_video`: [B, F*H*W, C] -> [B, C, F, H, W]."""
    batch, _, channels = tokens.shape
    return tokens.reshape(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)


def video_coords(
    transformer: torch.nn.Module,
    batch_size: int,
    frames: int,
    height: int,
    width: int,
    fps: float,
    device: torch.device | None = None,
) -> Tensor:
    """RoPE coordinates [B, 3, F'*H'*W', 2] of latent video tokens ([start, end) in seconds and pixels)."""
    device = device if device is not None else _module_device_dtype(transformer)[0]
    return transformer.rope.prepare_video_coords(batch_size, frames, height, width, device, fps=fps)


def audio_coords(
    transformer: torch.nn.Module, batch_size: int, length: int, device: torch.device | None = None
) -> Tensor:
    """RoPE coordinates [B, 1, L, 2] of audio latent tokens ([start, end) in seconds)."""
    device = device if device is not None else _module_device_dtype(transformer)[0]
    return transformer.audio_rope.prepare_audio_coords(batch_size, length, device)


# ----------------------------------------------------------------------------------------------- audio


def _hz_to_mel(freq: float) -> float:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    if freq < min_log_hz:
        return freq / f_sp
    return min_log_hz / f_sp + math.log(freq / min_log_hz) / logstep


def _mel_to_hz(mels: Tensor) -> Tensor:
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    log_part = min_log_hz * torch.exp(logstep * (mels - min_log_mel))
    return torch.where(mels >= min_log_mel, log_part, f_sp * mels)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Triangular Slaney-scale filters with Slaney (area) normalisation: [n_freqs, n_mels], float32.

    Same construction and dtypes as torchaudio's `melscale_fbanks(norm="slaney", mel_scale="slaney")`.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), n_mels + 2)
    f_points = _mel_to_hz(mel_points)
    f_diff = f_points[1:] - f_points[:-1]
    slopes = f_points.unsqueeze(0) - all_freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    rising = -slopes[:, :-2] / f_diff[:-1]
    falling = slopes[:, 2:] / f_diff[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return filters * (2.0 / (f_points[2 : n_mels + 2] - f_points[:n_mels])).unsqueeze(0)


def log_mel(waveform: Tensor, n_mels: int) -> Tensor:
    """16 kHz waveform [B, C, T] -> log-magnitude mel spectrogram [B, C, 1 + T//160, n_mels] (float32).

    torch-only equivalent of torchaudio `MelSpectrogram(16000, n_fft=1024, win_length=1024, hop_length=160,
    f_min=0, f_max=8000, power=1, norm="slaney", mel_scale="slaney")` (centred, reflect padded, periodic
    Hann), then `log(clamp(min=1e-5))` — ltx-core's audio front-end (torchaudio has no CPU build for this
    torch).
    """
    if waveform.ndim != 3:
        raise ValueError(f"log_mel expects [B, channels, samples], got shape {tuple(waveform.shape)}")
    batch, channels, samples = waveform.shape
    if samples <= N_FFT // 2:
        raise ValueError(f"audio of {samples} samples is too short for the mel front-end (> {N_FFT // 2})")
    flat = waveform.reshape(batch * channels, samples).float()
    window = torch.hann_window(WIN_LENGTH, device=flat.device)
    spec = torch.stft(
        flat, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=window, center=True,
        pad_mode="reflect", normalized=False, onesided=True, return_complex=True,
    ).abs()  # [B*C, n_freqs, frames]
    filters = mel_filterbank(N_FFT // 2 + 1, n_mels).to(flat.device)
    mel = spec.transpose(1, 2) @ filters  # [B*C, frames, n_mels]
    return torch.log(torch.clamp(mel, min=LOG_FLOOR)).reshape(batch, channels, -1, n_mels)


def audio_latent_length(num_samples_16k: int) -> int:
    """Number of audio latent tokens `encode_audio` returns for a clip of that many 16 kHz samples."""
    mel_frames = 1 + num_samples_16k // HOP_LENGTH  # centred STFT
    return math.ceil(mel_frames / AUDIO_LATENT_DOWNSAMPLE)  # causal 4x encoder keeps the partial last group


def audio_latent_frames_for_duration(duration_s: float) -> int:
    """Audio latent length of a clip of ``duration_s`` seconds, as ltx-core sizes generated audio
    (``AudioLatentShape.from_duration``): round(duration × 16000 / 160 / 4), i.e. 25 latents per second, Python's
    round. `audio_latent_length` is what encoding a waveform yields (often one more); sampling uses this rule."""
    latents_per_second = SAMPLE_RATE / HOP_LENGTH / AUDIO_LATENT_DOWNSAMPLE
    return round(duration_s * latents_per_second)


def pack_audio(latents: Tensor) -> Tensor:
    """[B, C, L, M] -> tokens [B, L, C*M] (channel-major, as the pipeline packs)."""
    return latents.transpose(1, 2).flatten(2, 3)


def unpack_audio(tokens: Tensor, channels: int) -> Tensor:
    """Inverse of `pack_audio`: [B, L, C*M] -> [B, C, L, M]."""
    return tokens.unflatten(2, (channels, -1)).transpose(1, 2)


def _audio_stats(audio_vae: torch.nn.Module, ref: Tensor) -> tuple[Tensor, Tensor]:
    return audio_vae.latents_mean.to(ref.device, ref.dtype), audio_vae.latents_std.to(ref.device, ref.dtype)


@torch.no_grad()
def encode_audio(audio_vae: torch.nn.Module, waveform: Tensor) -> Tensor:
    """16 kHz waveform [B, 2, T] -> normalised packed latents [B, audio_latent_length(T), C*M'] (float32)."""
    expected = audio_vae.config.in_channels
    if waveform.ndim != 3 or waveform.shape[1] != expected:
        shape = tuple(waveform.shape)
        raise ValueError(f"encode_audio expects [B, {expected}, samples] at 16 kHz, got {shape}")
    device, dtype = _module_device_dtype(audio_vae)
    mel = log_mel(waveform.to(device), audio_vae.config.mel_bins)
    latents = audio_vae.encode(mel.to(dtype)).latent_dist.mode().float()  # [B, C, L, M']
    tokens = pack_audio(latents)
    mean, std = _audio_stats(audio_vae, tokens)
    return (tokens - mean) / std


@torch.no_grad()
def decode_audio(audio_vae: torch.nn.Module, vocoder: torch.nn.Module, tokens: Tensor) -> tuple[Tensor, int]:
    """Normalised packed audio latents [B, L, C*M'] -> (waveform [B, 2, T'] float32, its sample rate).

    The audio VAE decodes L latents to 4L-3 mel frames (causal), so T' is slightly shorter than the source.
    """
    device, dtype = _module_device_dtype(audio_vae)
    tokens = tokens.to(device=device, dtype=torch.float32)
    mean, std = _audio_stats(audio_vae, tokens)
    latents = unpack_audio(tokens * std + mean, audio_vae.config.latent_channels)
    mel = audio_vae.decode(latents.to(dtype)).sample  # [B, 2, frames, mels]
    voc_device, voc_dtype = _module_device_dtype(vocoder)
    waveform = vocoder(mel.to(device=voc_device, dtype=voc_dtype))
    return waveform.float(), int(vocoder.config.output_sampling_rate)
