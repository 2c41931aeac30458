"""The shapes of one training step (tokens per modality) for a resolution and clip length.

Shared by `tools/bench_gpu.py` (which builds the tensors) and `tools/estimate_memory.py` (which sizes them), so the
benchmark and the estimate always describe the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltxlab.config.resolution import bucket_size, snap_frames

SPATIAL_COMPRESSION = 32  # LTX-2.3 video VAE
TEMPORAL_COMPRESSION = 8
AUDIO_LATENT_RATE = 25.0  # audio VAE latent frames per second (16 kHz, hop 160, ×4 compression)


@dataclass(frozen=True)
class StepShape:
    resolution: str
    frames: int  # pixel frames (8k+1)
    fps: float
    audio: bool
    latent: tuple[int, int, int]  # (frames, height, width) of the video latent
    audio_tokens: int  # 0 when audio is off

    @property
    def video_tokens(self) -> int:
        f, h, w = self.latent
        return f * h * w


def step_shape(resolution: str, frames: int, audio: bool, fps: float = 24.0, aspect_ratio: str = "1:1",
               ) -> StepShape:
    """Tokens of one clip: video latents after 32×32×8 compression, audio latents at 25 per second."""
    width, height = bucket_size(resolution, aspect_ratio)
    frames = snap_frames(frames)
    latent = ((frames - 1) // TEMPORAL_COMPRESSION + 1, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)
    audio_tokens = round(frames / fps * AUDIO_LATENT_RATE) if audio else 0
    return StepShape(resolution, frames, fps, audio, latent, audio_tokens)
