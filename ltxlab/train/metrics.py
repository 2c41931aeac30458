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

    def state_dict(self) -> dict[str, dict[str, Any]]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        self.sums.clear()
        self.counts.clear()
        self.sums.update(state["sums"])
        self.counts.update(state["counts"])


HELDOUT_FILE = "heldout.jsonl"  # held-out records (`val/...`), apart so metrics.jsonl stays one line per step
_WANDB_DIRS = (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data"))


class MetricsLogger:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any], enabled: bool = True) -> None:
        self.enabled = enabled  # rank 0 only
        self.log_every = cfg.log_every
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a") if enabled else None
        self._heldout_path = run_dir / HELDOUT_FILE
        self._wandb = None
        self._env_set: list[str] = []
        if not enabled or cfg.name != "wandb":
            return
        import wandb

        # Keep W&B's cache/config/staging inside this run directory unless the user chose elsewhere; undone in
        # finish(), so the next job of a multirun in this process gets its own folders, not this one's.
        for var, sub in _WANDB_DIRS:
            if var not in os.environ:
                os.environ[var] = str(run_dir / "wandb" / sub)
                self._env_set.append(var)
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_has_key() else "offline")
        settings = wandb.Settings(silent=not cfg.library_logs)  # no banners unless logger.library_logs
        self._wandb = wandb.init(project=cfg.project, group=cfg.group, config={**config, "sweep": cfg.swept},
                                 dir=str(run_dir), mode=mode, name=cfg.run_name or run_dir.name,
                                 tags=list(cfg.tags) or None, resume="allow", id=_run_id(run_dir),
                                 settings=settings)
        log.info("W&B run %s %r%s (%s)", self._wandb.id, self._wandb.name,
                 f" in group {cfg.group!r}" if cfg.group else "", mode)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        assert self._file is not None
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        if step % self.log_every == 0 and "loss" in metrics:  # the loss lines of ltxlab.log
            log.info("step %d: loss %.4f lr %.2e %.2f samples/s", step, metrics["loss"], metrics.get("lr", 0.0),
                     metrics.get("samples_per_s", 0.0))

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Held-out records: ``heldout.jsonl`` and the same W&B run."""
        if not self.enabled:
            return
        with self._heldout_path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
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
            offline = self._wandb.settings.mode == "offline"
            run_dir = self._wandb.settings.sync_dir
            self._wandb.finish()
            self._wandb = None
            if offline:
                log.info("W&B offline run saved; upload it with: wandb sync %s", run_dir)
        for var in self._env_set:
            os.environ.pop(var, None)
        self._env_set = []


def _run_id(run_dir: Path) -> str:
    # Stable per run directory, so a resumed run continues the same W&B run.
    id_file = run_dir / ".wandb_id"
    if id_file.exists():
        return id_file.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    return run_id


def read_metrics(run_dir: Path, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (one per step) or, with ``name=HELDOUT_FILE``, the held-out ones."""
    path = run_dir / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
