"""The Trainer: ``setup → train (train_step …, save) → close``, and ``load`` when resuming.

``setup`` builds everything a run needs (transformer + LoRA, DeepSpeed engine, batches, mode, RNG streams,
metrics, previews, held-out loss, replica check) and restores the newest checkpoint when ``train.resume``;
``train_step`` is one optimizer step; ``train`` is the explicit loop around it (progress bar, stop flag,
checkpoint cadence, validation hooks); ``close`` releases the loader threads and the metrics sinks. A checkpoint
holds the DeepSpeed engine's own state plus each stateful component's ``state_dict()`` under its own key, and
``load`` hands each one back its ``load_state_dict()``; nothing else is threaded through.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf
from peft import LoraConfig as PeftLoraConfig
from torch import nn
from tqdm import tqdm

from ltxlab import distributed
from ltxlab.config.schema import Config
from ltxlab.data.pipeline import LatentCache
from ltxlab.errors import ConfigError
from ltxlab.models.loader import load_transformer, place_transformer, torch_dtype
from ltxlab.modes import ShiftedLogitNormal, build_mode
from ltxlab.train import checkpoint, resume
from ltxlab.train.batches import ShardBatches
from ltxlab.train.engine import build_engine, gather_trainable, partitioned_init
from ltxlab.train.guard import NonFiniteGuard, require_finite_weights
from ltxlab.train.heldout import HeldoutLoss, split_heldout
from ltxlab.train.lora import attach_lora
from ltxlab.train.metrics import MetricsLogger, SigmaBuckets
from ltxlab.train.previews import Previews
from ltxlab.train.replicas import ReplicaCheck
from ltxlab.train.step import autocast_for, compute_loss, predict, read_step_values
from ltxlab.train.streams import SlotStreams

log = logging.getLogger(__name__)

# Version of the checkpoint's client state; a checkpoint without it predates per-component keys.
CHECKPOINT_FORMAT = 2


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainOutcome:
    transformer: nn.Module  # the LoRA-wrapped transformer (unwrapped from the engine)
    peft_config: PeftLoraConfig
    finished: bool
    final_loss: float | None
    is_main_process: bool
    reel: Path | None = None  # the final validation reel (the seeds' `video` output)
    val_loss: float | None = None  # the final held-out loss (the sweep objective)


@dataclass
class StepRecord:
    applied: bool  # False: non-finite, skipped (weights, optimizer and LR untouched); the next batches retry it
    values: dict[str, float]  # the step's metrics record (only "loss" when skipped)

    @property
    def loss(self) -> float:
        return self.values["loss"]


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and exit cleanly after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. some test runners)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: checkpointing after this step", signum)
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, cfg: Config, latents: LatentCache, run_dir: Path, show_progress: bool = True) -> None:
        self.cfg, self.latents, self.run_dir, self.show_progress = cfg, latents, run_dir, show_progress
        self.ckpt_dir = run_dir / "checkpoints"
        self.settings = resume.trajectory_settings(cfg, latents.key)
        self.fingerprint = resume.fingerprint(self.settings)
        self.start_step = 0
        self._to_close: list[Callable[[], None]] = []  # close() callbacks, in the order their owners were built

    # -- setup ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Build the model, engine, data, mode and per-rank streams, restore the checkpoint when resuming, then
        the rank-0 sinks (metrics, previews) that must open after the records are cut back to it."""
        cfg, latents = self.cfg, self.latents
        # Built on the host (ZeRO-3: partitioned while built); moved after LoRA so offloaded weights never reach
        # the GPU.
        transformer = load_transformer(cfg.model, init_context=partitioned_init(cfg.deepspeed, cfg.optim,
                                                                                torch_dtype(cfg.model)))
        self.peft_config = attach_lora(transformer, cfg.lora, seed=cfg.train.seed)
        transformer = place_transformer(transformer, cfg.model, distributed.device())
        self.engine = engine = build_engine(transformer, cfg.optim, cfg.deepspeed)
        self.is_main = engine.global_rank == 0
        t, accum = cfg.train, cfg.optim.gradient_accumulation_steps
        heldout_split = split_heldout(latents.directory, latents.index, t.heldout_fraction, t.heldout_max_samples,
                                      t.heldout_min_dataset)
        self.batches = ShardBatches(latents.directory, latents.index, cfg.optim.batch_size, t.seed, engine.device,
                                    rank=engine.global_rank, world_size=engine.world_size,
                                    exclude=heldout_split.excluded, accumulation=accum, workers=cfg.data.num_workers)
        self._to_close.append(self.batches.close)
        # Per-rank (per-slot) streams: ranks must not draw the same σ, noise and first-frame decisions.
        self.streams = SlotStreams(t.seed, engine.global_rank, engine.world_size, accum)
        sigmas = ShiftedLogitNormal(t.sigma_shift_min, t.sigma_shift_max, t.sigma_uniform_fraction)
        audio_width = transformer.config.audio_in_channels
        self.mode = build_mode(cfg.mode.name, cfg.mode.first_frame_conditioning_p, sigmas, audio_width=audio_width)
        self.guard = NonFiniteGuard(engine, t.max_nonfinite_steps)
        self.buckets = SigmaBuckets()

        if t.resume:
            self.start_step = self.load()
        if self.is_main:
            resume.truncate_step_records(self.run_dir, self.start_step)  # later steps are logged again
            resume.write_record(self.ckpt_dir, self.settings, engine.world_size)
        config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
        self.metrics = MetricsLogger(cfg.logger, self.run_dir, config, enabled=self.is_main)  # type: ignore[arg-type]
        self._to_close.append(self.metrics.finish)
        self.previews = Previews.create(cfg, latents, self.run_dir, engine.device, self.metrics,
                                        enabled=self.is_main)
        self.heldout = HeldoutLoss.create(cfg, heldout_split, latents.directory, latents.index, engine.device,
                                          self.metrics, audio_width=audio_width)
        self.replicas = ReplicaCheck(t.replica_check_interval, self.run_dir)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def stateful(self) -> dict[str, Stateful]:
        """The components whose state a checkpoint holds beside the engine's, each under its own key."""
        # The σ buckets hold the current logging window, so a resumed run logs the uninterrupted run's bucket
        # means; only rank 0's client state is kept, and only rank 0 logs them.
        return {"batches": self.batches, "streams": self.streams, "guard": self.guard, "sigma_buckets": self.buckets}

    def save(self, step: int) -> None:
        """Checkpoint after ``step`` (collective: every rank calls it); never a non-finite LoRA."""
        require_finite_weights(self.engine.module, f"at step {step}")  # never checkpoint (or export) NaNs
        state = {"format": CHECKPOINT_FORMAT, "step": step, "fingerprint": self.fingerprint,
                 **{name: component.state_dict() for name, component in self.stateful().items()}}
        checkpoint.save(self.engine, self.ckpt_dir, step, state, self.cfg.train.keep_checkpoints)

    def load(self) -> int:
        """Restore the newest complete checkpoint (engine and every component); returns its step, 0 without one.
        A checkpoint of another configuration, world size or checkpoint format is refused, saying which."""
        resume.check_compatible(self.ckpt_dir, self.settings, self.engine.world_size)  # names the keys that differ
        state = checkpoint.load(self.engine, self.ckpt_dir)
        if state is None:
            return 0
        components = self.stateful()
        if state.get("format") != CHECKPOINT_FORMAT or not components.keys() <= state.keys():
            raise ConfigError(f"{self.ckpt_dir} holds a checkpoint in another format (format "
                              f"{state.get('format', 1)}, this ltxlab reads {CHECKPOINT_FORMAT}); use a new run "
                              "directory or set train.resume=false")
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"{self.ckpt_dir} holds a checkpoint of a different configuration; use a new run "
                              "directory or set train.resume=false")
        for name, component in components.items():
            component.load_state_dict(state[name])
        log.info("resumed from %s (step %d)", self.ckpt_dir / checkpoint.tag_for(state["step"]), state["step"])
        return state["step"]

    # -- training ------------------------------------------------------------------------------------------------

    def train_step(self, step: int) -> StepRecord:
        """Optimizer step number ``step``: every micro-batch's forward and backward, the non-finite guard, the
        optimizer step. The logged values are read in one host sync and averaged over ranks."""
        cfg, engine = self.cfg, self.engine
        accum = cfg.optim.gradient_accumulation_steps
        started = time.perf_counter()
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances inside engine.step)
        video_losses: list[torch.Tensor] = []
        audio_losses: list[torch.Tensor] = []
        per_sigma: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (loss name, σ, loss) for the buckets
        for micro in range(accum):
            batch = next(self.batches)
            inputs = self.mode.prepare(batch, self.streams[micro])
            with autocast_for(engine.device, cfg.model.dtype):
                video_pred, audio_pred = predict(engine, inputs, batch)
            parts = compute_loss(video_pred, audio_pred, inputs, cfg.audio.video_loss_weight,
                                 cfg.audio.audio_loss_weight)
            engine.backward(parts.total)
            video_losses.append(parts.video)
            per_sigma.append(("video_loss", inputs.video.sigma, parts.video))
            if parts.audio is not None:
                audio_losses.append(parts.audio)
                per_sigma.append(("audio_loss", inputs.audio.sigma, parts.audio))
            if micro == accum - 1:
                # The step's one host sync: the losses for logging and, under ZeRO-0, the gradient norm for the
                # guard, read together before the optimizer step so that a non-finite step is skipped.
                summary = read_step_values(video_losses, audio_losses, self.guard.gradient_norm())
                self.guard.hold(summary.get("grad_norm"))
            engine.step()
        loss = summary["video_loss"]
        if "audio_loss" in summary:
            loss = cfg.audio.video_loss_weight * loss + cfg.audio.audio_loss_weight * summary["audio_loss"]
        if self.guard.skipped_step(step, loss):
            return StepRecord(applied=False, values={"loss": loss})
        for name, sigma, losses in per_sigma:
            self.buckets.add(name, sigma, losses)
        elapsed = time.perf_counter() - started
        values = {"loss": loss, **summary, "lr": lr, "step_time": elapsed,
                  "samples_per_s": self.batches.samples_per_step / elapsed, "time": time.time(),
                  "nonfinite_skips": self.guard.skipped}
        if "grad_norm" not in values:
            grad_norm = engine.get_global_grad_norm()  # ZeRO computed it inside engine.step()
            if grad_norm is not None:
                values["grad_norm"] = float(grad_norm)
        return StepRecord(applied=True, values=values)

    def at_validation_interval(self, step: int) -> None:
        module = self.engine.module
        self.heldout.maybe_run(module, step)
        self.previews.maybe_run(module, step)
        self.replicas.maybe_check(module, step)

    def train(self) -> TrainOutcome:
        """From the restored step to ``optim.number_of_steps``, or until a signal: log every step, checkpoint at
        the cadence, at the end and when stopping; then the final held-out loss and reel."""
        cfg, module = self.cfg, self.engine.module
        total = cfg.optim.number_of_steps
        if self.start_step == 0:  # the untrained baseline: every run's held-out curve starts from the same point
            self.heldout.run(module, 0)
        step, losses = self.start_step, []
        with _StopFlag() as stop, tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True,
                                       disable=not (self.show_progress and self.is_main)) as bar:
            while step < total:
                record = self.train_step(step + 1)
                if not record.applied:
                    continue  # the next batches retry this step: the LR schedule stays aligned with applied steps
                step += 1
                at_log_point = step % cfg.logger.log_every == 0 or step == total
                if at_log_point:
                    record.values.update(self.buckets.flush())
                self.metrics.log(step, record.values)
                losses.append(record.loss)
                bar.update(1)
                bar.set_postfix(loss=f"{record.loss:.4f}", lr=f"{record.values['lr']:.2e}", refresh=False)
                # Every rank stops at the same step, even when a signal reached them a step apart.
                stopping = distributed.any_rank(stop.requested)
                if at_log_point or stopping:
                    self.metrics.flush()
                if step % cfg.train.checkpoint_interval == 0 or step == total or stopping:
                    self.save(step)
                self.at_validation_interval(step)
                if stopping:
                    log.warning("stopped at step %d of %d; run again with the same run directory to resume", step,
                                total)
                    break
        finished = step >= total
        val_loss = self.heldout.final(module, step) if finished else None
        reel = self.previews.final(module, step) if finished else None
        gather_trainable(module)  # ZeRO-3: full LoRA weights for the export
        return TrainOutcome(transformer=module, peft_config=self.peft_config, finished=finished,
                            final_loss=losses[-1] if losses else None, is_main_process=self.is_main, reel=reel,
                            val_loss=val_loss)

    # -- teardown ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the metrics sinks and stop the loader threads; safe after a failed setup, and more than once."""
        while self._to_close:
            self._to_close.pop()()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def train(cfg: Config, latents: LatentCache, run_dir: Path, show_progress: bool = True) -> TrainOutcome:
    """The whole lifecycle in one call, for in-process callers (tools/bench_step.py, tests)."""
    with Trainer(cfg, latents, run_dir, show_progress) as trainer:
        trainer.setup()
        return trainer.train()
