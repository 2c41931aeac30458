"""Estimated peak GPU memory of the encode stage and of a LoRA training step, from parameter counts and
activation sizes — computed, not guessed.

* Parameter counts: the real diffusers / transformers classes at the LTX-2.3 and Gemma 3 12B configs, built on
  the meta device (no memory, no download). Bytes per weight follow the storage: bf16 2, int8 / fp8 1 plus one
  bf16 scale per output channel.
* LoRA: the adapter peft attaches at `lora.rank` (fp32 weight + fp32 grad + AdamW state: 2 × fp32, or 2 × 1 byte
  with 8-bit AdamW above bitsandbytes' 4096-element floor).
* Activations: one forward of the full-width transformer on the meta device at the step's exact token counts,
  with every tensor autograd saves for backward recorded by `saved_tensors_hooks` (views of weights excluded).
  Attention is counted as flash / memory-efficient SDPA keeps it (q, k, v, output and a per-row logsumexp) — the
  meta device would otherwise run the math path, which stores the N×N score matrix. Measured at 1 and 2 blocks,
  so per-block and outside-the-blocks costs separate; a 48-block step under gradient checkpointing holds each
  block's checkpointed inputs (its video + audio hidden states, bf16), one block's full saved set during its
  recompute, and the gradient of that block's largest saved tensor in flight.
* Offload (`model.offload=blocks`): two blocks' weights on the GPU (the one computing, the one prefetched).
* Encode: Gemma (bf16 or int8) alone, freed before the VAEs; then the video VAE encoder on one clip (its
  activations measured the same way, without autograd: the largest live conv input/output pair per layer).

    python tools/estimate_memory.py            # the README table (markdown)
    python tools/estimate_memory.py --json estimate.json

Not included: the CUDA context and allocator fragmentation (add ~1–2 GiB), DeepSpeed buffers (LoRA-sized).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxlab.config.resolution import bucket_size
from ltxlab.config.schema import LoraConfig
from ltxlab.models import ltx23
from ltxlab.models.forward import call_transformer
from ltxlab.models.workload import StepShape, step_shape
from ltxlab.train.lora import peft_config

GIB = 2**30
META = torch.device("meta")
BF16 = torch.bfloat16
PROMPT_TOKENS = 1024
LAYERS = 48
MIN_8BIT = 4096
# Gemma 3 12B (google/gemma-3-12b-it config.json): text 48 layers × 3840, SigLIP vision tower.
GEMMA_TEXT = dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=256, vocab_size=262208)
GEMMA_VISION = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                    image_size=896, patch_size=14)


class _FlashLikeAttention(torch.autograd.Function):
    """SDPA whose saved set is flash attention's: q, k, v, output and a [B, H, Nq] fp32 logsumexp."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the estimate only forwards
        raise NotImplementedError


@contextmanager
def _flash_sdpa():
    original = torch.nn.functional.scaled_dot_product_attention
    def sdpa(*args, **kwargs):
        q, k, v = (*args, *(kwargs.pop(n) for n in ("query", "key", "value") if n in kwargs))[:3]
        return _FlashLikeAttention.apply(q, k, v)

    torch.nn.functional.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


def _meta_transformer(layers: int, rank: int, checkpointing: bool) -> nn.Module:
    model = ltx23.build_meta_transformer(ltx23.transformer_config() | {"num_layers": layers})
    nn.Module.to(model, BF16)  # autocast runs the LoRA matmuls in bf16 too, so bf16 everywhere is the step
    model.requires_grad_(False)
    model.add_adapter(peft_config(LoraConfig(rank=rank)))
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model


