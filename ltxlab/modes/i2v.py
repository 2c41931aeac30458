"""i2v: hold the first latent frame clean with probability p; optional joint audio with its own σ."""

from __future__ import annotations

import torch

from ltxlab.modes.inputs import LatentBatch, TrainingInputs, absent_audio, first_frame_mask, noise_tokens
from ltxlab.modes.sigmas import SigmaSampler


class ImageToVideo:
    def __init__(self, first_frame_p: float, sigmas: SigmaSampler, audio_width: int) -> None:
        self.first_frame_p = first_frame_p
        self.sigmas = sigmas
        self.audio_width = audio_width  # packed audio token width, for the placeholder stream of video-only runs

    def prepare(self, batch: LatentBatch, generator: torch.Generator) -> TrainingInputs:
        b, n, _ = batch.video.shape
        # A still is one latent frame: conditioning on it would leave nothing to learn, so stills train as t2v.
        is_still = batch.video_shape[0] == 1
        held = torch.rand(b, generator=generator) < self.first_frame_p
        held &= not is_still
        clean_mask = first_frame_mask(b, batch.video_shape, held, batch.video.device)
        video = noise_tokens(batch.video, self.sigmas.sample(b, n, generator), clean_mask, generator)
        if batch.audio is None:
            audio = absent_audio(b, self.audio_width, batch.video)
        else:
            # Independent σ for audio: a σ shared with video degraded audio in other trainers (DESIGN.md §8).
            n_audio = batch.audio.shape[1]
            no_clean = torch.zeros(b, n_audio, dtype=torch.bool, device=batch.audio.device)
            audio = noise_tokens(batch.audio, self.sigmas.sample(b, n_audio, generator), no_clean, generator)
        return TrainingInputs(video=video, audio=audio, audio_in_loss=batch.audio is not None,
                              isolate_modalities=batch.audio is None, video_shape=batch.video_shape, fps=batch.fps)
