"""Mode strategies: each turns a ``LatentBatch`` into ``TrainingInputs`` (timesteps, σ, loss masks)."""

from __future__ import annotations

from ltxlab.modes.a2v import AudioToVideo
from ltxlab.modes.i2v import ImageToVideo
from ltxlab.modes.inputs import LatentBatch, ModalityInputs, TrainingInputs
from ltxlab.modes.sigmas import ShiftedLogitNormal, SigmaSampler

Mode = ImageToVideo | AudioToVideo


def build_mode(name: str, first_frame_p: float, sigmas: SigmaSampler, audio_width: int) -> Mode:
    if name == "i2v":
        return ImageToVideo(first_frame_p, sigmas, audio_width)
    if name == "a2v":
        return AudioToVideo(sigmas)
    raise ValueError(f"unknown mode {name!r}")


__all__ = ["AudioToVideo", "ImageToVideo", "LatentBatch", "ModalityInputs", "Mode", "ShiftedLogitNormal",
           "SigmaSampler", "TrainingInputs", "build_mode"]
