"""Resumable checkpoints: DeepSpeed engine state (LoRA weights, optimizer, LR schedule) plus our client state
(step, RNG, data position). Frozen base weights are never written."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_PREFIX = "step_"


def tag_for(step: int) -> str:
    return f"{TAG_PREFIX}{step:06d}"


def latest_tag(directory: Path) -> str | None:
    latest = directory / "latest"
    if not latest.exists():
        return None
    tag = latest.read_text().strip()
    return tag if (directory / tag).is_dir() else None


def save(engine: Any, directory: Path, step: int, client_state: dict[str, Any], keep: int) -> None:
    engine.save_checkpoint(str(directory), tag=tag_for(step), client_state=client_state,
                           exclude_frozen_parameters=True)
    old = sorted(p for p in directory.glob(f"{TAG_PREFIX}*") if p.is_dir())[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    log.info("checkpoint saved: %s", directory / tag_for(step))


def load(engine: Any, directory: Path) -> dict[str, Any] | None:
    """Restore the newest checkpoint in ``directory``; returns its client state, or None when there is none."""
    tag = latest_tag(directory)
    if tag is None:
        return None
    path, client_state = engine.load_checkpoint(str(directory), tag=tag, load_module_strict=False,
                                                load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        return None
    log.info("resumed from %s (step %d)", path, client_state["step"])
    return client_state
