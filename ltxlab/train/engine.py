"""DeepSpeed engine around the LoRA-wrapped transformer, with a torch optimizer and LR schedule.

The optimizer is torch AdamW (DeepSpeed's fused/CPU Adam compiles a C++ op for a minute on first use). The
schedule is stepped by DeepSpeed once per optimizer step, never per micro-batch or per rank.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from typing import Any

import torch
from torch import nn

from ltxlab.config.schema import OptimConfig

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group_env() -> None:
    """A plain ``python -m ltxlab`` is a world of one: give DeepSpeed the variables a launcher would set."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def lr_lambda(cfg: OptimConfig):
    total, warmup, floor = cfg.number_of_steps, cfg.warmup_steps, cfg.min_lr_ratio

    def multiplier(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if cfg.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - floor) * progress

    return multiplier


def deepspeed_config(base: dict[str, Any], optim: OptimConfig) -> dict[str, Any]:
    config = dict(base)
    config.update(
        train_micro_batch_size_per_gpu=optim.batch_size,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        gradient_clipping=optim.max_grad_norm,
        steps_per_print=10**9,
        wall_clock_breakdown=False,
        zero_allow_untested_optimizer=True,  # torch AdamW under ZeRO is fine for LoRA-sized state
    )
    return config


def build_engine(model: nn.Module, optim: OptimConfig, ds_base: dict[str, Any]):
    """Return a ``deepspeed.DeepSpeedEngine`` training only the parameters that require grad."""
    import deepspeed  # heavy import, deferred so config tooling stays fast

    ensure_process_group_env()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.learning_rate, betas=(optim.beta1, optim.beta2),
                                  eps=optim.eps, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(ds_base, optim), dist_init_required=True)
    return engine
