"""Deterministic, resumable batches from the latent shards.

Each epoch visits the shards in an order drawn from (seed, epoch) and shuffles samples within each shard the same
way, so the sequence of batches is a pure function of the seed: a resumed run skips what it already consumed and
sees exactly the batches an uninterrupted run would. Ranks take interleaved samples of the same sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ltxlab.data.shards import EncodedSample, ShardIndex, read_shard
from ltxlab.models.codecs import pack_video
from ltxlab.modes.inputs import LatentBatch


def collate(samples: list[EncodedSample], device: torch.device, fps: float) -> LatentBatch:
    """Stack samples into a batch. Each sample keeps its own frame rate (shard meta ``fps``; ``fps`` is the
    fallback for caches that lack it): RoPE positions are in seconds, so a 60 fps clip is not taught as 24."""
    def stack(name: str) -> torch.Tensor:
        return torch.stack([s.tensors[name] for s in samples]).to(device, non_blocking=True)

    video = stack("video")  # [B, C, F, H, W]
    has_audio = "audio" in samples[0].tensors
    if has_audio and len({s.tensors["audio"].shape[0] for s in samples}) > 1:
        raise ValueError(
            "clips of different durations (frame rates) cannot share a batch: their audio lengths differ ("
            + ", ".join(f"{s.meta.get('name', s.key)}: {s.meta.get('fps')} fps" for s in samples)
            + "); use optim.batch_size=1 or data.auto_scale_input=true"
        )
    return LatentBatch(
        video=pack_video(video.float()),
        video_shape=tuple(video.shape[2:]),  # type: ignore[arg-type]
        audio=stack("audio").float() if has_audio else None,
        text_video=stack("text_video").float(),
        text_audio=stack("text_audio").float(),
        text_mask=stack("text_mask").float(),
        fps=torch.tensor([float(s.meta.get("fps", fps)) for s in samples], dtype=torch.float64),
    )


class ShardBatches:
    def __init__(self, directory: Path, index: ShardIndex, batch_size: int, seed: int, device: torch.device,
                 rank: int = 0, world_size: int = 1, memory_budget_bytes: int = 2 << 30,
                 exclude: frozenset[str] = frozenset()) -> None:
        # `exclude`: sample keys kept out of training (the held-out split, ltxlab/train/heldout.py).
        per_epoch = (index.num_samples - len(exclude)) // (batch_size * world_size)
        if per_epoch == 0:
            raise ValueError(f"{index.num_samples - len(exclude)} cached training samples cannot fill one batch "
                             f"of {batch_size} on {world_size} rank(s)")
        self.exclude = exclude
        self.directory, self.index = directory, index
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = per_epoch
        self.epoch, self.consumed = 0, 0  # consumed = batches taken in the current epoch
        self._iter: Iterator[LatentBatch] | None = None
        # LoRA datasets are often a few dozen clips: keep decoded shards in memory when they fit the budget.
        size = sum((directory / name).stat().st_size for name in index.shards)
        self._memory: dict[int, list[EncodedSample]] | None = {} if size <= memory_budget_bytes else None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self._iter = None

    def _epoch_samples(self, epoch: int) -> Iterator[EncodedSample]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        for shard_id in torch.randperm(len(self.index.shards), generator=generator).tolist():
            samples = self._shard(shard_id)
            for i in torch.randperm(len(samples), generator=generator).tolist():
                if samples[i].key not in self.exclude:
                    yield samples[i]

    def _shard(self, shard_id: int) -> list[EncodedSample]:
        if self._memory is not None and shard_id in self._memory:
            return self._memory[shard_id]
        samples = list(read_shard(self.directory / self.index.shards[shard_id]))
        if self._memory is not None:
            self._memory[shard_id] = samples
        return samples

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[LatentBatch]:
        group = self.batch_size * self.world_size
        pending: list[EncodedSample] = []
        taken = 0
        for sample in self._epoch_samples(epoch):
            pending.append(sample)
            if len(pending) < group:
                continue
            mine, pending = pending[self.rank::self.world_size], []
            taken += 1
            if taken > skip:
                yield collate(mine, self.device, self.index.fps)
            if taken == self.batches_per_epoch:
                return

    def __iter__(self) -> ShardBatches:
        return self

    def __next__(self) -> LatentBatch:
        while True:
            if self._iter is None:
                self._iter = self._epoch_batches(self.epoch, self.consumed)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.consumed, self._iter = self.epoch + 1, 0, None
                continue
            self.consumed += 1
            return batch
