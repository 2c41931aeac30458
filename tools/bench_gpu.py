"""Seconds per step and peak GPU memory of an i2v LoRA training step on the full-size LTX-2.3 transformer.

Random weights, no download: the real diffusers class at the LTX-2.3 config, built on the meta device and
materialised on the GPU. Each row is one configuration (resolution × frames, audio on/off, frozen-base precision,
block offload, torch.compile); the step is the trainer's own (i2v mode inputs → ``predict`` → ``compute_loss`` →
backward → AdamW on the fp32 LoRA, gradient checkpointing on, bf16 autocast). s/step is the median of ``--steps``
timed steps after ``--warmup``; peak memory is ``torch.cuda.max_memory_allocated`` over those steps.

    python tools/bench_gpu.py                          # default grid, ≤ 8 min on one H100/H200
    python tools/bench_gpu.py --grid full              # every combination (long)
    python tools/bench_gpu.py --layers 2 --tiny        # CPU smoke run of the same code (tests)

The default grid stops starting new rows once ``--budget-min`` is spent (they are listed as skipped).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxlab.config.schema import LoraConfig
from ltxlab.models import ltx23, tiny
from ltxlab.models.loader import place_transformer
from ltxlab.models.quantize import quantize_base
from ltxlab.models.spec import ModelConfig
from ltxlab.models.workload import StepShape, step_shape
from ltxlab.modes import ImageToVideo, LatentBatch, ShiftedLogitNormal
from ltxlab.train.lora import attach_lora
from ltxlab.train.step import compute_loss, predict

log = logging.getLogger("bench_gpu")
PROMPT_TOKENS = {"full": 1024, "tiny": 32}


@dataclass
class Row:
    resolution: str
    frames: int
    audio: bool
    precision: str
    offload: bool = False
    compile: bool = False
    video_tokens: int = 0
    audio_tokens: int = 0
    s_per_step: float | None = None
    peak_gib: float | None = None
    skipped: str | None = None
    step_times: list[float] = field(default_factory=list)


def default_grid() -> list[Row]:
    """Eight rows that fit in 8 minutes on one H100: the goal configuration in every precision and with each
    speed/memory option, plus the other resolutions and audio off in bf16."""
    goal = {"resolution": "medium", "frames": 89, "audio": True}
    return [Row(**goal, precision="bf16"), Row(**goal, precision="int8"), Row(**goal, precision="fp8"),
            Row(**goal, precision="bf16", offload=True), Row(**goal, precision="bf16", compile=True),
            Row("low", 89, True, "bf16"), Row("high", 89, True, "bf16"), Row("medium", 89, False, "bf16")]


def full_grid(frames: int) -> list[Row]:
    combos = itertools.product(("low", "medium", "high"), (True, False), ("bf16", "int8", "fp8"), (False, True),
                               (False, True))
    return [Row(res, frames, audio, prec, off, comp) for res, audio, prec, off, comp in combos if not (off and comp)]


def build_transformer(tiny_widths: bool, layers: int | None, precision: str, device: torch.device):
    config = (tiny.transformer_config() if tiny_widths else ltx23.transformer_config()) | (
        {"num_layers": layers} if layers else {})
    model = ltx23.build_meta_transformer(config)
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    torch.nn.Module.to(model, dtype)  # still on meta: the GPU only ever holds bf16 (38 GB, not 76 GB of fp32)
    model.to_empty(device=device)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02)
    model = model.eval().requires_grad_(False)
    quantize_base(model, precision)
    model.enable_gradient_checkpointing()
    return model


def make_batch(model, shape: StepShape, prompt_tokens: int, device: torch.device) -> LatentBatch:
    cfg = model.config
    g = torch.Generator().manual_seed(0)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g).to(device=device, dtype=torch.bfloat16)

    return LatentBatch(video=rand(1, shape.video_tokens, cfg.in_channels), video_shape=shape.latent,
                       audio=rand(1, shape.audio_tokens, cfg.audio_in_channels) if shape.audio else None,
                       text_video=rand(1, prompt_tokens, cfg.cross_attention_dim),
                       text_audio=rand(1, prompt_tokens, cfg.audio_cross_attention_dim),
                       text_mask=torch.ones(1, prompt_tokens, device=device), fps=shape.fps)


def skip_reason(row: Row, device: torch.device) -> str | None:
    if device.type != "cuda":
        if row.precision == "fp8":
            return "fp8 needs CUDA (compute capability ≥ 8.9)"
        if row.compile:
            return "compile rows run on CUDA only (CPU inductor builds take minutes)"
    elif row.precision == "fp8" and torch.cuda.get_device_capability(device) < (8, 9):
        return "fp8 needs compute capability ≥ 8.9"
    return None


def run_row(row: Row, args: argparse.Namespace, device: torch.device) -> None:
    shape = step_shape(row.resolution, row.frames, row.audio)
    model = build_transformer(args.tiny, args.layers, row.precision, device)
    if row.compile:
        for block in model.transformer_blocks:
            block.compile()
    attach_lora(model, LoraConfig(rank=args.rank), seed=0)
    model = place_transformer(model, ModelConfig(offload="blocks" if row.offload else "none"), device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = make_batch(model, shape, PROMPT_TOKENS["tiny" if args.tiny else "full"], device)
    mode = ImageToVideo(1.0, ShiftedLogitNormal(), model.config.audio_in_channels)
    generator = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"

    def step() -> float:
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        inputs = mode.prepare(batch, generator)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            video, audio = predict(model, inputs, batch)
        compute_loss(video, audio, inputs).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    row.step_times = [step() for _ in range(args.steps)]
    row.s_per_step = statistics.median(row.step_times)
    if cuda:
        row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30


def release_memory(device: torch.device) -> None:
    """Between rows: the previous row's model is gone once run_row returned; hand its blocks back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def table(rows: list[Row], device_name: str) -> str:
    lines = [f"device: {device_name}", "| resolution | frames | audio | base | offload | compile | tokens (v+a) | "
             "s/step | peak GiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        speed = f"{r.s_per_step:.3f}" if r.s_per_step is not None else (f"skipped: {r.skipped}" if r.skipped else "—")
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "—"
        lines.append(f"| {r.resolution} | {r.frames} | {'on' if r.audio else 'off'} | {r.precision} | "
                     f"{'blocks' if r.offload else 'no'} | {'yes' if r.compile else 'no'} | "
                     f"{r.video_tokens}+{r.audio_tokens} | {speed} | {peak} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=("default", "full"), default="default")
    parser.add_argument("--layers", type=int, default=None, help="transformer blocks (default: the model's 48)")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (CPU smoke run); implies short clips")
    parser.add_argument("--frames", type=int, default=None, help="pixel frames (default 89; 9 with --tiny)")
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 with --tiny)")
    parser.add_argument("--budget-min", type=float, default=7.5, help="start no new row after this many minutes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench_gpu.json"))
    args = parser.parse_args(argv)
    args.frames = args.frames or (9 if args.tiny else 89)
    args.steps = args.steps or (2 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here (use --tiny --device cpu for the smoke run)")
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("the full-size model needs a CUDA GPU; on CPU run the smoke version: --layers 2 --tiny")
    rows = default_grid() if args.grid == "default" else full_grid(args.frames)
    for row in rows:
        row.frames = args.frames
        shape = step_shape(row.resolution, row.frames, row.audio)
        row.video_tokens, row.audio_tokens = shape.video_tokens, shape.audio_tokens
    started = time.perf_counter()
    for row in rows:
        row.skipped = skip_reason(row, device)
        if row.skipped is None and (time.perf_counter() - started) / 60 > args.budget_min:
            row.skipped = f"time budget ({args.budget_min} min) spent"
        if row.skipped is None:
            run_row(row, args, device)
            release_memory(device)
        log.info("%s", {k: v for k, v in asdict(row).items() if k != "step_times"})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(table(rows, f"{name}, {args.layers or 48} layers{', tiny widths' if args.tiny else ''}"))
    args.json.write_text(json.dumps({"device": name, "layers": args.layers or 48, "tiny": args.tiny,
                                     "rank": args.rank, "rows": [asdict(r) for r in rows]}, indent=1))
    return rows


if __name__ == "__main__":
    main()
