"""a2v: the start image is always the clean first latent frame; the audio is frozen conditioning (σ = 0)."""

from __future__ import annotations

import torch

from ltxlab.errors import DatasetError
from ltxlab.modes.inputs import LatentBatch, TrainingInputs, first_frame_mask, frozen_tokens, noise_tokens
from ltxlab.modes.sigmas import SigmaSampler


class AudioToVideo:
    def __init__(self, sigmas: SigmaSampler) -> None:
        self.sigmas = sigmas

    def prepare(self, batch: LatentBatch, generator: torch.Generator) -> TrainingInputs:
        if batch.audio is None:
            raise DatasetError("a2v needs conditioning audio latents in every sample; the cache has none")
        b, n, _ = batch.video.shape
        held = torch.ones(b, dtype=torch.bool)
        clean_mask = first_frame_mask(b, batch.video_shape, held, batch.video.device)
        video = noise_tokens(batch.video, self.sigmas.sample(b, n, generator), clean_mask, generator)
        return TrainingInputs(video=video, audio=frozen_tokens(batch.audio), audio_in_loss=False,
                              isolate_modalities=False, video_shape=batch.video_shape, fps=batch.fps)
