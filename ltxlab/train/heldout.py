"""Held-out loss: the number a sweep optimises (``val/loss``).

The training loss is one noisy draw per step (random σ, noise and first-frame decision), so two runs cannot be
compared by it. Here a fixed set of samples is scored (one batch per latent shape) at fixed σ levels
(``train.heldout_sigmas``, default 0.1/0.3/0.5/0.7/0.9, the same level for every modality in one forward) with
fixed noise from its own seeded generator, and the first frame held as at inference (i2v: held unless the sample
is a still; a2v: always, audio frozen). The same weights always give the same number, and the training RNG is
never touched.

The split is deterministic (a hash of each sample key, independent of the training seed): caches with at least
``train.heldout_min_dataset`` samples keep ``round(heldout_fraction · N)`` of them (at most
``heldout_max_samples``) out of training. Smaller caches keep every sample for training and score up to
``heldout_max_samples`` training samples instead (a fixed-noise training loss: it still ranks runs, but it does
not measure generalisation). Every rank scores the same samples (identical results; ZeRO-3 needs every rank in
each forward); rank 0 logs.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ltxlab.config.schema import Config
from ltxlab.data.shards import EncodedSample, ShardIndex, read_shard
from ltxlab.modes import build_mode
from ltxlab.modes.inputs import LatentBatch
from ltxlab.train.batches import collate
from ltxlab.train.metrics import MetricsLogger
from ltxlab.train.step import autocast_for, compute_loss, predict

log = logging.getLogger(__name__)

NOISE_SEED = 20_251_201  # fixed, so every run of a sweep (whatever train.seed) is scored on the same noise


@dataclass(frozen=True)
class HeldoutSplit:
    eval_keys: tuple[str, ...]  # the samples scored
    excluded: frozenset[str]  # the samples kept out of training (empty for small caches)
    shards: tuple[str, ...] = ()  # the shards holding the scored samples (only these are read)

    @property
    def from_training(self) -> bool:
        return not self.excluded


def _shard_keys(directory: Path, index: ShardIndex) -> dict[str, str]:
    """Sample key → shard name, from the tar member names, without decoding any tensor."""
    keys: dict[str, str] = {}
    for name in index.shards:
        with tarfile.open(directory / name) as tar:
            for member in tar.getnames():
                keys.setdefault(member.split(".", 1)[0], name)
    return keys


def split_heldout(directory: Path, index: ShardIndex, fraction: float, max_samples: int,
                  min_dataset: int) -> HeldoutSplit:
    shard_of = _shard_keys(directory, index)
    keys = sorted(shard_of, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    held_out = fraction > 0 and len(keys) >= min_dataset
    scored = keys[:min(max_samples, max(1, round(fraction * len(keys))))] if held_out else keys[:max_samples]
    shards = tuple(name for name in index.shards if name in {shard_of[k] for k in scored})
    return HeldoutSplit(tuple(scored), frozenset(scored) if held_out else frozenset(), shards)


class FixedSigma:
    """A σ "sampler" that always returns one level: lets the mode strategy build the inputs unchanged."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor:
        return torch.full((batch_size,), self.sigma)


def _sigma_key(sigma: float) -> str:
    return f"{sigma:g}"


@dataclass
class HeldoutLoss:
    cfg: Config
    split: HeldoutSplit
    batches: list[LatentBatch]
    metrics: MetricsLogger
    audio_width: int
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0  # time spent scoring, for its share of the run

    @classmethod
    def create(cls, cfg: Config, split: HeldoutSplit, directory: Path, index: ShardIndex, device: torch.device,
               metrics: MetricsLogger, audio_width: int) -> HeldoutLoss:
        t = cfg.train
        wanted = set(split.eval_keys)
        samples: list[EncodedSample] = [s for name in split.shards for s in read_shard(directory / name)
                                        if s.key in wanted]
        samples.sort(key=lambda s: split.eval_keys.index(s.key))
        # One batch per latent shape (all samples at once for a uniform cache): a few forwards per σ level.
        groups: dict[tuple[object, ...], list[EncodedSample]] = {}
        for sample in samples:
            audio = sample.tensors.get("audio")
            shape = (tuple(sample.tensors["video"].shape), None if audio is None else tuple(audio.shape))
            groups.setdefault(shape, []).append(sample)
        batches = [collate(group, device, index.fps) for group in groups.values()]
        where = "training samples (cache too small to hold any out)" if split.from_training else "held-out samples"
        log.info("held-out loss: %d %s at σ %s, every %s step(s) and at the end", len(samples), where,
                 "/".join(_sigma_key(s) for s in t.heldout_sigmas), cfg.validation.interval or "—")
        return cls(cfg, split, batches, metrics, audio_width)

    def maybe_run(self, transformer: nn.Module, step: int) -> None:
        interval, total = self.cfg.validation.interval, self.cfg.optim.number_of_steps
        if interval > 0 and step % interval == 0 and step < total:
            self.run(transformer, step)

    def final(self, transformer: nn.Module, step: int) -> float:
        return self.run(transformer, step)

    @torch.no_grad()
    def evaluate(self, transformer: nn.Module) -> dict[str, float]:
        """``val/loss`` (the mean over σ levels of the weighted video + audio loss, as the training loss is
        weighted) and per-σ, per-modality parts."""
        audio_cfg = self.cfg.audio
        record: dict[str, float] = {}
        totals = []
        was_training = transformer.training
        transformer.eval()
        try:
            for level, sigma in enumerate(self.cfg.train.heldout_sigmas):
                mode = build_mode(self.cfg.mode.name, 1.0, FixedSigma(sigma), self.audio_width)  # type: ignore[arg-type]
                video_sum, audio_sum, count, has_audio = 0.0, 0.0, 0, False
                for number, batch in enumerate(self.batches):
                    generator = torch.Generator().manual_seed(NOISE_SEED + 1000 * number + level)
                    inputs = mode.prepare(batch, generator)
                    with autocast_for(batch.video.device, self.cfg.model.dtype):
                        video_pred, audio_pred = predict(transformer, inputs, batch)
                    parts = compute_loss(video_pred, audio_pred, inputs)
                    video_sum += parts.video.sum().item()
                    count += parts.video.numel()
                    if parts.audio is not None:
                        has_audio = True
                        audio_sum += parts.audio.sum().item()
                key = _sigma_key(sigma)
                total = audio_cfg.video_loss_weight * video_sum / count
                record[f"val/video_loss_sigma_{key}"] = video_sum / count
                if has_audio:
                    record[f"val/audio_loss_sigma_{key}"] = audio_sum / count
                    total += audio_cfg.audio_loss_weight * audio_sum / count
                record[f"val/loss_sigma_{key}"] = total
                totals.append(total)
        finally:
            transformer.train(was_training)
        record["val/loss"] = sum(totals) / len(totals)
        return record

    def run(self, transformer: nn.Module, step: int) -> float:
        started = time.perf_counter()
        record = self.evaluate(transformer)
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        record["val/time"] = elapsed
        record["val/time_share"] = self.seconds / max(time.perf_counter() - self.started, 1e-9)
        self.metrics.log_eval(step, record)
        per_sigma = " ".join(f"{_sigma_key(s)}:{record[f'val/loss_sigma_{_sigma_key(s)}']:.4f}"
                             for s in self.cfg.train.heldout_sigmas)
        log.info("step %d: val/loss %.4f (σ %s) in %.2f s, %.1f%% of the run so far", step, record["val/loss"],
                 per_sigma, elapsed, 100 * record["val/time_share"])
        return record["val/loss"]
