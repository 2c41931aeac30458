"""Resumable checkpoints: DeepSpeed engine state (LoRA weights, optimizer, LR schedule) plus the client state the
Trainer hands over (step, and each component's own state: data position, RNG streams, …). Frozen base weights are
never written.

A checkpoint counts only once complete: DeepSpeed writes the tag folder, then rank 0 points ``latest`` at it with an
atomic rename. A kill at any moment (inside a save too) leaves the previous ``latest`` intact, and a half-written
tag folder is never loaded; old tags are removed only after the new one is in place.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_PREFIX = "step_"
LATEST = "latest"


def tag_for(step: int) -> str:
    return f"{TAG_PREFIX}{step:06d}"


def latest_tag(directory: Path) -> str | None:
    try:
        tag = (directory / LATEST).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return tag if tag.startswith(TAG_PREFIX) and (directory / tag).is_dir() else None


def _point_latest(directory: Path, tag: str) -> None:
    tmp = directory / f".{LATEST}.tmp-{os.getpid()}"
    with tmp.open("w") as f:
        f.write(tag)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / LATEST)


def save(engine: Any, directory: Path, step: int, client_state: dict[str, Any], keep: int) -> None:
    tag = tag_for(step)
    try:
        engine.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False,
                               exclude_frozen_parameters=True)  # returns after every rank has written (barrier)
    except RuntimeError as err:
        if not any(marker in str(err) for marker in ("PytorchStreamWriter", "inline_container")):
            raise
        # torch's zip writer reports a failed write (a full disk, a quota) as a RuntimeError: it is an OS error.
        raise OSError(errno.EIO, f"checkpoint write failed ({_free_space(directory)} free)",
                      str(directory / tag)) from err
    if engine.global_rank != 0:
        return
    _point_latest(directory, tag)
    tags = sorted(p for p in directory.glob(f"{TAG_PREFIX}*") if p.is_dir() and p.name != tag)
    old = tags[:-(keep - 1)] if keep > 1 else tags
    for path in old if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    log.info("checkpoint saved: %s", directory / tag)


def _free_space(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 1e6:.1f} MB"
    except OSError:
        return "unknown space"


def load(engine: Any, directory: Path) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint in ``directory``; returns its client state, or None when there is
    none."""
    tag = latest_tag(directory)
    if tag is None:
        return None
    path, client_state = engine.load_checkpoint(str(directory), tag=tag, load_module_strict=False,
                                                load_optimizer_states=True, load_lr_scheduler_states=True)
    return None if path is None else client_state
