"""Multi-process training on CPU (gloo), through the real launchers: torchrun and the deepspeed launcher.

Six launches in all, shared by the tests through module fixtures (each costs ~20-60 s on 2 cores): the data
stage alone (``python -m ltxlab.encode``), an uninterrupted 2-rank run, the same on 1 rank with accumulation 2,
a 2-rank run stopped by SIGTERM then resumed with the other launcher, and a 2-rank run on a bad dataset. The
README's multi-GPU section shows these commands.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltxlab.data.shards import ShardIndex, read_shard
from ltxlab.train.batches import ShardBatches
from ltxlab.train.streams import SlotStreams
from tests.cli_runs import REPO, SHORT_RANDOM, losses

# One xdist worker for the module: its launches share module fixtures (conftest.py).
pytestmark = pytest.mark.xdist_group("test_multiprocess")

BIN = Path(sys.executable).parent
# What every launch shares: the demo config shrunk to the fewest steps validation allows, no previews, quiet.
DEMO = [*SHORT_RANDOM, "validation=none", "logger.progress_bar=false"]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    if proc.returncode != 0:
        raise AssertionError(f"{args[:4]} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


def _torchrun(*overrides: str) -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node=2", "-m", "ltxlab", *DEMO, *overrides]


@pytest.fixture(scope="module")
def mp_cache(tmp_path_factory) -> tuple[Path, str]:
    """``python -m ltxlab.encode``: the latent cache alone, as an encode job on a cluster would build it."""
    cache = tmp_path_factory.mktemp("mp-cache")
    proc = _run([sys.executable, "-m", "ltxlab.encode", *DEMO, "logger=none", f"data.cache_dir={cache}",
                 f"hydra.run.dir={tmp_path_factory.mktemp('encode')}"], cwd=REPO)
    return cache, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, mp_cache) -> tuple[Path, Path, str]:
    """``torchrun --nproc_per_node=2 -m ltxlab`` from a fresh folder, with the default run directory pattern."""
    launch = tmp_path_factory.mktemp("launch")
    proc = _run(_torchrun("logger=wandb", f"data.cache_dir={mp_cache[0]}", "train.replica_check_interval=1"),
                cwd=launch)
    run_dirs = [p for p in (launch / "outputs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1, run_dirs
    return launch, run_dirs[0], proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def one_rank_accumulated(tmp_path_factory, mp_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("acc") / "run"
    _run([sys.executable, "-m", "ltxlab", *DEMO, "logger=none", f"data.cache_dir={mp_cache[0]}",
          "optim.gradient_accumulation_steps=2", f"hydra.run.dir={run_dir}"], cwd=REPO)
    return run_dir


def _lora(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "lora.safetensors"))


def test_encode_builds_the_cache_a_training_run_reuses(mp_cache, two_ranks) -> None:
    assert "(built)" in mp_cache[1]
    assert "reused cache" in two_ranks[2]  # same config, same fingerprint: training loads no encoder


def test_two_ranks_leave_one_run_dir_and_one_set_of_outputs(two_ranks) -> None:
    launch, run_dir, _ = two_ranks
    assert [p.name for p in (launch / "outputs").iterdir()] == [run_dir.parent.name]
    result = json.loads((run_dir / "result.json").read_text())
    assert Path(result["lora_file"]).exists() and Path(result["lora_file_diffusers"]).exists()
    assert (run_dir / "config.json").exists() and (run_dir / ".hydra" / "config.yaml").exists()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # W&B on rank 0 only
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 101))  # one writer: every step once
    # Every rank writes its part of the ZeRO-2 checkpoint.
    parts = sorted(p.name for p in (run_dir / "checkpoints" / "step_000100").glob("*.pt"))
    assert parts == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                     "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_no_op_is_compiled_for_the_cpu_process_group(two_ranks) -> None:
    # DeepSpeed's CPU process group would JIT-compile its shared-memory all-reduce here (~25 s on a fresh machine,
    # and a crash without a C++ compiler); engine.skip_cpu_shm_comm_build keeps it out of training.
    assert "deepspeed_shm_comm" not in two_ranks[2]


def test_ranks_hold_identical_lora_after_every_step(two_ranks) -> None:
    records = [json.loads(line) for line in (two_ranks[1] / "replicas.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 101))
    assert all(len(r["digests"]) == 2 and r["digests"][0] == r["digests"][1] for r in records)
    assert len({r["digests"][0] for r in records}) == 100  # the weights do change every step


def test_two_ranks_equal_one_rank_with_accumulation_two(two_ranks, one_rank_accumulated) -> None:
    """Rank r of the 2-rank run and micro-batch r of the 1-rank run are the same slot: same samples, same noise.
    DeepSpeed averages the two ranks' fp32 gradients as (g0 + g1)/2 and accumulation sums g0/2 + g1/2, which were
    bit-identical until a fresh install on 2026-12-03 (the same commit, too) gave differences of one float32 ulp
    (≤ 6e-8 absolute, 3.5e-7 relative, after 100 steps; cause not traced). A wrong slot — another sample or noise on
    rank 1 — changes half of every gradient, far beyond float rounding, so the bound stays at rounding level."""
    two, one = _lora(two_ranks[1]), _lora(one_rank_accumulated)
    assert two.keys() == one.keys()
    for key in two:
        torch.testing.assert_close(two[key], one[key], rtol=2e-6, atol=2e-7)
    records = [json.loads(line) for line in (two_ranks[1] / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (one_rank_accumulated / "metrics.jsonl").read_text().splitlines()]
    # The logged loss is the mean over the step's samples (averaged across ranks); the LR advances once per
    # optimizer step, not per rank or micro-batch.
    assert [r["loss"] for r in records] == pytest.approx([r["loss"] for r in reference], rel=1e-6)
    assert [r["lr"] for r in records] == [r["lr"] for r in reference]


def test_ranks_read_disjoint_samples_covering_each_epoch(two_ranks) -> None:
    shards = two_ranks[1] / "shards"
    index = ShardIndex.load(shards)
    ranks = [ShardBatches(shards, index, 1, 42, torch.device("cpu"), rank=r, world_size=2) for r in (0, 1)]
    accumulated = ShardBatches(shards, index, 1, 42, torch.device("cpu"), accumulation=2)
    keys = [loc.key for loc in ranks[0].reader.locations]
    for epoch in (0, 1):
        per_rank = [[p for micro in range(b.batches_per_epoch) for p in b.positions(epoch, micro)] for b in ranks]
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(index.num_samples))  # 12 samples, 6 steps
        # Step s: rank r's sample is micro-batch r of the accumulated run.
        for step in range(ranks[0].steps_per_epoch):
            assert [ranks[r].positions(epoch, step)[0] for r in (0, 1)] == [
                accumulated.positions(epoch, 2 * step + m)[0] for m in (0, 1)]
    assert ranks[0].epoch_order(0) != ranks[0].epoch_order(1)  # reshuffled every epoch
    # What the loader threads deliver is those samples, read by random access from the tars.
    stored = {s.key: s for name in index.shards for s in read_shard(shards / name)}
    for micro in range(3):
        batch = next(ranks[1])
        expected = stored[keys[ranks[1].positions(0, micro)[0]]].tensors["text_video"]
        assert torch.equal(batch.text_video[0], expected.float())
    for b in (*ranks, accumulated):
        b.close()


def test_streams_differ_across_ranks_and_match_by_slot() -> None:
    def draw(streams: SlotStreams, micro: int) -> torch.Tensor:
        return torch.randn(4, generator=streams[micro])

    rank0, rank1 = SlotStreams(42, 0, 2, 1), SlotStreams(42, 1, 2, 1)
    assert not torch.equal(draw(rank0, 0), draw(rank1, 0))
    single = SlotStreams(42, 0, 1, 2)
    fresh0, fresh1 = SlotStreams(42, 0, 2, 1), SlotStreams(42, 1, 2, 1)
    assert torch.equal(draw(single, 0), draw(fresh0, 0)) and torch.equal(draw(single, 1), draw(fresh1, 0))
    reference = torch.randn(4, generator=torch.Generator().manual_seed(42_000))  # rank 0's stream as before
    assert torch.equal(draw(SlotStreams(42, 0, 1, 1), 0), reference)


def test_sigterm_on_two_ranks_resumes_to_the_uninterrupted_lora(two_ranks, mp_cache, tmp_path) -> None:
    """Stopped with torchrun, resumed with the deepspeed launcher (``--module``; it appends ``--local_rank``)."""
    run_dir = tmp_path / "run"
    common = ["logger=none", f"data.cache_dir={mp_cache[0]}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(_torchrun(*common), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_env())
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # a preempted job: torchrun forwards it to both ranks
    _, err = proc.communicate(timeout=180)
    assert err.count("stopped before the last step") == 2, err[-3000:]  # both ranks stopped cleanly (exit 75)
    stopped_at = len(losses(run_dir))
    assert 20 <= stopped_at < 100
    assert not (run_dir / "result.json").exists()

    resumed = _run([str(BIN / "deepspeed"), "--num_gpus", "2", "--module", "ltxlab", *DEMO, *common], cwd=REPO)
    assert f"(step {stopped_at})" in resumed.stdout + resumed.stderr  # rank 0's "resumed from …" line
    assert losses(run_dir) == losses(two_ranks[1])
    final, uninterrupted = _lora(run_dir), _lora(two_ranks[1])
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)


def test_a_bad_dataset_stops_every_rank_with_the_one_line_error(tmp_path) -> None:
    """Rank 0 runs the data stage; its 422 reaches the waiting rank too (nobody hangs at the barrier)."""
    empty = tmp_path / "empty_dataset"
    empty.mkdir()
    proc = subprocess.run(_torchrun("logger=none", f"data.source={empty}", f"data.cache_dir={tmp_path / 'cache'}",
                                    f"hydra.run.dir={tmp_path / 'run'}"), cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error: " in line and "Traceback" not in line]
    assert len(errors) == 2 and len({line.split("error: ", 1)[1] for line in errors}) == 1, proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr  # torchrun's summary: the input-error exit code, not a crash
    assert json.loads((tmp_path / "run" / "error.json").read_text())["status"] == 422