def saved_bytes(shape: StepShape, layers: int, rank: int, checkpointing: bool = False) -> tuple[int, int]:
    """(total, largest) bytes autograd keeps for backward in one forward at ``shape``'s token counts."""
    model = _meta_transformer(layers, rank, checkpointing)
    weight_shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape[::-1]) for p in model.parameters()}
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape) not in weight_shapes:  # a weight (or its transpose) is not an activation
            sizes.append(t.numel() * t.element_size())
        return t

    cfg = model.config
    n, audio_tokens = shape.video_tokens, max(shape.audio_tokens, 1)

    def empty(*size: int) -> torch.Tensor:
        return torch.empty(*size, device=META, dtype=BF16)

    with _flash_sdpa(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        call_transformer(model, video=empty(1, n, cfg.in_channels), audio=empty(1, audio_tokens, cfg.audio_in_channels),
                         text_video=empty(1, PROMPT_TOKENS, cfg.cross_attention_dim),
                         text_audio=empty(1, PROMPT_TOKENS, cfg.audio_cross_attention_dim),
                         text_mask=torch.ones(1, PROMPT_TOKENS, device=META), video_timesteps=empty(1, n),
                         audio_timesteps=empty(1, audio_tokens), sigma=empty(1), audio_sigma=empty(1),
                         video_shape=shape.latent, fps=shape.fps, isolate_modalities=not shape.audio)
    return sum(sizes), max(sizes)


@dataclass
class Weights:
    block_linear: int  # Linear weight elements inside transformer_blocks
    block_out_channels: int  # their output channels (one scale each when quantized)
    block_other: int  # biases, norms, tables inside the blocks
    outside: int  # projections, embedders outside the blocks
    lora: int  # LoRA elements at the rank
    lora_8bit: int  # of which in tensors ≥ 4096 elements (8-bit AdamW stores these in 8 bits)


def transformer_weights(rank: int) -> Weights:
    model = _meta_transformer(1, rank, checkpointing=False)
    linear = out_ch = other = lora = lora8 = 0
    for name, module in model.transformer_blocks.named_modules():
        if type(module) is nn.Linear and ".lora_" not in f".{name}":
            linear += module.weight.numel()
            out_ch += module.out_features
    block_params = sum(p.numel() for n, p in model.transformer_blocks.named_parameters() if "lora_" not in n)
    other = block_params - linear
    for name, p in model.named_parameters():
        if "lora_" in name:
            lora += p.numel()
            lora8 += p.numel() if p.numel() >= MIN_8BIT else 0
    outside = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("transformer_blocks"))
    return Weights(linear * LAYERS, out_ch * LAYERS, other * LAYERS, outside, lora * LAYERS, lora8 * LAYERS)


def weight_bytes(w: Weights, precision: str, offload: bool) -> float:
    per_weight = 2 if precision == "bf16" else 1
    scales = 0 if precision == "bf16" else 2 * w.block_out_channels
    blocks = per_weight * w.block_linear + scales + 2 * w.block_other
    if offload:
        blocks *= 2 / LAYERS  # the block computing and the one prefetched
    return blocks + 2 * w.outside


def lora_bytes(w: Weights, optimizer: str) -> float:
    weights_and_grads = 8 * w.lora
    if optimizer == "adamw8bit":
        return weights_and_grads + 2 * w.lora_8bit + 8 * (w.lora - w.lora_8bit)
    return weights_and_grads + 8 * w.lora


def activation_bytes(shape: StepShape, rank: int) -> float:
    """Under gradient checkpointing, for a 48-block step: outside-the-blocks saved tensors, each block's
    checkpointed inputs (the video and audio hidden states it receives: text, timestep embeddings and RoPE tables
    are shared by all blocks), one block's full saved set while it is recomputed, and the gradient of its largest
    saved tensor in flight."""
    full1, _ = saved_bytes(shape, 1, rank, checkpointing=False)
    full2, largest = saved_bytes(shape, 2, rank, checkpointing=False)
    per_block = full2 - full1
    outside = max(0, full1 - per_block)
    cfg = ltx23.transformer_config()
    video_width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    audio_width = cfg["audio_num_attention_heads"] * cfg["audio_attention_head_dim"]
    checkpointed = 2 * (shape.video_tokens * video_width + shape.audio_tokens * audio_width)
    return outside + LAYERS * checkpointed + per_block + 2 * largest


