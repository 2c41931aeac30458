"""When validation previews run during training: every ``validation.interval`` steps and at the end, on rank 0.

Previews draw from their own seeded generator, so a run with validation has exactly the loss sequence of one
without it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ltxlab.config.schema import Config
from ltxlab.data.pipeline import LatentCache
from ltxlab.sample.preview import PreviewRunner, load_preview_prompts
from ltxlab.train.metrics import MetricsLogger

log = logging.getLogger(__name__)

FINAL_REEL = "video.mp4"


@dataclass
class Previews:
    runner: PreviewRunner | None
    interval: int
    total: int
    run_dir: Path
    metrics: MetricsLogger

    @classmethod
    def create(cls, cfg: Config, latents: LatentCache, run_dir: Path, device: torch.device,
               metrics: MetricsLogger, enabled: bool) -> Previews:
        runner = None
        if enabled and cfg.validation.samples and latents.preview_prompts is not None:
            runner = PreviewRunner(cfg.model, cfg.validation, cfg.mode.name, latents.index.with_audio,
                                   load_preview_prompts(latents.preview_prompts), out_dir=run_dir / "previews",
                                   work_dir=run_dir / "work", device=device, audio_normalize=cfg.audio.normalize,
                                   audio_preserve_pitch=cfg.audio.preserve_pitch)
        return cls(runner, cfg.validation.interval, cfg.optim.number_of_steps, run_dir, metrics)

    def _run(self, transformer: nn.Module, step: int) -> Path | None:
        reel = self.runner.run(transformer, step) if self.runner is not None else None
        if reel is not None:
            log.info("validation reel (step %d): %s", step, reel)
            self.metrics.log_video(step, "validation/reel", reel)
        # Other ranks wait here instead of timing out in the next collective while rank 0 renders.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        return reel

    def maybe_run(self, transformer: nn.Module, step: int) -> None:
        if self.interval > 0 and step % self.interval == 0 and step < self.total:
            self._run(transformer, step)

    def final(self, transformer: nn.Module, step: int) -> Path | None:
        """The end-of-training round; its reel is copied to ``video.mp4`` in the run directory."""
        reel = self._run(transformer, step)
        if reel is None:
            return None
        final = self.run_dir / FINAL_REEL
        shutil.copy2(reel, final)
        return final

