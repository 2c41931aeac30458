"""Encode prepared clips into latents and text embeddings and stream them into shards.

The VAEs and the text stack (Gemma + connectors) live only here: training reads the shards and never loads them.
Captions are encoded all the way through the connectors, so the trainer needs the transformer alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ltxlab.data.prepared import PreparedClip
from ltxlab.data.shards import EncodedSample, ShardWriter, sample_key
from ltxlab.models.codecs import encode_audio, encode_video
from ltxlab.models.loader import load_audio_vae, load_text_stack, load_video_vae
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import PromptEmbeddings, encode_prompts

log = logging.getLogger(__name__)


@dataclass
class EncodeSummary:
    count: int
    video_latent_shape: list[int]
    audio_latent_shape: list[int] | None


def storage_dtype(model: ModelConfig) -> torch.dtype:
    return torch.bfloat16 if model.dtype == "bfloat16" else torch.float32


def pixels_from_frames(frames: np.ndarray) -> torch.Tensor:
    """[F, H, W, 3] uint8 → [1, 3, F, H, W] float in [-1, 1]."""
    video = torch.as_tensor(frames).permute(3, 0, 1, 2).unsqueeze(0)
    return video.float().div_(127.5).sub_(1.0)


def prompt_tensors(embeddings: PromptEmbeddings, index: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    # Stored at the cache dtype (bf16 for LTX-2.3, as the reference stores its embeddings); the mask is all ones
    # after the connectors' registers, exact in bf16. All max_sequence_length positions are kept: the
    # connectors' registers fill the padding, so the transformer sees every position.
    return {"text_video": embeddings.video[index].to(dtype), "text_audio": embeddings.audio[index].to(dtype),
            "text_mask": embeddings.mask[index].to(dtype)}


class Encoder:
    """Holds the frozen encoders for the duration of one cache build."""

    def __init__(self, model: ModelConfig, with_audio: bool, device: torch.device, captions: Iterable[str] = (),
                 ) -> None:
        self.device, self.dtype = device, storage_dtype(model)
        # Gemma first and alone on the GPU: with the captions known up front, each distinct caption is encoded
        # once, then the text stack goes back to the host before the VAEs load (Gemma 3 12B is ≈23 GB in bf16).
        self.text = load_text_stack(model)
        self.text.to(device)
        self._captions = {c: self._caption_tensors(c) for c in dict.fromkeys(captions)}
        if self._captions and device.type == "cuda":
            self.text.to("cpu")  # later prompts (validation previews) are few: encoded on the host copy
            torch.cuda.empty_cache()
        self.video_vae = load_video_vae(model).to(device).eval()
        self.audio_vae = load_audio_vae(model).to(device).eval() if with_audio else None

    @torch.no_grad()
    def _caption_tensors(self, caption: str) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in prompt_tensors(self.prompts([caption]), 0, self.dtype).items()}

    def caption_tensors(self, caption: str) -> dict[str, torch.Tensor]:
        """A caption's text embeddings: pre-encoded when the captions were given, else encoded now."""
        tensors = self._captions.get(caption)
        return {k: v.to(self.device) for k, v in (tensors or self._caption_tensors(caption)).items()}

    @torch.no_grad()
    def encode_clip(self, clip: PreparedClip) -> dict[str, torch.Tensor]:
        tensors = {"video": encode_video(self.video_vae, pixels_from_frames(clip.frames).to(self.device))[0]}
        if self.audio_vae is not None:
            if clip.audio is None:
                raise ValueError(f"{clip.name}: audio is on for this run but the clip has no audio")
            waveform = torch.as_tensor(clip.audio).float().unsqueeze(0).to(self.device)
            tensors["audio"] = encode_audio(self.audio_vae, waveform)[0]
        tensors.update(self.caption_tensors(clip.caption))
        return {k: v.to(self.dtype) for k, v in tensors.items()}

    @torch.no_grad()
    def prompts(self, prompts: list[str]) -> PromptEmbeddings:
        return encode_prompts(self.text, prompts)


def encode_to_shards(clips: Iterable[PreparedClip], encoder: Encoder, writer: ShardWriter,
                     total: int | None = None, show_progress: bool = True) -> EncodeSummary:
    video_shape: list[int] = []
    audio_shape: list[int] | None = None
    for position, clip in enumerate(tqdm(clips, total=total, desc="encode", unit="clip",
                                         disable=not show_progress)):
        tensors = encoder.encode_clip(clip)
        video_shape = list(tensors["video"].shape)
        if "audio" in tensors:
            # Clips keep their own duration (frame rate), so audio lengths may differ: then no single shape.
            shape = list(tensors["audio"].shape)
            audio_shape = shape if position == 0 or audio_shape == shape else None
        meta = {"name": clip.name, "caption": clip.caption, "source": clip.source, "fps": clip.fps,
                "num_frames": int(clip.frames.shape[0])}
        writer.write(EncodedSample(key=sample_key(position, clip.name), tensors=tensors, meta=meta))
        clip.release()  # its frames are encoded: the buffer goes back to prepare for the next clip
    return EncodeSummary(count=writer.count, video_latent_shape=video_shape, audio_latent_shape=audio_shape)
