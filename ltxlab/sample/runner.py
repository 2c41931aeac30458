"""The one clip runner of validation previews and ``python -m ltxlab.generate``.

`ClipRunner` loads the decoders a clip needs, turns a clip's inputs into a `SampleRequest` once (`prepare`: the
start image re-encoded at ``image_crf`` and VAE-encoded, the a2v audio fitted and audio-VAE-encoded), samples it
with `ltxlab.sample.sampler.sample`, decodes it and writes the mp4 (`render`). Prompts arrive as embeddings:
training never loads the text encoder, and ``generate`` frees it before the transformer arrives.

Every mp4 has an audio track:
- a2v: the fitted conditioning waveform (16 kHz), unchanged;
- with generated audio: audio VAE + vocoder (48 kHz), trimmed/padded to the video's duration;
- video-only: silence (48 kHz).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ltxlab.data.media_write import write_video
from ltxlab.models import loader
from ltxlab.models.codecs import (
    audio_latent_frames_for_duration,
    decode_audio,
    decode_video,
    encode_audio,
    encode_video,
)
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import PromptEmbeddings
from ltxlab.sample.media_inputs import AUDIO_SAMPLE_RATE, load_conditioning_audio, load_start_image
from ltxlab.sample.sampler import SampleRequest, sample
from ltxlab.sample.settings import SamplingSettings

SILENT_SAMPLE_RATE = 48000  # the vocoder's output rate, so video-only clips are 48 kHz like the others
AUDIO_MODES = ("generate", "condition", "absent")  # joint audio | frozen a2v audio | video only


def to_uint8_frames(pixels: Tensor) -> np.ndarray:
    """Decoded pixels [1, 3, F, H, W] in [-1, 1] → [F, H, W, 3] uint8."""
    video = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def image_to_pixels(image: np.ndarray) -> Tensor:
    """H×W×3 uint8 → [1, 3, 1, H, W] in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(image).permute(2, 0, 1)[None, :, None].float() / 127.5 - 1.0


def fit_track(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad [C, T] to exactly ``num_samples`` (decoded audio is a few ms shorter than the video)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[1] >= num_samples:
        return np.ascontiguousarray(wave[:, :num_samples])
    return np.pad(wave, ((0, 0), (0, num_samples - wave.shape[1])))


def track_samples(num_frames: int, fps: float, sample_rate: int) -> int:
    return round(num_frames / fps * sample_rate)


@contextlib.contextmanager
def placed(modules: list[nn.Module], device: torch.device, offload: bool) -> Iterator[None]:
    """Keep codecs on ``device`` only while they work (they would otherwise hold GPU memory next to the
    transformer)."""
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        if offload and torch.device(device).type != "cpu":
            for m in modules:
                m.to("cpu")


@dataclass
class PreparedClip:
    request: SampleRequest
    audio_wave: np.ndarray | None  # a2v: the fitted waveform [2, T] at 16 kHz (what the clip plays)


@dataclass
class RenderedClip:
    frames: np.ndarray  # [F, H, W, 3] uint8
    track: np.ndarray  # [2, T] float32, exactly the video's duration
    sample_rate: int
    video_latents: Tensor
    audio_latents: Tensor | None


class ClipRunner:
    """Sampling settings + codecs for clips of one kind (``audio_mode`` in `AUDIO_MODES`)."""

    def __init__(self, model_cfg: ModelConfig, settings: SamplingSettings, audio_mode: str,
                 device: torch.device | str, *, offload: bool = True) -> None:
        if audio_mode not in AUDIO_MODES:
            raise ValueError(f"audio_mode must be one of {AUDIO_MODES}, got {audio_mode!r}")
        self.settings = settings
        self.audio_mode = audio_mode
        self.device = torch.device(device)
        self.offload = offload
        self.width, self.height = settings.size()
        self.num_frames = int(settings.number_of_frames)  # 8k+1: validation snaps it, generate checks it
        self.fps = settings.frame_rate
        self.video_vae = loader.load_video_vae(model_cfg)
        self.audio_vae = loader.load_audio_vae(model_cfg) if audio_mode != "absent" else None
        self.vocoder = loader.load_vocoder(model_cfg) if audio_mode == "generate" else None

    def prepare(self, prompt: PromptEmbeddings, negative: PromptEmbeddings, image: str | Path | None,
                audio: str | Path | None, work_dir: Path, *, normalize: bool = True,
                preserve_pitch: bool = True) -> PreparedClip:
        """Encode one clip's start image (None: text-to-video) and, in a2v, its conditioning audio."""
        if (audio is not None) != (self.audio_mode == "condition"):
            raise ValueError(f"conditioning audio is required exactly in audio_mode='condition' "
                             f"(this runner: {self.audio_mode!r})")
        first = latents = wave = None
        encoders = [self.video_vae] + ([self.audio_vae] if audio is not None else [])
        with placed(encoders, self.device, self.offload):
            if image is not None:
                pixels = load_start_image(image, self.width, self.height, work_dir, crf=self.settings.image_crf)
                first = encode_video(self.video_vae, image_to_pixels(pixels)).cpu()
            if audio is not None:
                wave = load_conditioning_audio(audio, self.num_frames / self.fps, work_dir, normalize, preserve_pitch)
                # trimmed to ltx-core's length for the clip (encoding yields one more in most settings), as
                # ltx-pipelines' a2v pipeline trims its encoded audio
                latents = encode_audio(self.audio_vae, torch.from_numpy(wave)[None]).cpu()
                latents = latents[:, : audio_latent_frames_for_duration(self.num_frames / self.fps)]
        request = SampleRequest(prompt=prompt, negative=negative, settings=self.settings, first_frame=first,
                                audio=latents, generate_audio=self.audio_mode == "generate")
        return PreparedClip(request, wave)

    def _track(self, clip: PreparedClip, audio_latents: Tensor | None) -> tuple[np.ndarray, int]:
        if self.audio_mode == "condition":
            return fit_track(clip.audio_wave, track_samples(self.num_frames, self.fps, AUDIO_SAMPLE_RATE)), \
                AUDIO_SAMPLE_RATE
        if self.audio_mode == "generate":
            wave, rate = decode_audio(self.audio_vae, self.vocoder, audio_latents)
            return fit_track(wave[0].cpu().numpy(), track_samples(self.num_frames, self.fps, rate)), rate
        n = track_samples(self.num_frames, self.fps, SILENT_SAMPLE_RATE)
        return np.zeros((2, n), np.float32), SILENT_SAMPLE_RATE

    def render(self, transformer: nn.Module, clip: PreparedClip, out: Path | None = None,
               progress: bool = False) -> RenderedClip:
        """Sample, decode and (when ``out`` is given) write the mp4."""
        video_latents, audio_latents = sample(transformer, clip.request, progress=progress)
        decoders = [self.video_vae] + ([self.audio_vae, self.vocoder] if self.audio_mode == "generate" else [])
        with placed(decoders, self.device, self.offload):
            frames = to_uint8_frames(decode_video(self.video_vae, video_latents))
            track, rate = self._track(clip, audio_latents)
        if out is not None:
            write_video(out, frames, self.fps, audio=track, sample_rate=rate)
        generated_audio = audio_latents if self.audio_mode == "generate" else None
        return RenderedClip(frames, track, rate, video_latents, generated_audio)