def _meta_param_count(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def gemma_params() -> int:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    config = Gemma3Config(text_config=Gemma3TextConfig(**GEMMA_TEXT).to_dict(),
                          vision_config=SiglipVisionConfig(**GEMMA_VISION).to_dict())
    return _meta_param_count(lambda: Gemma3ForConditionalGeneration(config))


def video_vae_encode_bytes(resolution: str, frames: int, tiling: bool) -> tuple[int, float]:
    """(parameters, peak activation bytes) of the video VAE encoder on one clip, bf16, no autograd: the largest
    input + output pair of any conv / norm layer (what must be live at once)."""
    from diffusers import AutoencoderKLLTX2Video

    with torch.device("meta"):
        vae = AutoencoderKLLTX2Video.from_config(ltx23.video_vae_config())
    nn.Module.to(vae, BF16)
    params = sum(p.numel() for p in vae.parameters())
    width, height = bucket_size(resolution, "1:1")
    if tiling:  # diffusers' tiles: 512 px spatially, 16 frames temporally
        width, height, frames = min(width, 512), min(height, 512), min(frames, 17)
    peak = [0]

    def hook(_module, inputs, output):
        size = sum(t.numel() * t.element_size() for t in (*inputs, output) if isinstance(t, torch.Tensor))
        peak[0] = max(peak[0], size)

    handles = [m.register_forward_hook(hook) for m in vae.encoder.modules() if not list(m.children())]
    with torch.no_grad():
        vae.encoder(torch.empty(1, 3, frames, height, width, device=META, dtype=BF16))
    for h in handles:
        h.remove()
    return params, peak[0]


@dataclass
class Estimate:
    stage: str
    resolution: str
    frames: int
    audio: bool
    precision: str
    offload: bool
    optimizer: str
    gib: float
    parts: dict[str, float]


def training_rows(rank: int, frames: int) -> list[Estimate]:
    w = transformer_weights(rank)
    rows = []
    grid = [("medium", True, p, False, "adamw") for p in ("bf16", "int8", "fp8")]
    grid += [("medium", True, "bf16", True, "adamw"), ("medium", True, "int8", True, "adamw8bit"),
             ("low", True, "bf16", False, "adamw"), ("high", True, "bf16", False, "adamw"),
             ("medium", False, "bf16", False, "adamw"), ("high", True, "int8", True, "adamw8bit")]
    cache: dict[tuple[str, bool], float] = {}
    for resolution, audio, precision, offload, optimizer in grid:
        shape = step_shape(resolution, frames, audio)
        if (resolution, audio) not in cache:
            cache[(resolution, audio)] = activation_bytes(shape, rank)
        parts = {"weights": weight_bytes(w, precision, offload) / GIB, "lora+optimizer": lora_bytes(w, optimizer) / GIB,
                 "activations": cache[(resolution, audio)] / GIB}
        rows.append(Estimate("train", resolution, frames, audio, precision, offload, optimizer,
                             sum(parts.values()), parts))
    return rows


def encode_rows(frames: int) -> list[Estimate]:
    gemma = gemma_params()
    rows = []
    for precision in ("bf16", "int8"):
        bytes_ = gemma * (2 if precision == "bf16" else 1)
        # Prompt activations at 1024 tokens are small next to the weights: every layer's hidden state is kept.
        hidden = (GEMMA_TEXT["num_hidden_layers"] + 1) * PROMPT_TOKENS * GEMMA_TEXT["hidden_size"] * 2
        parts = {"weights": bytes_ / GIB, "activations": hidden / GIB}
        rows.append(Estimate("encode: Gemma 3 12B", "—", 0, False, precision, False, "—", sum(parts.values()), parts))
    for resolution, tiling in (("medium", False), ("high", False), ("high", True)):
        params, peak = video_vae_encode_bytes(resolution, frames if resolution != "high" else 121, tiling)
        parts = {"weights": params * 2 / GIB, "activations": peak / GIB}
        rows.append(Estimate(f"encode: video VAE{' (tiled)' if tiling else ''}", resolution,
                             frames if resolution != "high" else 121, False, "bf16", False, "—",
                             sum(parts.values()), parts))
    return rows


def markdown(rows: list[Estimate]) -> str:
    lines = ["| stage | resolution × frames | audio | base | offload | optimizer | weights | LoRA + optim | "
             "activations | **peak GiB (estimated)** |", "|" + " --- |" * 10]
    for r in rows:
        size = f"{r.resolution} × {r.frames}" if r.frames else "1024-token prompts"
        lines.append(f"| {r.stage} | {size} | {'on' if r.audio else 'off'} | {r.precision} | "
                     f"{'blocks' if r.offload else 'no'} | {r.optimizer} | {r.parts['weights']:.1f} | "
                     f"{r.parts.get('lora+optimizer', 0):.2f} | {r.parts['activations']:.1f} | **{r.gib:.1f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Estimate]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--frames", type=int, default=89)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = encode_rows(args.frames) + training_rows(args.rank, args.frames)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
