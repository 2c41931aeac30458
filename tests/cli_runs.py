"""Running the real CLI (``python -m ltxlab``) from tests, with a shared latent cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# The mechanics tests' run: the demo preset on random weights, cut to 100 steps with checkpoints and previews every
# 50. The preset's 400 steps are what the pretrained world needs to learn its concepts; random weights learn none,
# and the checkpoint, resume and cache mechanics show as well in 100.
RANDOM_MODEL = "model=tiny_random"
SHORT = ("optim.number_of_steps=100", "train.checkpoint_interval=50", "validation.interval=50")
SHORT_RANDOM = (RANDOM_MODEL, *SHORT)


def random_weights_unless_chosen(overrides: tuple[str, ...] | list[str], short: bool = True) -> list[str]:
    """Tests train on random weights unless they pick a model, in the short run (:data:`SHORT_RANDOM`) unless
    ``short=False``; the overrides come after it, so a test's own step count or intervals win. The pretrained
    ``model=tiny`` has its own behavioural tests (tests/test_tiny_world.py)."""
    chosen = any(o.lstrip("+~").startswith("model=") for o in overrides)
    if chosen:
        return list(overrides)
    return [RANDOM_MODEL, *(SHORT if short else ()), *overrides]


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
