"""DeepSpeed engine around the LoRA-wrapped transformer, with a torch optimizer and LR schedule.

The optimizer is torch AdamW or bitsandbytes' 8-bit AdamW (DeepSpeed's fused/CPU Adam compiles a C++ op for a
minute on first use). The schedule is stepped by DeepSpeed once per optimizer step, never per micro-batch or per
rank. For the same reason no C++ op is compiled for the CPU process group either (:func:`skip_cpu_shm_comm_build`).
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


def skip_cpu_shm_comm_build() -> None:
    """On the CPU accelerator, DeepSpeed's process group JIT-compiles a shared-memory all-reduce op
    (``deepspeed_shm_comm``) the first time a machine runs it: ~25 s, and a crash where no C++ compiler is
    installed. Only ``deepspeed.comm.inference_all_reduce`` uses it, which training never calls (gradients go through
    gloo's ``all_reduce``), so it is marked unavailable for this process. No-op on GPU accelerators."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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


def build_optimizer(params: list[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """``adamw``: torch AdamW, fp32 state (exact resume). ``adamw8bit``: bitsandbytes' block-wise 8-bit AdamW
    (CUDA and CPU): state tensors of at least ``optim.min_8bit_size`` elements are stored in 8 bits, smaller ones
    in fp32."""
    kwargs = dict(lr=optim.learning_rate, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                  weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if optim.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # imported on use: it probes for CUDA kernels on import

        return bnb.optim.AdamW8bit(params, min_8bit_size=optim.min_8bit_size, **kwargs)
    raise ValueError(f"optim.optimizer={optim.optimizer!r}")


def zero_stage(ds_base: dict[str, Any]) -> int:
    return int(ds_base.get("zero_optimization", {}).get("stage", 0))


def partitioned_init(ds_base: dict[str, Any], optim: OptimConfig, dtype: torch.dtype | None = None):
    """Under ZeRO-3, a ``deepspeed.zero.Init`` context: each rank keeps only its shard of every weight (in
    ``dtype``) as the model is built, so the full base is never materialised on one GPU. Otherwise None."""
    if zero_stage(ds_base) != 3:
        return None
    import deepspeed

    ensure_process_group_env()
    skip_cpu_shm_comm_build()
    return deepspeed.zero.Init(config_dict_or_path=deepspeed_config(ds_base, optim), dtype=dtype)


def build_engine(model: nn.Module, optim: OptimConfig, ds_base: dict[str, Any]):
    """Return a ``deepspeed.DeepSpeedEngine`` training only the parameters that require grad."""
    import deepspeed  # heavy import, deferred so config tooling stays fast

    ensure_process_group_env()
    skip_cpu_shm_comm_build()
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(ds_base, optim), dist_init_required=True)
    return engine


def gather_trainable(module: nn.Module) -> None:
    """End of a ZeRO-3 run (every rank calls it): each rank holds a shard of every LoRA weight; gather them and
    leave the full trained tensors in the module, so rank 0 exports real weights. No-op without ZeRO-3."""
    params = [p for p in module.parameters() if p.requires_grad and hasattr(p, "ds_tensor")]
    if not params:
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        full = [p.data.clone() for p in params]
    for param, data in zip(params, full, strict=True):
        param.data = data  # training is over: no ZeRO hook gathers these again
