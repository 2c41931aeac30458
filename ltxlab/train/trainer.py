"""Training setup around the loop: transformer + LoRA, DeepSpeed engine, resumable data and RNG state."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from peft import LoraConfig as PeftLoraConfig
from torch import nn

from ltxlab import distributed
from ltxlab.config.schema import Config
from ltxlab.data.pipeline import LatentCache
from ltxlab.errors import ConfigError
from ltxlab.models.loader import load_transformer, place_transformer, torch_dtype
from ltxlab.modes import ShiftedLogitNormal, build_mode
from ltxlab.train import checkpoint, resume
from ltxlab.train.batches import ShardBatches
from ltxlab.train.engine import build_engine, gather_trainable, partitioned_init
from ltxlab.train.heldout import HeldoutLoss, split_heldout
from ltxlab.train.loop import run_loop
from ltxlab.train.lora import attach_lora
from ltxlab.train.metrics import MetricsLogger
from ltxlab.train.previews import Previews
from ltxlab.train.replicas import ReplicaCheck
from ltxlab.train.streams import SlotStreams

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    transformer: nn.Module  # the LoRA-wrapped transformer (unwrapped from the engine)
    peft_config: PeftLoraConfig
    finished: bool
    final_loss: float | None
    is_main_process: bool
    reel: Path | None = None  # the final validation reel (the seeds' `video` output)
    val_loss: float | None = None  # the final held-out loss (the sweep objective)


def config_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def training_device() -> torch.device:
    return distributed.device()  # GPU LOCAL_RANK, bound before anything touched CUDA


def train(cfg: Config, latents: LatentCache, run_dir: Path, show_progress: bool = True,
          stop_after_steps: int | None = None) -> TrainOutcome:
    device = training_device()
    # Built on the host (ZeRO-3: partitioned while built); moved after LoRA so offloaded weights never reach the GPU.
    transformer = load_transformer(cfg.model, init_context=partitioned_init(cfg.deepspeed, cfg.optim,
                                                                            torch_dtype(cfg.model)))
    peft_config = attach_lora(transformer, cfg.lora, seed=cfg.train.seed)
    transformer = place_transformer(transformer, cfg.model, device)
    engine = build_engine(transformer, cfg.optim, cfg.deepspeed)
    rank, world = engine.global_rank, engine.world_size
    t = cfg.train
    heldout_split = split_heldout(latents.directory, latents.index, t.heldout_fraction, t.heldout_max_samples,
                                  t.heldout_min_dataset)
    batches = ShardBatches(latents.directory, latents.index, cfg.optim.batch_size, cfg.train.seed, engine.device,
                           rank=rank, world_size=world, exclude=heldout_split.excluded,
                           accumulation=cfg.optim.gradient_accumulation_steps, workers=cfg.data.num_workers)
    # Per-rank (per-slot) streams: ranks must not draw the same σ, noise and first-frame decisions.
    streams = SlotStreams(cfg.train.seed, rank, world, cfg.optim.gradient_accumulation_steps)
    sigmas = ShiftedLogitNormal(cfg.train.sigma_shift_min, cfg.train.sigma_shift_max,
                                cfg.train.sigma_uniform_fraction)
    mode = build_mode(cfg.mode.name, cfg.mode.first_frame_conditioning_p, sigmas,
                      audio_width=transformer.config.audio_in_channels)

    ckpt_dir = run_dir / "checkpoints"
    settings = resume.trajectory_settings(cfg, latents.key)
    fingerprint = resume.fingerprint(settings)
    start_step = 0
    if cfg.train.resume:
        resume.check_compatible(ckpt_dir, settings, world)  # names the keys that differ, before loading
    state = checkpoint.load(engine, ckpt_dir) if cfg.train.resume else None
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise ConfigError(f"{ckpt_dir} holds a checkpoint of a different configuration; use a new run "
                              "directory or set train.resume=false")
        start_step = state["step"]
        streams.load_state_dict(state["generator"])
        batches.load_state_dict(state["batches"])

    if rank == 0:
        resume.truncate_step_records(run_dir, start_step)  # steps after the checkpoint are logged again
        resume.write_record(ckpt_dir, settings, world)
    metrics = MetricsLogger(cfg.logger, run_dir, config_dict(cfg), enabled=rank == 0)
    previews = Previews.create(cfg, latents, run_dir, engine.device, metrics, enabled=rank == 0)
    heldout = HeldoutLoss.create(cfg, heldout_split, latents.directory, latents.index, engine.device, metrics,
                                 audio_width=transformer.config.audio_in_channels)

    replicas = ReplicaCheck(cfg.train.replica_check_interval, run_dir)

    def at_validation_interval(step: int) -> None:
        heldout.maybe_run(engine.module, step)
        previews.maybe_run(engine.module, step)
        replicas.maybe_check(engine.module, step)

    val_loss = None
    try:
        if start_step == 0:  # the untrained baseline: every run's held-out curve starts from the same point
            heldout.run(engine.module, 0)
        result = run_loop(engine, mode, batches, cfg, ckpt_dir, metrics, streams, start_step,
                          stop_after_steps=stop_after_steps, show_progress=show_progress and rank == 0,
                          extra_client_state={"fingerprint": fingerprint},
                          nonfinite_skips=state.get("nonfinite_skips", 0) if state else 0,
                          on_step_end=at_validation_interval)
        if result.finished:
            val_loss = heldout.final(engine.module, result.step)
        reel = previews.final(engine.module, result.step) if result.finished else None
    finally:
        metrics.finish()
        batches.close()
    final = result.losses[-1] if result.losses else None
    gather_trainable(engine.module)  # ZeRO-3: full LoRA weights for the export
    return TrainOutcome(transformer=engine.module, peft_config=peft_config, finished=result.finished,
                        final_loss=final, is_main_process=rank == 0, reel=reel, val_loss=val_loss)
