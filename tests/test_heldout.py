"""The held-out split (deterministic, kept out of training, small caches scored on training samples) and W&B
folders per job within one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ltxlab.config.schema import LoggerConfig
from ltxlab.data.shards import EncodedSample, ShardIndex, ShardWriter, sample_key
from ltxlab.train.batches import ShardBatches
from ltxlab.train.heldout import split_heldout
from ltxlab.train.metrics import MetricsLogger
from tests.cli_runs import REPO, SHORT_RANDOM, losses


def _cache(directory: Path, count: int) -> ShardIndex:
    writer = ShardWriter(directory, samples_per_shard=7)
    for i in range(count):
        tensors = {"video": torch.zeros(4, 1, 2, 2), "text_video": torch.zeros(2, 4), "text_audio": torch.zeros(2, 4),
                   "text_mask": torch.ones(2)}
        writer.write(EncodedSample(key=sample_key(i, f"clip{i}"), tensors=tensors, meta={"fps": 24.0}))
    shards = writer.close()
    index = ShardIndex(fingerprint="t", shards=[n for n, _ in shards], counts=[c for _, c in shards], with_audio=False,
                       is_image=False, video_latent_shape=[4, 1, 2, 2], audio_latent_shape=None, fps=24.0)
    index.save(directory)
    return index


def test_split_is_deterministic_capped_and_kept_out_of_training(tmp_path: Path) -> None:
    index = _cache(tmp_path, 40)
    split = split_heldout(tmp_path, index, fraction=0.1, max_samples=8, min_dataset=20)
    assert len(split.excluded) == 4 and set(split.eval_keys) == split.excluded and not split.from_training
    assert split == split_heldout(tmp_path, index, fraction=0.1, max_samples=8, min_dataset=20)
    assert len(split_heldout(tmp_path, index, fraction=0.5, max_samples=8, min_dataset=20).excluded) == 8  # capped
    batches = ShardBatches(tmp_path, index, batch_size=1, seed=0, device=torch.device("cpu"), exclude=split.excluded,
                           workers=1)
    try:
        assert batches.batches_per_epoch == 36  # the 4 held-out samples are never trained on
    finally:
        batches.close()


def test_small_caches_keep_everything_for_training(tmp_path: Path) -> None:
    index = _cache(tmp_path, 12)
    split = split_heldout(tmp_path, index, fraction=0.1, max_samples=8, min_dataset=20)
    assert split.from_training and not split.excluded and len(split.eval_keys) == 8
    no_split = split_heldout(tmp_path, index, fraction=0.0, max_samples=8, min_dataset=1)
    assert no_split.from_training


def test_wandb_folders_do_not_leak_between_jobs_of_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    seen = []
    for job in ("0", "1"):
        run_dir = tmp_path / job
        run_dir.mkdir()
        logger = MetricsLogger(LoggerConfig(run_name=f"rank={job}"), run_dir, {"job": job})
        seen.append(os.environ["WANDB_DATA_DIR"])
        logger.log(1, {"loss": 1.0})
        logger.finish()
        assert "WANDB_DATA_DIR" not in os.environ  # restored: the next job sets its own
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert seen == [str(tmp_path / "0" / "wandb" / "data"), str(tmp_path / "1" / "wandb" / "data")]


def test_heldout_scoring_never_changes_the_training_losses(random_run: Path, cache_dir: Path,
                                                         tmp_path: Path) -> None:
    """The demo (on random weights) with held-out scoring replaced by a no-op trains exactly that demo's loss
    sequence (which scored at steps 0, 50 and 100): scoring has its own RNG and leaves the model as it found it."""
    run_dir = tmp_path / "no-heldout"
    script = (
        "import runpy, sys\n"
        "from ltxlab.train import heldout\n"
        "heldout.HeldoutLoss.run = lambda self, transformer, step: float('nan')\n"
        f"sys.argv = ['ltxlab', 'logger=none', 'logger.progress_bar=false', *{list(SHORT_RANDOM)},\n"
        f"            'hydra.run.dir={run_dir}', 'data.cache_dir={cache_dir}', 'validation=none']\n"
        "runpy.run_module('ltxlab', run_name='__main__')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run_dir / "heldout.jsonl").exists()
    scored = [json.loads(line)["step"] for line in (random_run / "heldout.jsonl").read_text().splitlines()]
    assert scored == [0, 50, 100]
    assert losses(run_dir) == losses(random_run)
