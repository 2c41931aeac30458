"""Validation previews during training, and the reel that combines them.

The text encoder is never loaded during training: the validation prompts (and the negative prompt) are encoded
once with the captions (`encode_preview_prompts` → `save_preview_prompts`) and loaded by the trainer
(`load_preview_prompts`). `PreviewRunner` loads only the decoders it needs, encodes the start images (and the a2v
audio) once, and per round samples every validation sample with `ltxlab.sample.sampler.sample`.

Every preview mp4 has an audio track, so every reel plays with sound:
- a2v: the fitted conditioning waveform (16 kHz), unchanged;
- i2v with audio: the generated audio (audio VAE + vocoder, 48 kHz), trimmed/padded to the video's duration;
- i2v video-only: silence (48 kHz).
The reel plays the round's previews one after another (same size and fps as each preview; audio kept in sync by
making every preview's track exactly its video's duration).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ltxlab.config.resolution import bucket_size, snap_frames
from ltxlab.config.schema import ValidationConfig
from ltxlab.data.media_write import write_video
from ltxlab.models import loader
from ltxlab.models.codecs import decode_audio, decode_video, encode_audio, encode_video
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import PromptEmbeddings, TextStack, encode_prompts
from ltxlab.sample.media_inputs import AUDIO_SAMPLE_RATE, load_conditioning_audio, load_start_image
from ltxlab.sample.sampler import SampleRequest, sample

log = logging.getLogger(__name__)

SILENT_SAMPLE_RATE = 48000  # the vocoder's output rate, so i2v reels are 48 kHz with or without audio


@dataclass
class PreviewPrompts:
    """Validation prompt embeddings, computed while encoding so training never loads the text encoder."""

    samples: list[PromptEmbeddings]  # one per validation sample, batch 1 each
    negative: PromptEmbeddings


def encode_preview_prompts(text_stack: TextStack, validation_cfg: ValidationConfig) -> PreviewPrompts:
    samples = [encode_prompts(text_stack, [s.prompt]).to("cpu") for s in validation_cfg.samples]
    negative = encode_prompts(text_stack, [validation_cfg.negative_prompt]).to("cpu")
    return PreviewPrompts(samples=samples, negative=negative)


def _flat(prefix: str, p: PromptEmbeddings) -> dict[str, Tensor]:
    return {f"{prefix}.video": p.video.contiguous(), f"{prefix}.audio": p.audio.contiguous(),
            f"{prefix}.mask": p.mask.contiguous()}


def _unflat(prefix: str, tensors: dict[str, Tensor]) -> PromptEmbeddings:
    return PromptEmbeddings(video=tensors[f"{prefix}.video"], audio=tensors[f"{prefix}.audio"],
                            mask=tensors[f"{prefix}.mask"])


def save_preview_prompts(prompts: PreviewPrompts, path: Path) -> None:
    tensors = _flat("negative", prompts.negative)
    for i, p in enumerate(prompts.samples):
        tensors.update(_flat(f"sample.{i}", p))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu() for k, v in tensors.items()}, str(path),
              metadata={"num_samples": str(len(prompts.samples))})


def load_preview_prompts(path: Path) -> PreviewPrompts:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        count = int((f.metadata() or {}).get("num_samples", "0"))
    tensors = load_file(str(path))
    return PreviewPrompts(samples=[_unflat(f"sample.{i}", tensors) for i in range(count)],
                          negative=_unflat("negative", tensors))


# ----------------------------------------------------------------------------------------------- helpers


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
    """Keep decoders on ``device`` only while they work (they would otherwise hold GPU memory all training)."""
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        if offload and torch.device(device).type != "cpu":
            for m in modules:
                m.to("cpu")


@dataclass
class _Prepared:
    prompt: PromptEmbeddings
    first_frame: Tensor  # [1, C, 1, H', W'] normalised, CPU
    audio_latents: Tensor | None  # a2v: [1, L, D] normalised, CPU
    audio_wave: np.ndarray | None  # a2v: the fitted waveform [2, T] at 16 kHz (what the preview plays)


class PreviewRunner:
    """Validation previews for one training run (one object for the whole run).

    Call `run(transformer, step)` with the unwrapped transformer (LoRA attached) on the rank(s) that should write
    previews; it returns the reel path. Preview files: ``out_dir/step_{step:06d}_{i}.mp4`` and
    ``out_dir/reel_step_{step:06d}.mp4``.
    """

    def __init__(self, model_cfg: ModelConfig, validation_cfg: ValidationConfig, mode: str, with_audio: bool,
                 prompts: PreviewPrompts, out_dir: Path, work_dir: Path, device: torch.device | str, *,
                 audio_normalize: bool = True, audio_preserve_pitch: bool = True, offload: bool = True) -> None:
        if mode not in ("i2v", "a2v"):
            raise ValueError(f"mode must be 'i2v' or 'a2v', got {mode!r}")
        samples = list(validation_cfg.samples)
        if len(prompts.samples) != len(samples):
            raise ValueError(f"{len(prompts.samples)} encoded validation prompts for {len(samples)} samples: "
                             "re-encode the validation prompts")
        self.cfg = validation_cfg
        self.mode = mode
        self.audio_mode = "condition" if mode == "a2v" else ("generate" if with_audio else "absent")
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.offload = offload
        self.width, self.height = bucket_size(validation_cfg.resolution, validation_cfg.aspect_ratio)
        self.num_frames = snap_frames(int(validation_cfg.number_of_frames))
        self.fps = validation_cfg.frame_rate
        self.negative = prompts.negative
        self.last_previews: list[Path] = []
        self.video_vae = self.audio_vae = self.vocoder = self.scheduler = None
        self.prepared: list[_Prepared] = []
        if not samples:
            return
        self.scheduler = loader.load_scheduler(model_cfg)
        self.video_vae = loader.load_video_vae(model_cfg)
        if self.audio_mode != "absent":
            self.audio_vae = loader.load_audio_vae(model_cfg)
        if self.audio_mode == "generate":
            self.vocoder = loader.load_vocoder(model_cfg)
        self._prepare(samples, prompts, Path(work_dir), audio_normalize, audio_preserve_pitch)

    def _prepare(self, samples: list, prompts: PreviewPrompts, work_dir: Path, normalize: bool,
                 preserve_pitch: bool) -> None:
        duration = self.num_frames / self.fps
        encoders = [self.video_vae] + ([self.audio_vae] if self.audio_mode == "condition" else [])
        with placed(encoders, self.device, self.offload):
            for i, s in enumerate(samples):
                image = load_start_image(s.image_url, self.width, self.height, work_dir)
                first = encode_video(self.video_vae, image_to_pixels(image)).cpu()
                latents = wave = None
                if self.audio_mode == "condition":
                    if not s.audio_url:
                        raise ValueError(f"validation sample {i}: a2v previews need an audio_url")
                    wave = load_conditioning_audio(s.audio_url, duration, work_dir, normalize, preserve_pitch)
                    latents = encode_audio(self.audio_vae, torch.from_numpy(wave)[None]).cpu()
                self.prepared.append(_Prepared(prompts.samples[i], first, latents, wave))

    def request(self, index: int) -> SampleRequest:
        """The sampler request of validation sample ``index`` (settings from the validation config)."""
        p, c = self.prepared[index], self.cfg
        return SampleRequest(
            prompt=p.prompt, negative=self.negative, num_frames=self.num_frames, height=self.height,
            width=self.width, fps=float(self.fps), first_frame=p.first_frame, audio=p.audio_latents,
            generate_audio=self.audio_mode == "generate", steps=c.inference_steps, guidance_scale=c.guidance_scale,
            audio_guidance_scale=c.audio_guidance_scale, stg_scale=c.stg_scale, stg_blocks=list(c.stg_blocks),
            guidance_rescale=c.guidance_rescale, modality_scale=c.modality_scale, seed=c.seed,
        )

    def _track(self, p: _Prepared, audio_latents: Tensor | None) -> tuple[np.ndarray, int]:
        if self.audio_mode == "condition":
            return fit_track(p.audio_wave, track_samples(self.num_frames, self.fps, AUDIO_SAMPLE_RATE)), \
                AUDIO_SAMPLE_RATE
        if self.audio_mode == "generate":
            wave, rate = decode_audio(self.audio_vae, self.vocoder, audio_latents)
            return fit_track(wave[0].cpu().numpy(), track_samples(self.num_frames, self.fps, rate)), rate
        n = track_samples(self.num_frames, self.fps, SILENT_SAMPLE_RATE)
        return np.zeros((2, n), np.float32), SILENT_SAMPLE_RATE

    def run(self, transformer: nn.Module, step: int) -> Path | None:
        """Sample, decode and write every preview of this round, then the reel; returns the reel (None: no samples)."""
        if not self.prepared:
            return None
        start = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        clips: list[tuple[np.ndarray, np.ndarray]] = []
        paths: list[Path] = []
        rate = 0
        for i, p in enumerate(self.prepared):
            video_latents, audio_latents = sample(transformer, self.scheduler, self.request(i))
            decoders = [self.video_vae] + ([self.audio_vae, self.vocoder] if self.audio_mode == "generate" else [])
            with placed(decoders, self.device, self.offload):
                frames = to_uint8_frames(decode_video(self.video_vae, video_latents))
                track, rate = self._track(p, audio_latents)
            path = self.out_dir / f"step_{step:06d}_{i}.mp4"
            write_video(path, frames, self.fps, audio=track, sample_rate=rate)
            clips.append((frames, track))
            paths.append(path)
        reel = self.out_dir / f"reel_step_{step:06d}.mp4"
        write_video(reel, (f for frames, _ in clips for f in frames), self.fps,
                    audio=np.concatenate([track for _, track in clips], axis=1), sample_rate=rate)
        self.last_previews = paths
        log.info("Validation previews at step %d: %d samples in %.1f s -> %s", step, len(paths),
                 time.monotonic() - start, reel)
        return reel
