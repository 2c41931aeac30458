"""The real CLI with the memory options: an int8 frozen base and 8-bit AdamW train the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

from ltxlab.config.schema import LoraConfig
from ltxlab.export import save_lora
from ltxlab.models.loader import load_pipeline, load_transformer
from ltxlab.models.spec import ModelConfig
from ltxlab.train.lora import attach_lora
from tests.cli_runs import cli, losses

QUICK = ["validation=none"]


def _learns(values: list[float]) -> bool:
    return all(math.isfinite(v) for v in values) and sum(values[-20:]) < 0.9 * sum(values[:20])


def test_int8_base_trains_and_exports_the_bf16_format(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "int8"
    cli(run, cache_dir, *QUICK, "model.base_precision=int8")
    got = losses(run)
    assert len(got) == 100 and _learns(got), got[:5] + got[-5:]

    # Same files, keys, shapes and dtypes as a LoRA over the unquantized base of the same rank (the default, 32).
    plain = load_transformer(ModelConfig())
    (tmp_path / "plain").mkdir()
    reference = save_lora(plain, attach_lora(plain, LoraConfig(), seed=0), tmp_path / "plain")
    for exported, expected in zip((run / "lora.safetensors",
                                   run / "lora_diffusers" / "pytorch_lora_weights.safetensors"), reference,
                                  strict=True):
        a, b = load_file(exported), load_file(expected)
        assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}

    # The diffusers pipeline (unquantized base) takes every key of both files.
    for path in (run / "lora.safetensors", run / "lora_diffusers" / "pytorch_lora_weights.safetensors"):
        pipe = load_pipeline(ModelConfig())
        pipe.load_lora_weights(str(path), adapter_name="trained")
        loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="trained")
        assert len(loaded) == len(load_file(reference[1]))
        assert any(v.abs().max() > 0 for k, v in loaded.items() if "lora_B" in k)  # trained, not the zero init


def test_adamw8bit_trains_with_8bit_state(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "adamw8bit"
    # Tiny LoRA tensors are below bitsandbytes' default 4096-element floor: 0 puts every one in 8 bits.
    cli(run, cache_dir, *QUICK, "optim.optimizer=adamw8bit", "optim.min_8bit_size=0")
    got = losses(run)
    assert len(got) == 100 and _learns(got), got[:5] + got[-5:]
    states = list((run / "checkpoints" / "step_000100").glob("*optim_states.pt"))
    assert states
    found: list[torch.dtype] = []

    def walk(node) -> None:
        if isinstance(node, torch.Tensor):
            found.append(node.dtype)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(torch.load(states[0], map_location="cpu", weights_only=False))
    assert torch.uint8 in found  # the moments are stored in 8 bits
