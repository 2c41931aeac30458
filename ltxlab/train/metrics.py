"""Training metrics: a JSONL file in the run directory always, Weights & Biases when enabled.

W&B runs offline automatically when no API key is configured, so a run never blocks on the network.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ltxlab.config.schema import LoggerConfig

log = logging.getLogger(__name__)

SIGMA_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class SigmaBuckets:
    """Mean loss per σ bucket over a logging window: shows whether the LoRA learns structure or detail."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, prefix: str, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        for s, value in zip(sigma.tolist(), loss.tolist(), strict=True):
            for lo, hi in itertools.pairwise(SIGMA_BUCKETS):
                if lo <= s < hi or (hi == 1.0 and s == 1.0):
                    key = f"{prefix}_sigma_{lo:.2f}-{hi:.2f}"
                    self.sums[key] += value
                    self.counts[key] += 1

    def flush(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return means


class MetricsLogger:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], enabled: bool = True) -> None:
        self.enabled = enabled  # rank 0 only
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a") if enabled else None
        self._wandb = None
        if not enabled or cfg.name != "wandb":
            return
        import wandb

        # Keep W&B's cache/config/staging inside the run directory unless the user chose elsewhere.
        for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
            os.environ.setdefault(var, str(run_dir / "wandb" / sub))
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_has_key() else "offline")
        self._wandb = wandb.init(project=cfg.project, group=cfg.group, config=config, dir=str(run_dir),
                                 mode=mode, name=run_dir.name, resume="allow", id=_run_id(run_dir))
        log.info("W&B run %s (%s)", self._wandb.id, mode)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        assert self._file is not None
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def log_video(self, step: int, key: str, path: Path) -> None:
        if self.enabled and self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Video(str(path), format="mp4")}, step=step)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _run_id(run_dir: Path) -> str:
    # Stable per run directory, so a resumed run continues the same W&B run.
    id_file = run_dir / ".wandb_id"
    if id_file.exists():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    return run_id


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
