"""The explicit training loop: batch → mode inputs → forward → loss → DeepSpeed backward/step → log/checkpoint."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ltxlab import distributed
from ltxlab.config.schema import Config
from ltxlab.modes import Mode
from ltxlab.train import checkpoint
from ltxlab.train.batches import ShardBatches
from ltxlab.train.guard import NonFiniteGuard, require_finite_weights
from ltxlab.train.metrics import MetricsLogger, SigmaBuckets
from ltxlab.train.step import autocast_for, compute_loss, predict
from ltxlab.train.streams import SlotStreams

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    step: int
    finished: bool  # False when stopped early (signal or stop_after_steps); resume continues
    losses: list[float] = field(default_factory=list)


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


def run_loop(engine: Any, mode: Mode, batches: ShardBatches, cfg: Config, ckpt_dir: Path, metrics: MetricsLogger,
             streams: SlotStreams, start_step: int, stop_after_steps: int | None = None,
             on_step_end: Callable[[int], None] | None = None, show_progress: bool = True,
             extra_client_state: dict[str, Any] | None = None, nonfinite_skips: int = 0) -> LoopResult:
    total = cfg.optim.number_of_steps
    accum = cfg.optim.gradient_accumulation_steps
    device = engine.device
    buckets = SigmaBuckets()
    result = LoopResult(step=start_step, finished=False)
    samples_per_step = cfg.optim.batch_size * accum * engine.world_size
    guard = NonFiniteGuard(engine, cfg.train.max_nonfinite_steps, skipped=nonfinite_skips)

    def client_state(step: int) -> dict[str, Any]:
        return {"step": step, "generator": streams.state_dict(), "batches": batches.state_dict(),
                "nonfinite_skips": guard.skipped, **(extra_client_state or {})}

    bar = tqdm(total=total, initial=start_step, desc="train", unit="step", disable=not show_progress,
               dynamic_ncols=True)
    with _StopFlag() as stop:
        step = start_step
        while step < total:
            started = time.perf_counter()
            lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances inside engine.step)
            video_losses, audio_losses = [], []
            sigmas: list[tuple[str, torch.Tensor]] = []
            for micro in range(accum):
                batch = next(batches)
                inputs = mode.prepare(batch, streams[micro])
                with autocast_for(device, cfg.model.dtype):
                    video_pred, audio_pred = predict(engine, inputs, batch)
                parts = compute_loss(video_pred, audio_pred, inputs, cfg.audio.video_loss_weight,
                                     cfg.audio.audio_loss_weight)
                engine.backward(parts.total)
                video_losses.append(parts.video)
                sigmas.append(("video_loss", inputs.video.sigma))
                if parts.audio is not None:
                    audio_losses.append(parts.audio)
                    sigmas.append(("audio_loss", inputs.audio.sigma))
                if micro == accum - 1:
                    # The step's one host sync: the losses for logging and, under ZeRO-0, the gradient norm for
                    # the guard, read together before the optimizer step so that a non-finite step is skipped.
                    summary = _read_step_values(video_losses, audio_losses, guard.gradient_norm())
                    guard.hold(summary.get("grad_norm"))
                engine.step()
            loss = summary["video_loss"]
            if "audio_loss" in summary:
                loss = (cfg.audio.video_loss_weight * loss + cfg.audio.audio_loss_weight * summary["audio_loss"])
            if guard.skipped_step(step + 1, loss):
                continue  # the next batches retry this step: the LR schedule stays aligned with applied steps
            _add_to_buckets(buckets, sigmas, video_losses, audio_losses)
            step += 1
            elapsed = time.perf_counter() - started
            record = {"loss": loss, **summary, "lr": lr, "step_time": elapsed,
                      "samples_per_s": samples_per_step / elapsed, "time": time.time(),
                      "nonfinite_skips": guard.skipped}
            if "grad_norm" not in record:
                grad_norm = engine.get_global_grad_norm()  # ZeRO computed it inside engine.step()
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
            at_log_point = step % cfg.logger.log_every == 0 or step == total
            if at_log_point:
                record.update(buckets.flush())
            metrics.log(step, record)
            result.losses.append(record["loss"])
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)

            # Every rank stops at the same step, even when a signal reached them a step apart.
            stopping = distributed.any_rank(stop.requested) or (
                stop_after_steps is not None and step - start_step >= stop_after_steps)
            if at_log_point or stopping:
                metrics.flush()
            if step % cfg.train.checkpoint_interval == 0 or step == total or stopping:
                require_finite_weights(engine.module, f"at step {step}")  # never checkpoint (or export) NaNs
                checkpoint.save(engine, ckpt_dir, step, client_state(step), cfg.train.keep_checkpoints)
            if on_step_end is not None:
                on_step_end(step)
            if stopping:
                log.warning("stopped at step %d of %d; run again with the same run directory to resume", step,
                            total)
                break
    bar.close()
    result.step = step
    result.finished = step >= total
    return result


def _read_step_values(video_losses: list[torch.Tensor], audio_losses: list[torch.Tensor],
                      grad_norm: torch.Tensor | None) -> dict[str, float]:
    names, values = ["video_loss"], [torch.cat(video_losses).float().mean()]
    if audio_losses:
        names.append("audio_loss")
        values.append(torch.cat(audio_losses).float().mean())
    if grad_norm is not None:
        names.append("grad_norm")
        values.append(grad_norm.to(values[0].device))
    # Averaged over ranks: the logged loss is the whole step's, and every rank's guard decides on the same value.
    return dict(zip(names, distributed.mean_over_ranks(torch.stack(values)).tolist(), strict=True))


def _add_to_buckets(buckets: SigmaBuckets, sigmas: list[tuple[str, torch.Tensor]],
                    video_losses: list[torch.Tensor], audio_losses: list[torch.Tensor]) -> None:
    losses = {"video_loss": iter(video_losses), "audio_loss": iter(audio_losses)}
    for prefix, sigma in sigmas:
        buckets.add(prefix, sigma, next(losses[prefix]))
