"""Loader wait share: how much of a training step the trainer spends waiting for ShardBatches, with real-size
samples on a synthetic cache. Target ≤ 2 %.

A sample has LTX-2.3's sizes at 768×768×89: a 128 × 12 × 24 × 24 video latent, 1024-token text embeddings for
both streams (4096 and 2048 wide), ~93 audio tokens of 128, all bf16 as the encoder stores them (≈14 MB). The
GPU step is simulated by a sleep of ``--step-s`` seconds (1.0 = the performance model's H100 floor at this size;
real steps are slower, which only lowers the share): like GPU compute it leaves the CPU to the loader threads.
The in-memory sample cache is off, so every batch is read from the tar shards.

    .venv/bin/python tools/bench_loader.py [--samples 24] [--steps 30] [--step-s 1.0] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ltxlab.data.shards import EncodedSample, ShardIndex, ShardWriter
from ltxlab.train.batches import ShardBatches

VIDEO = (128, 12, 24, 24)
AUDIO = (93, 128)
TEXT_TOKENS = 1024


def write_cache(directory: Path, samples: int, per_shard: int) -> ShardIndex:
    writer = ShardWriter(directory, per_shard)
    generator = torch.Generator().manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    for i in range(samples):
        tensors = {"video": noise(*VIDEO), "audio": noise(*AUDIO), "text_video": noise(TEXT_TOKENS, 4096),
                   "text_audio": noise(TEXT_TOKENS, 2048), "text_mask": torch.ones(TEXT_TOKENS)}
        writer.write(EncodedSample(key=f"{i:06d}_clip", tensors=tensors, meta={"fps": 24.0}))
    shards = writer.close()
    index = ShardIndex(fingerprint="bench", shards=[n for n, _ in shards], counts=[c for _, c in shards],
                       with_audio=True, is_image=False, video_latent_shape=list(VIDEO),
                       audio_latent_shape=list(AUDIO), fps=24.0)
    index.save(directory)
    return index


def measure(directory: Path, index: ShardIndex, args: argparse.Namespace, workers: int) -> tuple[float, float]:
    """(wait share of step time, mean wait per step) over ``args.steps`` simulated steps after a warm-up."""
    batches = ShardBatches(directory, index, args.batch_size, 0, torch.device("cpu"), rank=0,
                           world_size=args.world_size, memory_budget_bytes=0, workers=workers)
    for _ in range(args.warmup):
        next(batches)
        time.sleep(args.step_s)
    batches.wait_seconds = 0.0
    started = time.perf_counter()
    for _ in range(args.steps):
        next(batches)
        time.sleep(args.step_s)  # the GPU step
    elapsed = time.perf_counter() - started
    batches.close()
    return batches.wait_seconds / elapsed, batches.wait_seconds / args.steps


def bare_read(directory: Path, index: ShardIndex, args: argparse.Namespace) -> float:
    """Seconds to read and collate one batch synchronously (what a loader without prefetch would stall)."""
    batches = ShardBatches(directory, index, args.batch_size, 0, torch.device("cpu"), rank=0,
                           world_size=args.world_size, memory_budget_bytes=0, workers=1)
    times = []
    for micro in range(min(args.steps, batches.batches_per_epoch)):
        started = time.perf_counter()
        batches._load(batches.positions(0, micro))
        times.append(time.perf_counter() - started)
    batches.close()
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--per-shard", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--step-s", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--world-size", type=int, default=1, help="read rank 0's share of a world this size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the synthetic cache (temp dir)")
    args = parser.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="ltxlab-bench-loader-"))
    try:
        started = time.perf_counter()
        index = write_cache(root, args.samples, args.per_shard)
        size = sum((root / n).stat().st_size for n in index.shards) / 2**20
        print(f"synthetic cache: {args.samples} samples, {size:.0f} MiB in {len(index.shards)} shards "
              f"({time.perf_counter() - started:.1f} s)")
        read = bare_read(root, index, args)
        print(f"bare read + collate of one batch (no prefetch): {read * 1000:.1f} ms "
              f"= {100 * read / (read + args.step_s):.2f} % of a {args.step_s:.2f} s step")
        share, per_step = measure(root, index, args, args.workers)
        verdict = "ok" if share <= 0.02 else "ABOVE TARGET"
        print(f"loader wait with prefetch ({args.workers} workers): {per_step * 1000:.2f} ms/step = "
              f"{100 * share:.3f} % of step time (target ≤ 2 %: {verdict})")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
