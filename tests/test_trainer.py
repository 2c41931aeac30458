"""The Trainer's checkpoint round trip on the real components (tiny model, real DeepSpeed engine, real cache).

``save`` writes each stateful component's own state under its own key; a new Trainer that resumes gets every one
of them back exactly (data position, RNG streams, non-finite skip count, σ buckets), and with the engine's state
trains the next step to the very loss and LoRA of the trainer that went on. A checkpoint in the old client-state
layout is refused with a clear error.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxlab.config.validate import validate
from ltxlab.data.pipeline import build_latents
from ltxlab.errors import ConfigError
from ltxlab.train import checkpoint
from ltxlab.train.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _lora(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.engine.module.named_parameters() if p.requires_grad}


def test_save_then_load_restores_every_component(compose_cfg, cache_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                       ("MASTER_PORT", str(_free_port()))):
        monkeypatch.setenv(var, os.environ.get(var, value))
    cfg = validate(compose_cfg("validation=none", "logger=none", "logger.progress_bar=false",
                               f"data.cache_dir={cache_dir}", "optim.gradient_accumulation_steps=2"))
    run_dir = tmp_path / "run"
    latents = build_latents(cfg, run_dir, Path.cwd(), show_progress=False)

    with Trainer(cfg, latents, run_dir, show_progress=False) as first:
        first.setup()
        assert first.start_step == 0
        for step in (1, 2, 3):
            assert first.train_step(step).applied
        first.guard.skipped = 2  # as if two non-finite steps had been skipped: the count must survive a resume
        first.save(3)
        saved = {name: component.state_dict() for name, component in first.stateful().items()}
        assert saved["batches"]["consumed"] == 6 and saved["sigma_buckets"]["counts"]  # 3 steps × 2 micro-batches
        going_on = first.train_step(4)
        lora_after_4 = _lora(first)

    with Trainer(cfg, latents, run_dir, show_progress=False) as resumed:
        resumed.setup()
        assert resumed.start_step == 3
        for name, component in resumed.stateful().items():
            assert _same(component.state_dict(), saved[name]), name
        again = resumed.train_step(4)
        assert again.values["loss"] == going_on.values["loss"]
        assert again.values["nonfinite_skips"] == 2
        assert _same(_lora(resumed), lora_after_4)

        # A checkpoint in the client-state layout of before (one flat dict) is refused by name, not a KeyError.
        checkpoint.save(resumed.engine, resumed.ckpt_dir, 5, {"step": 5, "fingerprint": resumed.fingerprint,
                                                              "generator": resumed.streams.state_dict()}, keep=2)
    with Trainer(cfg, latents, run_dir, show_progress=False) as stale, \
            pytest.raises(ConfigError, match=r"another format .*train\.resume=false"):
        stale.setup()
