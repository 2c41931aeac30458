"""A real multirun on the tiny model: 3 jobs (``lora.rank=8,7,16``), the middle one invalid.

Checks one directory and one named W&B run per job in one group, the returned ``val/loss``, that the invalid job
is recorded as failed while the others complete, and ``python -m ltxlab.compare`` on the sweep directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ltxlab.config import CONF_DIR
from tests.cli_runs import REPO, SHORT_RANDOM
from tests.wandb_records import run_record

# One xdist worker for the module: its tests share one multirun sweep (conftest.py).
pytestmark = pytest.mark.xdist_group("test_sweeps")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, cache_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    args = [sys.executable, "-m", "ltxlab", "--multirun", *SHORT_RANDOM, "lora.rank=8,7,16", "validation=none",
            "logger=wandb",
            "logger.progress_bar=false", f"hydra.sweep.dir={out}", f"data.cache_dir={cache_dir}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env.pop(var, None)
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "failed: job 1 (rank=7)" in proc.stderr  # the end-of-sweep summary names the failed job
    return out


def _jobs(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "sweep.jsonl").read_text().splitlines()]


def test_one_directory_per_job_and_the_invalid_one_is_recorded(sweep_dir: Path) -> None:
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    for job in ("0", "2"):
        run = sweep_dir / job
        assert json.loads((run / "run_info.json").read_text())["status"] == "completed"
        assert (run / "lora.safetensors").exists() and (run / "loss.png").stat().st_size > 10_000
        assert "step 100: loss" in (run / "ltxlab.log").read_text()  # the log file holds the loss lines
    failed = sweep_dir / "1"
    error = json.loads((failed / "error.json").read_text())
    assert error["status"] == 422 and "lora.rank=7" in error["detail"] and error["billable_units"] == 0
    assert json.loads((failed / "run_info.json").read_text())["status"] == "failed"
    assert not (failed / "lora.safetensors").exists()


def test_each_job_returns_its_final_heldout_loss(sweep_dir: Path) -> None:
    jobs = {j["job"]: j for j in _jobs(sweep_dir)}
    assert jobs[1]["status"] == "failed" and jobs[1]["objective"] is None
    baselines = set()
    for num in (0, 2):
        heldout = [json.loads(line) for line in (sweep_dir / str(num) / "heldout.jsonl").read_text().splitlines()]
        assert [r["step"] for r in heldout] == [0, 50, 100]  # the baseline, every validation interval, the end
        assert {f"val/loss_sigma_{s}" for s in ("0.1", "0.3", "0.5", "0.7", "0.9")} <= set(heldout[-1])
        assert "val/audio_loss_sigma_0.5" in heldout[-1] and 0 < heldout[-1]["val/time_share"] < 1
        assert jobs[num]["objective"] == pytest.approx(heldout[-1]["val/loss"])  # what the task function returned
        assert json.loads((sweep_dir / str(num) / "result.json").read_text())["val_loss"] == jobs[num]["objective"]
        baselines.add(heldout[0]["val/loss"])
    # Fixed samples, σ levels and noise: at step 0 (LoRA B = 0, the base model) both ranks score exactly the same.
    assert len(baselines) == 1


def test_one_named_wandb_run_per_job_in_one_group(sweep_dir: Path) -> None:
    groups = set()
    for num, rank in ((0, 8), (2, 16)):
        (run_file,) = (sweep_dir / str(num) / "wandb").glob("offline-run-*/run-*.wandb")  # this job's folder only
        record = run_record(run_file)
        assert record.display_name == f"rank={rank}"
        assert list(record.tags) == [f"rank={rank}"]
        config = {item.key: json.loads(item.value_json) for item in record.config.update}
        assert config["sweep"] == {"rank": rank} and config["lora"]["rank"] == rank
        groups.add(record.run_group)
    (group,) = groups
    assert group.startswith("config-") and group.endswith("sweep")


def test_compare_table_plot_and_csv(sweep_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ltxlab.compare", str(sweep_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = proc.stdout.splitlines()[0]
    for column in ("rank", "final val/loss", "best val/loss", "final train loss", "steps", "samples/s", "status"):
        assert column in header
    table = pd.read_csv(sweep_dir / "compare.csv")
    assert list(table["run"]) [:2] == sorted(["rank=8", "rank=16"], key=lambda n: table.set_index("run").at[
        n, "final val/loss"])  # sorted by the objective
    assert table.set_index("run").at["rank=7", "status"] == "failed"
    assert set(table["steps"].dropna()) == {100}
    assert (sweep_dir / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (sweep_dir / "compare.png").stat().st_size > 10_000


def test_job_names_from_sweeper_params_and_command_line_sweeps(monkeypatch) -> None:
    """An Optuna-style job (no multirun.yaml): names from the search space and the command line's sweeps only,
    grid values as written, sampled floats rounded; fixed overrides never appear."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ltxlab.sweep import job_identity

    hydra_cfg = OmegaConf.create({
        "mode": RunMode.MULTIRUN, "sweep": {"dir": "/nowhere/2026-12-01/21-30-00"},
        "sweeper": {"params": {"optim.learning_rate": "tag(log, interval(1e-5, 1e-3))", "lora.rank": "choice(8, 16)"}},
        "job": {"num": 3, "config_name": "config"}, "runtime": {"choices": {"sweep": "optuna"}},
        "overrides": {"task": ["optim.learning_rate=0.00012345678901", "lora.rank=16", "data.cache_dir=/x",
                               "mode.first_frame_conditioning_p=4e-1"]}})
    monkeypatch.setattr(sys, "argv", ["ltxlab", "--multirun", "mode.first_frame_conditioning_p=4e-1,1.0",
                                      "data.cache_dir=/x"])
    job = job_identity(hydra_cfg)
    assert job is not None
    assert job.name == "lr=0.000123,rank=16,p=4e-1"
    assert job.swept == {"lr": 0.00012345678901, "rank": 16, "p": 0.4}
    assert job.group == "optuna-2026-12-01_21-30-00"


def test_optuna_and_slurm_configs_compose() -> None:
    """The Optuna search (the seeds' ranks, log learning rate, p; minimising val/loss) and the SLURM launcher."""
    from hydra import compose, initialize_config_dir

    from ltxlab.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        optuna = compose(config_name="config", return_hydra_config=True, overrides=["+sweep=optuna"]).hydra.sweeper
        assert optuna._target_.endswith("OptunaSweeper") and optuna.direction == "minimize"
        assert dict(optuna.params) == {"optim.learning_rate": "tag(log, interval(5e-5, 2e-3))",
                                       "lora.rank": "choice(8, 16, 32, 64, 128)",
                                       "mode.first_frame_conditioning_p": "interval(0.0, 1.0)"}
        a2v = compose(config_name="config", return_hydra_config=True, overrides=["+sweep=optuna_a2v"])
        assert a2v.mode.name == "a2v" and "mode.first_frame_conditioning_p" not in a2v.hydra.sweeper.params
        slurm = compose(config_name="config", return_hydra_config=True,
                        overrides=["+sweep=rank_lr", "hydra/launcher=slurm_sweep"]).hydra.launcher
        assert slurm._target_.endswith("SlurmLauncher") and slurm.gpus_per_node == 1 and slurm.tasks_per_node == 1
