"""The non-finite guard on the real trainer (tiny model, real DeepSpeed engine, real latent cache).

An absurd learning rate (the CLI refuses it; set here on the typed config) blows the LoRA up after one step: every
later step is non-finite. Under ZeRO-0 and ZeRO-2 alike the bad steps are skipped without touching the weights or
advancing the LR schedule, counted, and training aborts cleanly with ``TrainingDiverged``; no checkpoint holds NaN.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltxlab.config.validate import validate
from ltxlab.data.pipeline import build_latents
from ltxlab.errors import EXIT_DIVERGED, TrainingDiverged
from ltxlab.train.checkpoint import latest_tag
from ltxlab.train.trainer import train
from tests.cli_runs import REPO, SHORT_RANDOM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("zero", ["zero0", "zero2"])
def test_nonfinite_steps_are_skipped_counted_then_abort(compose_cfg, cache_dir: Path, tmp_path: Path, zero: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The in-process process group's variables go away after the test: later CLI runs must pick their own port.
    for var, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", str(_free_port()))):
        monkeypatch.setenv(var, os.environ.get(var, value))
    cfg = validate(compose_cfg(f"deepspeed={zero}", "validation=none", "logger=none", "logger.progress_bar=false",
                               f"data.cache_dir={cache_dir}", "train.checkpoint_interval=1",
                               "train.max_nonfinite_steps=3", "optim.warmup_steps=10"))
    cfg.optim.learning_rate = 1e6  # past validation on purpose: the guard is the last line of defence
    run_dir = tmp_path / "run"
    latents = build_latents(cfg, run_dir, Path.cwd(), show_progress=False)
    with pytest.raises(TrainingDiverged, match=r"4 optimizer steps had non-finite .*max_nonfinite_steps=3"):
        train(cfg, latents, run_dir, show_progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    applied = len(rows)
    assert applied >= 1 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    # The step counter and the LR schedule count applied steps only: warmup LR of step s is lr·s/10.
    assert [r["step"] for r in rows] == list(range(1, applied + 1))
    assert [r["lr"] for r in rows] == pytest.approx([1e6 * s / 10 for s in range(1, applied + 1)])
    # The last checkpoint is the last applied step, and its LoRA is finite.
    ckpt = run_dir / "checkpoints"
    assert latest_tag(ckpt) == f"step_{applied:06d}"
    states = torch.load(ckpt / latest_tag(ckpt) / "mp_rank_00_model_states.pt", weights_only=False)
    assert states["lr_scheduler"]["last_epoch"] == applied
    assert all(torch.isfinite(v).all() for v in states["module"].values())


# One cached sample turned to NaN after the cache's own checks (as a NaN from the model would appear).
_POISON_ONE_SAMPLE = """
import dataclasses, runpy, sys, torch
from ltxlab.train import batches
real_sample = batches.ShardBatches._sample
def poisoned(self, position):
    sample = real_sample(self, position)
    if sample.key.startswith("000003_"):
        tensors = dict(sample.tensors, video=torch.full_like(sample.tensors["video"], float("nan")))
        sample = dataclasses.replace(sample, tensors=tensors)
    return sample
batches.ShardBatches._sample = poisoned
sys.argv = ["ltxlab", *sys.argv[1:]]
runpy.run_module("ltxlab", run_name="__main__", alter_sys=True)
"""


def test_a_nan_sample_is_skipped_counted_then_aborts_without_a_lora(cache_dir: Path, tmp_path: Path) -> None:
    """ZeRO-0 exported an all-NaN LoRA with exit 0 before: now each NaN step is skipped and counted, and the
    third one aborts with one error line, exit 3 and error.json; nothing is exported."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _POISON_ONE_SAMPLE, "logger=none", "logger.progress_bar=false", "validation=none",
         *SHORT_RANDOM,
         "deepspeed=zero0", "train.max_nonfinite_steps=2", f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=dict(os.environ, WANDB_MODE="offline"))
    assert proc.returncode == EXIT_DIVERGED, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "3 optimizer steps had non-finite loss or gradients (train.max_nonfinite_steps=2)" in line
    assert "Traceback" not in proc.stderr
    error = json.loads((run_dir / "error.json").read_text())
    assert error["status"] == 500 and error["error"] == "TrainingDiverged"
    assert not (run_dir / "lora.safetensors").exists() and not (run_dir / "result.json").exists()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > 12  # trained past skips
    assert max(r["nonfinite_skips"] for r in rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
