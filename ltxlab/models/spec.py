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

    # Weight dtype of every loaded component: "float32" or "bfloat16".
    dtype: str = "float32"
    # Recompute transformer activations in backward (saves memory on the 19B transformer).
    gradient_checkpointing: bool = False
