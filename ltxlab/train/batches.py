"""Deterministic, resumable batches from the latent shards, read in the background.

The sample order of an epoch is a pure function of (seed, epoch): the shards in an order drawn from it, the
samples within each shard shuffled the same way. Optimizer step ``s`` consumes the next ``A·W·B`` samples of that
order (accumulation A, world W, batch B); micro-batch ``m`` of rank ``r`` is slot ``m·W + r`` of the step and
takes the slot's ``B`` consecutive samples. So ranks read disjoint shares that together cover the epoch, a resumed
run sees exactly the batches an uninterrupted one would, and any (W, A) with the same W·A trains on the same
samples per step (1 rank × accumulation 2 = 2 ranks × 1). The remainder of an epoch that fills no step is
skipped (a different remainder each epoch).

Each rank reads only its own samples (random access into the tars, ``shard_reader.py``) on loader threads that
stay a few micro-batches ahead, so reading never stalls the step.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ltxlab.data.shards import EncodedSample, ShardIndex
from ltxlab.models.codecs import pack_video
from ltxlab.modes.inputs import LatentBatch
from ltxlab.train.shard_reader import ShardReader


@dataclass
class StackedSamples:
    """A batch as stored (bf16 on real models), on the host: what a loader thread hands over."""

    tensors: dict[str, torch.Tensor]  # video [B, C, F, H, W], audio [B, L, D] (when on), text_*, text_mask
    fps: torch.Tensor  # [B] float64


def stack_samples(samples: list[EncodedSample], fps: float) -> StackedSamples:
    """Each sample keeps its own frame rate (shard meta ``fps``; ``fps`` is the fallback for caches that lack
    it): RoPE positions are in seconds, so a 60 fps clip is not taught as 24."""
    if "audio" in samples[0].tensors and len({s.tensors["audio"].shape[0] for s in samples}) > 1:
        raise ValueError(
            "clips of different durations (frame rates) cannot share a batch: their audio lengths differ ("
            + ", ".join(f"{s.meta.get('name', s.key)}: {s.meta.get('fps')} fps" for s in samples)
            + "); use optim.batch_size=1 or data.auto_scale_input=true"
        )
    return StackedSamples(
        tensors={name: torch.stack([s.tensors[name] for s in samples]) for name in samples[0].tensors},
        fps=torch.tensor([float(s.meta.get("fps", fps)) for s in samples], dtype=torch.float64))


def to_batch(stacked: StackedSamples, device: torch.device) -> LatentBatch:
    """Move to ``device`` first, then widen to fp32 and pack: on a GPU the host copies only stored bytes."""
    tensors = {name: t.to(device, non_blocking=True) for name, t in stacked.tensors.items()}
    video = tensors["video"]
    return LatentBatch(
        video=pack_video(video.float()),
        video_shape=tuple(video.shape[2:]),  # type: ignore[arg-type]
        audio=tensors["audio"].float() if "audio" in tensors else None,
        text_video=tensors["text_video"].float(),
        text_audio=tensors["text_audio"].float(),
        text_mask=tensors["text_mask"].float(),
        fps=stacked.fps,
    )


def collate(samples: list[EncodedSample], device: torch.device, fps: float) -> LatentBatch:
    """Stack samples into a training batch on ``device``."""
    return to_batch(stack_samples(samples, fps), device)


class ShardBatches:
    def __init__(self, directory: Path, index: ShardIndex, batch_size: int, seed: int, device: torch.device,
                 rank: int = 0, world_size: int = 1, memory_budget_bytes: int = 2 << 30,
                 exclude: frozenset[str] = frozenset(), accumulation: int = 1, workers: int = 2) -> None:
        # `exclude`: sample keys kept out of training (the held-out split, ltxlab/train/heldout.py).
        self.reader = ShardReader(directory, index)
        self.index, self.exclude = index, exclude
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size, self.accumulation = rank, world_size, accumulation
        usable = sum(1 for loc in self.reader.locations if loc.key not in exclude)
        self.samples_per_step = batch_size * world_size * accumulation
        self.steps_per_epoch = usable // self.samples_per_step
        if self.steps_per_epoch == 0:
            raise ValueError(f"{usable} cached training samples cannot fill one optimizer step of "
                             f"{self.samples_per_step} (batch {batch_size} × {world_size} rank(s) × "
                             f"accumulation {accumulation})")
        self.batches_per_epoch = self.steps_per_epoch * accumulation  # micro-batches per rank
        self.epoch, self.consumed = 0, 0  # consumed = micro-batches taken in the current epoch
        self.wait_seconds = 0.0  # time __next__ spent waiting for the loader (the loader benchmark reads it)
        # LoRA datasets are often a few dozen clips: keep decoded samples in memory when the cache fits the budget.
        size = sum((directory / name).stat().st_size for name in index.shards)
        self._memory: dict[int, EncodedSample] | None = {} if size <= memory_budget_bytes else None
        self._orders: dict[int, list[int]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ltxlab-loader")
        self._depth = 2 * accumulation + max(1, workers)  # micro-batches in flight: the next step and then some
        self._pending: deque[Future[LatentBatch | StackedSamples]] = deque()
        self._cursor = (0, 0)  # (epoch, micro-batch) of the next one to schedule

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self._drop_pending()

    def epoch_order(self, epoch: int) -> list[int]:
        """Sample positions (``ShardReader`` order) of one epoch, held-out samples left out."""
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            starts, order = self.reader.shard_starts, []
            for shard in torch.randperm(len(self.index.shards), generator=generator).tolist():
                for i in torch.randperm(self.index.counts[shard], generator=generator).tolist():
                    if self.reader.locations[starts[shard] + i].key not in self.exclude:
                        order.append(starts[shard] + i)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def positions(self, epoch: int, micro: int) -> list[int]:
        """The samples of this rank's micro-batch ``micro`` of ``epoch``: slot ``m·W + r`` of its step."""
        step, m = divmod(micro, self.accumulation)
        start = step * self.samples_per_step + (m * self.world_size + self.rank) * self.batch_size
        return self.epoch_order(epoch)[start:start + self.batch_size]

    def _sample(self, position: int) -> EncodedSample:
        if self._memory is not None and position in self._memory:
            return self._memory[position]
        sample = self.reader.read(position)
        if self._memory is not None:
            self._memory[position] = sample
        return sample

    def _load(self, positions: list[int]) -> LatentBatch | StackedSamples:
        """On a loader thread: the whole batch for the CPU; for a GPU the stored bytes, page-locked so that the
        copy in ``__next__`` is asynchronous (widening to fp32 happens on the GPU)."""
        stacked = stack_samples([self._sample(p) for p in positions], self.index.fps)
        if self.device.type == "cpu":
            return to_batch(stacked, self.device)
        return StackedSamples({name: t.pin_memory() for name, t in stacked.tensors.items()}, stacked.fps)

    def _schedule(self) -> None:
        while len(self._pending) < self._depth:
            epoch, micro = self._cursor
            self._pending.append(self._pool.submit(self._load, self.positions(epoch, micro)))
            self._cursor = (epoch, micro + 1) if micro + 1 < self.batches_per_epoch else (epoch + 1, 0)

    def _drop_pending(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._cursor = (self.epoch, self.consumed)

    def __iter__(self) -> ShardBatches:
        return self

    def __next__(self) -> LatentBatch:
        if self.consumed >= self.batches_per_epoch:  # a restored position at an epoch's end
            self.epoch, self.consumed = self.epoch + 1, 0
            self._drop_pending()
        self._schedule()
        started = time.perf_counter()
        batch = self._pending.popleft().result()
        self.wait_seconds += time.perf_counter() - started
        self._schedule()
        self.consumed += 1
        if self.consumed == self.batches_per_epoch:
            self.epoch, self.consumed = self.epoch + 1, 0
        return batch if isinstance(batch, LatentBatch) else to_batch(batch, self.device)

    def close(self) -> None:
        self._drop_pending()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.reader.close()
