"""Running the real CLI (``python -m ltxlab``) from tests, with a shared latent cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def random_weights_unless_chosen(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """Tests train on ``model=tiny_random`` (fast, and the golden losses were taken on it) unless they pick a model;
    the pretrained ``model=tiny`` has its own behavioural tests (tests/test_tiny_world.py)."""
    chosen = any(o.lstrip("+~").startswith("model=") for o in overrides)
    return list(overrides) if chosen else ["model=tiny_random", *overrides]


def cli(run_dir: Path, cache_dir: Path, *overrides: str, check: bool = True, timeout: float = 600,
        logger: str = "none", module: str = "ltxlab") -> subprocess.CompletedProcess[str]:
    """``python -m ltxlab`` (or ``module``: ``ltxlab.encode``) with the test settings and ``overrides``."""
    args = [sys.executable, "-m", module, f"logger={logger}", "logger.progress_bar=false",
            f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}", *random_weights_unless_chosen(overrides)]
    # Never reach the network from tests, even where the developer has a W&B key.
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"ltxlab exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]
