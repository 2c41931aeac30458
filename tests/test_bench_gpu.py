"""tools/bench_gpu.py keeps working: the same code at 2 layers and tiny widths on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli_runs import REPO


def test_bench_gpu_tiny_runs_the_default_grid(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "tools/bench_gpu.py", "--layers", "2", "--tiny", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| resolution | frames | audio | base |" in proc.stdout
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["layers"] == 2 and report["tiny"] and len(rows) == 8
    ran = [r for r in rows if r["skipped"] is None]
    # On CPU every row runs except fp8 and compile, which say why.
    assert {(r["precision"], r["compile"]) for r in rows if r["skipped"]} <= {("fp8", False), ("bf16", True)}
    assert {r["precision"] for r in ran} == {"bf16", "int8"} and any(r["offload"] for r in ran)
    assert all(r["s_per_step"] > 0 and len(r["step_times"]) == 2 for r in ran)
    tokens = {r["resolution"]: r["video_tokens"] for r in rows if r["audio"]}
    assert tokens["low"] < tokens["medium"] < tokens["high"]
