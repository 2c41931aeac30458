"""Launcher plumbing without launching: the deepspeed launcher's --local_rank, SLURM-derived ranks."""

from __future__ import annotations

import os

import pytest

from ltxlab import distributed
from ltxlab.__main__ import accept_launcher_args


@pytest.mark.parametrize(("argv", "kept", "local_rank"), [
    (["--local_rank=3", "mode=a2v"], ["mode=a2v"], "3"),  # what `deepspeed --module ltxlab` appends
    (["mode=a2v", "--local-rank", "1"], ["mode=a2v"], "1"),
    (["mode=a2v"], ["mode=a2v"], None),
])
def test_the_deepspeed_launchers_local_rank_is_taken_out(monkeypatch, argv, kept, local_rank) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert accept_launcher_args(argv) == kept
    assert os.environ.get("LOCAL_RANK") == local_rank


@pytest.mark.parametrize(("nodelist", "host"), [
    ("gpu[003-010,012],cpu1", "gpu003"), ("node7", "node7"), ("a[1-2]-ib[5-6]", "a1-ib5"), ("x1,x2", "x1")])
def test_first_host_of_a_slurm_nodelist(nodelist, host) -> None:
    assert distributed.first_host(nodelist) == host


def test_slurm_task_derives_rank_world_and_master() -> None:
    task = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
            "SLURM_JOB_NODELIST": "gpu[041-042]"}
    assert distributed.slurm_env(task) == {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                                           "MASTER_ADDR": "gpu041", "MASTER_PORT": str(20000 + 123456 % 20000)}
    # srun's step values win over the job's; a launcher's own RANK (srun torchrun …) is left alone.
    step = task | {"SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NODELIST": "gpu042"}
    assert distributed.slurm_env(step)["WORLD_SIZE"] == "8" and distributed.slurm_env(step)["MASTER_ADDR"] == "gpu042"
    assert distributed.slurm_env(task | {"RANK": "0"}) == {}
    assert distributed.slurm_env({}) == {}


def test_the_submitting_process_exports_no_rank(monkeypatch) -> None:
    """Hydra's submitit launcher submits from a plain process whose environment the SLURM tasks inherit: a
    RANK=0 / WORLD_SIZE=1 exported there would make every task rank 0 of a world of one."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    from ltxlab.__main__ import prepare_launch

    assert prepare_launch(["hydra/launcher=slurm"]) == ["hydra/launcher=slurm"]
    assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ
