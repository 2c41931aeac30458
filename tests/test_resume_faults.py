"""Faults around real CLI runs: SIGKILL anywhere (inside a checkpoint save too) resumes bit-exactly with one
metrics row per step, a finished run re-run is a no-op, a changed trajectory setting is refused by name, and two
runs started together on a fresh cache both succeed on one cache built once (which then heals when truncated)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ltxlab.data.cache import verify_shards
from tests.cli_runs import REPO, cli, losses, random_weights_unless_chosen

FAST = ("validation=none", "train.checkpoint_interval=20")


def _command(run_dir: Path, cache_dir: Path, *overrides: str, module: str = "ltxlab") -> list[str]:
    return [sys.executable, "-m", module, "logger=none", "logger.progress_bar=false", f"hydra.run.dir={run_dir}",
            f"data.cache_dir={cache_dir}", *random_weights_unless_chosen(overrides)]


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_after(run_dir: Path, cache_dir: Path, rows: int) -> None:
    proc = subprocess.Popen(_command(run_dir, cache_dir, *FAST), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < rows):
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed or checkpointed
    assert proc.wait(timeout=60) == -signal.SIGKILL


# Inside the save of step 80: after DeepSpeed wrote the model states, before the optimizer states.
_KILL_INSIDE_SAVE = """
import os, runpy, signal, sys, torch
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if "step_000080" in str(f) and "optim_states" in str(f):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = ["ltxlab", *sys.argv[1:]]
runpy.run_module("ltxlab", run_name="__main__", alter_sys=True)
"""


def test_sigkill_at_a_random_step_and_inside_a_save_resumes_bit_exactly(random_run: Path, cache_dir: Path,
                                                                       tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _kill_after(run_dir, cache_dir, rows=random.randint(22, 58))  # after the step-20 checkpoint, any step

    inside_save = subprocess.run([sys.executable, "-c", _KILL_INSIDE_SAVE,
                                  *_command(run_dir, cache_dir, *FAST)[3:]],
                                 cwd=REPO, capture_output=True, text=True, timeout=600)
    assert inside_save.returncode == -signal.SIGKILL, inside_save.stderr[-3000:]
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "latest").read_text() == "step_000060"  # the half-written step 80 is not pointed at
    assert not (ckpt / "step_000080" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()

    resumed = cli(run_dir, cache_dir, *FAST)
    assert "(step 60)" in resumed.stdout + resumed.stderr
    # After two resumes: every step once, and the trajectory of the uninterrupted run, bit for bit.
    assert [r["step"] for r in _rows(run_dir)] == list(range(1, 101))
    assert losses(run_dir) == losses(random_run)
    assert json.loads((run_dir / "result.json").read_text())["final_loss"] == losses(random_run)[-1]


def test_finished_run_rerun_is_a_noop_and_a_changed_lr_is_refused(random_run: Path, cache_dir: Path,
                                                                 tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(random_run, run_dir, ignore=shutil.ignore_patterns("wandb"))
    (run_dir / "error.json").write_text('{"status": 422}')  # left by an earlier failed attempt
    outputs = ("result.json", "lora.safetensors", "metrics.jsonl", "config.json", "checkpoints/latest")
    before = {name: (run_dir / name).read_bytes() for name in outputs}

    # Logging, previews, checkpoint cadence and loader workers cannot change the trajectory: not a new config.
    again = cli(run_dir, cache_dir, "validation=none", "train.checkpoint_interval=10", "data.num_workers=1")
    assert "already finished" in again.stdout + again.stderr
    assert {name: (run_dir / name).read_bytes() for name in outputs} == before
    assert not (run_dir / "error.json").exists()  # success supersedes the earlier failure

    refused = cli(run_dir, cache_dir, "optim.learning_rate=0.003", check=False)
    assert refused.returncode == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert "optim.learning_rate: 0.002 → 0.003" in line and "checkpoint_interval" not in line
    assert {name: (run_dir / name).read_bytes() for name in outputs} == before


def test_two_runs_on_a_fresh_cache_share_one_build_that_heals_when_truncated(tmp_path: Path) -> None:
    """Two runs' data stages started together on one fresh cache (``python -m ltxlab.encode``: the race is all in
    the data stage; training on a shared cache is what every other CLI test does)."""
    cache = tmp_path / "cache"
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen(_command(run, cache, "validation=none", module="ltxlab.encode"), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for run in runs]
    errors = [proc.communicate(timeout=900)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(e[-2000:] for e in errors)
    (entry,) = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(("sample-data", "."))]
    assert sorted(p.name for p in cache.iterdir() if ".tmp-" in p.name) == []
    shard = sorted(entry.glob("*.tar"))[0]
    for run in runs:  # both use the one build: the same shard files
        assert os.path.samefile(run / "shards" / shard.name, shard)

    good = shard.read_bytes()
    with shard.open("r+b") as f:
        f.truncate(len(good) // 2)
    assert "has" in verify_shards(entry) and verify_shards(runs[0] / "shards") is not None
    # Healed by a fresh process, as the original build was: float kernels inside this pytest process may run with
    # other thread settings left by earlier tests, which changes encoder rounding (not the cache's determinism).
    cmd = [sys.executable, "-m", "ltxlab.encode", "logger=none", "logger.progress_bar=false",
           f"hydra.run.dir={runs[0]}", f"data.cache_dir={cache}", "validation=none", "model=tiny_random"]
    healed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert healed.returncode == 0, healed.stderr[-2000:]
    assert shard.read_bytes() == good  # the truncated shard was rebuilt, byte-identical (deterministic data)
    assert verify_shards(runs[0] / "shards") is None  # the run's stale link was replaced
