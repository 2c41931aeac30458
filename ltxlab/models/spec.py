"""Typed schema of the `model` config group (an OmegaConf structured config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """Which LTX-2.3 model to build or load, and how.

    Every other module receives model components through `ltxlab.models.loader`, so nothing outside
    `ltxlab.models` ever branches on `name`.
    """

    # Which model: "tiny" (the LTX-2.3 architecture at toy size, random weights from the real classes) or
    # "ltx23" (the real 22B model loaded from local paths).
    name: str = "tiny"
    # tiny only: seed of the random weights. The same seed always gives the same weights in every component.
    seed: int = 0
    # tiny only: "builtin" (model=tiny: the pretrained weights shipped in ltxlab/assets/tiny), a folder written by
    # tools/pretrain_tiny.py (pretrained VAEs, vocoder and transformer, with their own sizes), or empty
    # (model=tiny_random: random weights from `seed`).
    tiny_weights: str = ""

    # ltx23 only. Either a diffusers-format folder with subfolders transformer/, connectors/, vae/,
    # audio_vae/, vocoder/, text_encoder/, tokenizer/ ...
    checkpoint_dir: str | None = None
    # ... or Lightricks single-file checkpoints (the combined ltx-2.3 .safetensors may be given for all three:
    # the transformer file also provides the text connectors, the audio VAE file also provides the vocoder).
    # When `checkpoint_dir` is also set, its <component>/config.json is used as the architecture.
    transformer_file: str | None = None
    video_vae_file: str | None = None
    audio_vae_file: str | None = None
    # Gemma 3 12B folder (weights + tokenizer); overrides checkpoint_dir/text_encoder and /tokenizer.
    text_encoder_dir: str | None = None

    # Prompt length in tokens (left-padded). Must be a multiple of the connectors' learnable registers
    # (8 for tiny, 128 for LTX-2.3); the reference pipelines use 1024.
    max_sequence_length: int = 32

    # Audio↔video cross-attention modulation: "ltx_core" (current ltx-core: scale/shift from the modality's own
    # per-token timesteps, gate from the other modality's σ) or "legacy" (diffusers 0.42.1 / ltx-core 1.0.0: the
    # other modality's σ for both). See ltxlab/models/forward.py.
    cross_modulation: str = "ltx_core"

    # Weight dtype of every loaded component: "float32" or "bfloat16".
    dtype: str = "float32"
    # Recompute transformer activations in backward (saves memory on the 19B transformer).
    gradient_checkpointing: bool = False

    # Memory and speed (README "Memory and speed"). Storage of the frozen transformer blocks' Linear weights:
    # "fp32" / "bf16" (unquantized; must match `dtype`), "int8" (weight-only, per output channel) or "fp8" (e4m3,
    # per output channel; CUDA compute capability ≥ 8.9), both through torchao. LoRA weights stay fp32.
    base_precision: str = "fp32"
    # "none" or "blocks": the frozen weights of each transformer block live in pinned host memory and are copied to
    # the GPU block by block, the next one prefetched on a side stream (use with gradient_checkpointing).
    offload: str = "none"
    # torch.compile each transformer block (first steps compile; not combinable with offload).
    compile: bool = False
    # diffusers attention backend: "native" (torch SDPA: flash / mem-efficient / cuDNN chosen by torch),
    # "_native_flash", "_native_cudnn", "_native_efficient", "flash" (flash-attn installed), ...
    attention_backend: str = "native"
    # Encode stage: Gemma weights "fp32" / "bf16" (as `dtype`) or "int8" (weight-only, torchao), and VAE tiling
    # (spatial + temporal) for high resolutions and long clips.
    text_encoder_precision: str = "fp32"
    vae_tiling: bool = False
