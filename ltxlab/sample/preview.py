"""Validation previews during training, and the reel that combines them.

The text encoder is never loaded during training: the validation prompts (and the negative prompt) are encoded
once with the captions (`encode_preview_prompts` → `save_preview_prompts`) and loaded by the trainer
(`load_preview_prompts`). `PreviewRunner` prepares every validation sample once with the shared
`ltxlab.sample.runner.ClipRunner` (the one ``python -m ltxlab.generate`` uses) and renders them each round.

Every preview mp4 has an audio track (see `ltxlab.sample.runner`), so every reel plays with sound. The reel plays
the round's previews one after another (same size and fps as each preview; audio kept in sync by making every
preview's track exactly its video's duration).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ltxlab.config.schema import ValidationConfig
from ltxlab.data.media_write import write_video
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import PromptEmbeddings, TextStack, encode_prompts
from ltxlab.sample.runner import ClipRunner, PreparedClip, RenderedClip

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
        self.audio_mode = "condition" if mode == "a2v" else ("generate" if with_audio else "absent")
        self.compare_base = bool(validation_cfg.compare_base)
        self.base_frames: list[np.ndarray] = []  # the base model's clip per sample, rendered at the first round
        self.out_dir = Path(out_dir)
        self.last_previews: list[Path] = []
        self.last_rendered: list[RenderedClip] = []
        self.clips: list[PreparedClip] = []
        self.runner: ClipRunner | None = None
        if not samples:
            return
        self.runner = ClipRunner(model_cfg, validation_cfg, self.audio_mode, device, offload=offload)
        for i, s in enumerate(samples):
            if self.audio_mode == "condition" and not s.audio_url:
                raise ValueError(f"validation sample {i}: a2v previews need an audio_url")
            audio = s.audio_url if self.audio_mode == "condition" else None
            self.clips.append(self.runner.prepare(prompts.samples[i], prompts.negative, s.image_url, audio,
                                                  Path(work_dir), normalize=audio_normalize,
                                                  preserve_pitch=audio_preserve_pitch))

    def run(self, transformer: nn.Module, step: int) -> Path | None:
        """Sample, decode and write every preview of this round, then the reel; returns the reel (None: no samples)."""
        if self.runner is None:
            return None
        start = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.compare_base and not self.base_frames:
            self.base_frames = self._render_base(transformer)
        rendered, paths, shown = [], [], []
        for i, clip in enumerate(self.clips):
            log.info("validation preview %d/%d at step %d…", i + 1, len(self.clips), step)  # no silent minute
            path = self.out_dir / f"step_{step:06d}_{i}.mp4"
            result = self.runner.render(transformer, clip)
            frames = side_by_side(self.base_frames[i], result.frames, step) if self.base_frames else result.frames
            write_video(path, frames, self.runner.fps, audio=result.track, sample_rate=result.sample_rate)
            rendered.append(result)
            shown.append(frames)
            paths.append(path)
        reel = self.out_dir / f"reel_step_{step:06d}.mp4"
        write_video(reel, (f for frames in shown for f in frames), self.runner.fps,
                    audio=np.concatenate([r.track for r in rendered], axis=1), sample_rate=rendered[0].sample_rate)
        self.last_previews = paths
        self.last_rendered = rendered
        log.info("Validation previews at step %d: %d samples in %.1f s -> %s", step, len(paths),
                 time.monotonic() - start, reel)
        return reel

    def _render_base(self, transformer: nn.Module) -> list[np.ndarray]:
        """Every sample rendered with the adapter switched off: what the base model makes of the same inputs (same
        seeds, so the two halves differ only by the LoRA)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not any(isinstance(m, BaseTunerLayer) for m in transformer.modules()):
            return []  # no adapter: nothing to compare
        log.info("validation: rendering the base model once (adapter off) for side-by-side previews")
        transformer.disable_adapters()
        try:
            return [self.runner.render(transformer, clip).frames for clip in self.clips]
        finally:
            transformer.enable_adapters()


def side_by_side(base: np.ndarray, lora: np.ndarray, step: int) -> np.ndarray:
    """[F, H, 2W + gap, 3]: the base model's clip (left) and the LoRA's (right), each labelled."""
    import cv2

    gap = np.full((*base.shape[:2], 8, 3), 16, np.uint8)
    frames = np.concatenate([base, gap, lora], axis=2).copy()
    width = base.shape[2]
    scale = max(0.4, base.shape[1] / 640)
    for frame in frames:
        for x, label in ((8, "base"), (width + 16, f"LoRA step {step}")):
            cv2.putText(frame, label, (x, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                        cv2.LINE_AA)
            cv2.putText(frame, label, (x, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        1, cv2.LINE_AA)
    return frames
