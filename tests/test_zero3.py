"""ZeRO-3 partitions the frozen base as it is built: two gloo ranks, one short torchrun launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ltxlab.models import tiny
from tests.cli_runs import REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero3_two_ranks_never_hold_the_full_base(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    checkpoint = tmp_path / "ltx23"  # the tiny weights as a diffusers-format folder, read as model=ltx23
    tiny.build_transformer(0).save_pretrained(checkpoint / "transformer")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}",
                           str(REPO / "tests" / "zero3_worker.py"), str(tmp_path), str(checkpoint)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["world"] == 2 and rank["finite"]
        assert rank["loaded_equal"]  # model=ltx23 streamed shard by shard holds exactly the checkpoint's weights
        # Built under zero.Init: each rank's shards are half the base, and even the largest weight is split.
        assert rank["local_numel"] <= rank["full_numel"] // 2 + 64
        assert rank["largest_local"] < rank["largest_full"]
        assert rank["resident_after"] == 0  # between steps no frozen weight is gathered
        assert rank["losses"][-1] < rank["losses"][0]  # LoRA trains through the partitioned base
        assert rank["export_numel"] == rank["expected_lora_numel"] > 0  # the export has the full LoRA ...
        assert rank["trained_b"] > 0  # ... with its trained values (lora_B starts at zero)
    assert sum(r["local_numel"] for r in ranks) >= ranks[0]["full_numel"]  # together they hold all of it
