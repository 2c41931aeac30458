"""Pretraining stage 3: the tiny transformer as a text + image + audio -> video/audio flow model.

The world's clips are encoded once with the stage-1/2 codecs and the (frozen, seed-built) text stack into a
latent corpus; the transformer then trains on it with exactly the training modes ltxlab uses for LoRAs — i2v
(first frame held with p = 0.5, joint audio with its own σ) and a2v (frozen audio) — plus caption dropout to the
sampler's negative prompt, so classifier-free guidance has an unconditional branch to contrast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ltxlab.models import codecs
from ltxlab.models.text import TextStack, encode_prompts
from ltxlab.modes import LatentBatch, ShiftedLogitNormal, SigmaSampler, build_mode
from ltxlab.pretrain import world
from ltxlab.pretrain.codec_stages import CLIP_SECONDS, VIDEO_FRAMES, VIDEO_SIZE, step_rng
from ltxlab.sample.settings import DEFAULT_NEGATIVE_PROMPT
from ltxlab.train.step import compute_loss, predict

FPS = 24.0
CAPTION_DROPOUT = 0.1
A2V_FRACTION = 0.4
# In this flat-colour world self-attention pools the whole noisy latent and reads the scene at any σ < 1 (the
# shipped-before base: σ = 0.97 loss 0.260 with its own caption, 0.260 with a neighbour's), so only at σ = 1 — the
# sampler's first step — must caption, start image and audio carry the clip (loss 0.80 there, caption unused). The
# reference sampler almost never draws σ = 1; this share of draws does, so the base learns to read its conditioning.
PURE_NOISE_SHARE = 0.25
# Sampling's modality guidance contrasts each prediction with one made without audio↔video cross-attention; a share
# of the video-from-image steps trains that isolated branch, as caption dropout trains CFG's unconditional one.
ISOLATION_SHARE = 0.1


@dataclass
class LatentCorpus:
    video: Tensor  # [N, F'·H'·W', C] normalised packed video latents
    video_shape: tuple[int, int, int]
    audio: Tensor  # [N, L, D] normalised packed audio latents
    text_video: Tensor  # [N, S, Dv]
    text_audio: Tensor  # [N, S, Da]
    text_mask: Tensor  # [N, S]
    unconditional: tuple[Tensor, Tensor, Tensor]  # the negative prompt's (video, audio, mask) embeddings

    def state_dict(self) -> dict[str, Tensor]:
        uncond_v, uncond_a, uncond_m = self.unconditional
        return {"video": self.video, "video_shape": torch.tensor(self.video_shape), "audio": self.audio,
                "text_video": self.text_video, "text_audio": self.text_audio, "text_mask": self.text_mask,
                "uncond_video": uncond_v, "uncond_audio": uncond_a, "uncond_mask": uncond_m}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LatentCorpus:
        return cls(state["video"], tuple(int(v) for v in state["video_shape"]), state["audio"],
                   state["text_video"], state["text_audio"], state["text_mask"],
                   (state["uncond_video"], state["uncond_audio"], state["uncond_mask"]))


def corpus_specs(seed: int, clips: int) -> list[world.ClipSpec]:
    """Axis motions and pulsing (no diagonals: a LoRA's concept), each with a tone independent of the shape."""
    specs = []
    for i in range(clips):
        rng = step_rng(seed, 3, i)
        specs.append(world.with_independent_tone(world.random_spec(rng), rng))
    return specs


@torch.no_grad()
def encode_corpus(specs: list[world.ClipSpec], vae: nn.Module, audio_vae: nn.Module, text: TextStack,
                  progress=None) -> LatentCorpus:
    videos, audios, prompts = [], [], []
    for spec in specs:
        pixels = torch.from_numpy(world.to_pixels(world.render_frames(spec, VIDEO_FRAMES, FPS, VIDEO_SIZE)))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the 96-wide first encoder stage dominates
            latents = codecs.encode_video(vae, pixels[None])
        videos.append(codecs.pack_video(latents)[0])
        wave = torch.from_numpy(world.render_audio(spec, CLIP_SECONDS, codecs.SAMPLE_RATE))
        audios.append(codecs.encode_audio(audio_vae, wave[None])[0])
        prompts.append(spec.caption())
        if progress is not None:
            progress.update(1)
    shape = tuple(int(s) for s in latents.shape[2:])
    embeddings = [encode_prompts(text, prompts[i : i + 32]) for i in range(0, len(prompts), 32)]
    negative = encode_prompts(text, [DEFAULT_NEGATIVE_PROMPT])
    return LatentCorpus(
        video=torch.stack(videos), video_shape=shape, audio=torch.stack(audios),
        text_video=torch.cat([e.video for e in embeddings]), text_audio=torch.cat([e.audio for e in embeddings]),
        text_mask=torch.cat([e.mask for e in embeddings]),
        unconditional=(negative.video[0], negative.audio[0], negative.mask[0]),
    )


def corpus_batch(corpus: LatentCorpus, rng: np.random.Generator, batch: int) -> LatentBatch:
    index = torch.from_numpy(rng.integers(0, corpus.video.shape[0], size=batch))
    text_video, text_audio = corpus.text_video[index].clone(), corpus.text_audio[index].clone()
    text_mask = corpus.text_mask[index].clone()
    drop = torch.from_numpy(rng.random(batch) < CAPTION_DROPOUT)
    uncond_v, uncond_a, uncond_m = corpus.unconditional
    text_video[drop], text_audio[drop], text_mask[drop] = uncond_v, uncond_a, uncond_m
    return LatentBatch(video=corpus.video[index], video_shape=corpus.video_shape, audio=corpus.audio[index],
                       text_video=text_video, text_audio=text_audio, text_mask=text_mask, fps=FPS)


class WithPureNoise:
    """``sampler``'s σ draws with a ``share`` of them replaced by exactly 1 (pure noise)."""

    def __init__(self, sampler: SigmaSampler, share: float) -> None:
        self.sampler, self.share = sampler, share

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor:
        sigmas = self.sampler.sample(batch_size, num_tokens, generator)
        pure = torch.rand(batch_size, generator=generator) < self.share
        return torch.where(pure, torch.ones_like(sigmas), sigmas)


class FlowObjective:
    """One step's loss: a batch from the corpus through ltxlab's own i2v or a2v mode."""

    def __init__(self, corpus: LatentCorpus, audio_width: int, seed: int, batch: int) -> None:
        self.corpus, self.seed, self.batch = corpus, seed, batch
        sigmas = WithPureNoise(ShiftedLogitNormal(), PURE_NOISE_SHARE)
        self.i2v = build_mode("i2v", 0.5, sigmas, audio_width)
        self.a2v = build_mode("a2v", 1.0, sigmas, audio_width)

    def loss(self, transformer: nn.Module, step: int) -> Tensor:
        rng = step_rng(self.seed, 4, step)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        batch = corpus_batch(self.corpus, rng, self.batch)
        mode = self.a2v if rng.random() < A2V_FRACTION else self.i2v
        inputs = mode.prepare(batch, generator)
        if mode is self.i2v and rng.random() < ISOLATION_SHARE:
            inputs = dataclasses.replace(inputs, isolate_modalities=True)
        video_pred, audio_pred = predict(transformer, inputs, batch)
        return compute_loss(video_pred, audio_pred, inputs).total
