"""Framework overhead on the tiny model: steady-state step time of the real trainer (DeepSpeed engine, shard
reader, mode strategy, logging, progress bar) divided by a bare forward/backward/AdamW step of the same LoRA
model on the same batches. Target ≤ 1.10.

    .venv/bin/python tools/bench_step.py [--steps 400] [--warmup 100]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import register_configs
from ltxlab.config.validate import validate
from ltxlab.data.pipeline import build_latents
from ltxlab.models.loader import load_transformer
from ltxlab.modes import ShiftedLogitNormal, build_mode
from ltxlab.train.batches import ShardBatches
from ltxlab.train.lora import attach_lora
from ltxlab.train.metrics import read_metrics
from ltxlab.train.step import compute_loss, predict
from ltxlab.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


def framework_step(cfg, latents, run_dir: Path, warmup: int) -> tuple[float, float]:
    """(median, mean) wall-clock time between consecutive logged steps: everything the loop does is included."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    train(cfg, latents, run_dir, show_progress=True)
    times = [m["time"] for m in read_metrics(run_dir)][warmup:]
    deltas = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(deltas), statistics.fmean(deltas)


def bare_step(cfg, latents, steps: int, warmup: int) -> tuple[float, float]:
    """(median, mean) of a bare forward/backward/clip/AdamW step on pre-made inputs."""
    transformer = load_transformer(cfg.model)
    attach_lora(transformer, cfg.lora, seed=cfg.train.seed)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.learning_rate, weight_decay=cfg.optim.weight_decay)
    batches = ShardBatches(latents.directory, latents.index, 1, cfg.train.seed, torch.device("cpu"))
    mode = build_mode(cfg.mode.name, cfg.mode.first_frame_conditioning_p, ShiftedLogitNormal(),
                      transformer.config.audio_in_channels)
    generator = torch.Generator().manual_seed(0)
    prepared = []
    for _ in range(latents.index.num_samples):  # inputs made outside the timed loop
        batch = next(batches)
        prepared.append((mode.prepare(batch, generator), batch))
    durations = []
    for i in range(steps):
        inputs, batch = prepared[i % len(prepared)]
        started = time.perf_counter()
        video, audio = predict(transformer, inputs, batch)
        loss = compute_loss(video, audio, inputs).total
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[warmup:]), statistics.fmean(durations[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="alternating framework/bare measurements")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. mode=a2v deepspeed=zero0")
    args = parser.parse_args()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = compose("config", overrides=["logger=none", f"optim.number_of_steps={args.steps}",
                                           f"train.checkpoint_interval={args.steps}", *args.overrides])
    cfg = validate(raw)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        latents = build_latents(cfg, run_dir, REPO, show_progress=False)
        pairs = []
        for _ in range(args.repeats):  # alternate, so drift in machine speed hits both sides alike
            pairs.append((framework_step(cfg, latents, run_dir, args.warmup),
                          bare_step(cfg, latents, args.steps, args.warmup)))
    print(f"threads={torch.get_num_threads()} steps={args.steps} warmup={args.warmup} overrides={args.overrides}")
    for (f_med, f_mean), (b_med, b_mean) in pairs:
        print(f"  median: framework {f_med * 1e3:6.2f} ms  bare {b_med * 1e3:6.2f} ms  ratio {f_med / b_med:.3f}   "
              f"mean: framework {f_mean * 1e3:6.2f} ms  bare {b_mean * 1e3:6.2f} ms  ratio {f_mean / b_mean:.3f}")
    median_ratio = statistics.median(f[0] / b[0] for f, b in pairs)
    mean_ratio = statistics.median(f[1] / b[1] for f, b in pairs)
    print("framework = wall clock per step of the real loop (data, mode, DeepSpeed, logging, progress bar);")
    print("bare = forward + backward + clip + AdamW on pre-made inputs, same model and batches")
    print(f"ratio (median step): {median_ratio:.3f}   ratio (mean step): {mean_ratio:.3f}   (target ≤ 1.10)")


if __name__ == "__main__":
    main()
