"""Attach a LoRA adapter to the transformer's attention projections (and optionally its FFNs)."""

from __future__ import annotations

import torch
from peft import LoraConfig as PeftLoraConfig
from torch import nn

from ltxlab.config.schema import LoraConfig

FFN_TARGETS = ["ff.net.0.proj", "ff.net.2", "audio_ff.net.0.proj", "audio_ff.net.2"]
ADAPTER_NAME = "default"


def peft_config(cfg: LoraConfig) -> PeftLoraConfig:
    targets = list(cfg.target_modules) + (FFN_TARGETS if cfg.include_ffn else [])
    return PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank, lora_dropout=cfg.dropout,
                          target_modules=targets, init_lora_weights=True)


def attach_lora(transformer: nn.Module, cfg: LoraConfig, seed: int) -> PeftLoraConfig:
    """Freeze the base model and add the adapter; LoRA A init is drawn from ``seed`` without touching the
    caller's global RNG stream. LoRA weights stay fp32 even over a bf16 base, for stable optimizer updates."""
    transformer.requires_grad_(False)
    config = peft_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    for name, param in transformer.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
    return config


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]
