"""Resume bookkeeping: what a checkpoint must agree on, and keeping the run directory's records exact.

A run directory remembers the settings that shape its trajectory (``checkpoints/run.json``). Running the same
command again resumes; a changed trajectory setting is refused, naming each key old → new; settings that cannot
change the trajectory (logging, validation previews, checkpoint cadence, loader workers, paths) may change freely.
A finished run re-run is a no-op, and the per-step records are cut back to the checkpoint's step, so after any
number of resumes ``metrics.jsonl`` holds each step once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ltxlab.config.schema import Config
from ltxlab.errors import ConfigError

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
RESULT_FILE = "result.json"
STEP_RECORDS = ("metrics.jsonl", "heldout.jsonl")  # one JSON object per line, each with a "step"

# Config sections and keys that cannot change the training trajectory.
_FREE_SECTIONS = ("logger", "validation", "preset")
_FREE_KEYS = frozenset({
    "train.checkpoint_interval", "train.keep_checkpoints", "train.resume", "train.replica_check_interval",
    "train.max_nonfinite_steps", "data.num_workers", "data.cache_dir", "data.debug_dataset",
})


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def trajectory_settings(cfg: Config, data_key: str) -> dict[str, Any]:
    """Every setting that shapes the trajectory, as dotted keys (``optim.learning_rate``), plus the data cache."""
    tree = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(tree, dict)
    flat = {k: v for k, v in _flatten({k: v for k, v in tree.items() if k not in _FREE_SECTIONS}).items()
            if k not in _FREE_KEYS}
    flat["data.cache_key"] = data_key
    return json.loads(json.dumps(flat, default=str))  # the form it has once read back from run.json


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``optim.learning_rate: 0.001 → 0.002`` for every key whose value differs (or exists on one side only)."""
    missing = "(unset)"
    return [f"{key}: {json.dumps(old.get(key, missing))} → {json.dumps(new.get(key, missing))}"
            for key in sorted(old.keys() | new.keys()) if old.get(key, missing) != new.get(key, missing)]


def read_record(ckpt_dir: Path) -> dict[str, Any] | None:
    path = ckpt_dir / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # a kill while it was first written: no checkpoint can refer to it yet
        return None


def write_record(ckpt_dir: Path, settings: dict[str, Any], world_size: int) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{RUN_RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"settings": settings, "world_size": world_size}, indent=1, sort_keys=True))
    os.replace(tmp, ckpt_dir / RUN_RECORD)


def check_compatible(ckpt_dir: Path, settings: dict[str, Any], world_size: int) -> None:
    """Refuse to resume a checkpoint of another trajectory or another world size, saying exactly why."""
    record = read_record(ckpt_dir)
    if record is None:
        return
    changed = differences(record["settings"], settings)
    if changed:
        raise ConfigError(f"{ckpt_dir} holds a checkpoint of a different configuration ({'; '.join(changed)}); "
                          "run with the original values, use a new run directory, or set train.resume=false")
    if record["world_size"] != world_size:
        raise ConfigError(f"{ckpt_dir} was written by {record['world_size']} process(es) and this run has "
                          f"{world_size}: resume with {record['world_size']} (the optimizer state is partitioned "
                          "per process), use a new run directory, or set train.resume=false")


def finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``result.json`` when it finished and exported, else None."""
    try:
        return json.loads((run_dir / RESULT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def truncate_step_records(run_dir: Path, last_step: int) -> None:
    """Drop the per-step records after ``last_step`` (steps logged after the checkpoint being resumed, which the
    resumed run logs again); a half-written last line from a kill goes too."""
    for name in STEP_RECORDS:
        path = run_dir / name
        if not path.exists():
            continue
        kept, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                keep = json.loads(line)["step"] <= last_step
            except (json.JSONDecodeError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
            log.info("%s: dropped %d record(s) after step %d (they are logged again)", name, dropped, last_step)


def finished_run(cfg: Config, run_dir: Path, data_key: str, world_size: int) -> dict[str, Any] | None:
    """The ``result.json`` of a run directory that already finished this very run (its last checkpoint is the
    final step), else None; a checkpoint of another configuration is refused first."""
    from ltxlab.train.checkpoint import latest_tag, tag_for

    if not cfg.train.resume:
        return None
    ckpt_dir = run_dir / "checkpoints"
    check_compatible(ckpt_dir, trajectory_settings(cfg, data_key), world_size)
    result = finished_result(run_dir)
    if result is None or latest_tag(ckpt_dir) != tag_for(cfg.optim.number_of_steps):
        return None
    return result
