"""Prompt encoding: tokenizer -> Gemma 3 (all hidden states) -> LTX-2.3 text connectors.

Follows what `LTX2Pipeline` does (left padding to a fixed length, every hidden state stacked on the last axis,
connectors with `padding_side="left"`) without instantiating a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class TextStack:
    """Everything needed to turn prompts into transformer text conditioning."""

    tokenizer: Any  # a transformers tokenizer (GemmaTokenizer for LTX-2.3)
    text_encoder: torch.nn.Module  # Gemma 3 (ForConditionalGeneration, ForCausalLM or TextModel)
    connectors: torch.nn.Module  # diffusers LTX2TextConnectors
    max_sequence_length: int

    def to(self, device: torch.device | str) -> TextStack:
        self.text_encoder.to(device)
        self.connectors.to(device)
        return self


@dataclass
class PromptEmbeddings:
    """Connector outputs for a batch of prompts.

    video: [B, S, Dv] (transformer `encoder_hidden_states`), audio: [B, S, Da]
    (`audio_encoder_hidden_states`), mask: [B, S] (both `*_encoder_attention_mask`; all ones with registers).
    """

    video: Tensor
    audio: Tensor
    mask: Tensor

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PromptEmbeddings:
        return PromptEmbeddings(
            video=self.video.to(device=device, dtype=dtype),
            audio=self.audio.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
        )


def _language_model(text_encoder: torch.nn.Module) -> torch.nn.Module:
    # Gemma3ForConditionalGeneration / ForCausalLM keep the trunk in `.model`; calling it directly skips the
    # LM head, whose logits (262k vocab x 1024 tokens) would cost ~1 GB per prompt for nothing.
    inner = getattr(text_encoder, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else text_encoder


def _device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


@torch.no_grad()
def text_encoder_hidden_states(stack: TextStack, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """Tokenize (left padded to `max_sequence_length`) and run the text encoder.

    Returns the packed hidden states [B, S, hidden * (layers + 1)] and the token mask [B, S].
    """
    tokenizer = stack.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokens = tokenizer(
        [p.strip() for p in prompts],
        padding="max_length",
        padding_side="left",
        max_length=stack.max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    device, _ = _device_dtype(stack.text_encoder)
    ids = tokens.input_ids.to(device)
    mask = tokens.attention_mask.to(device)
    out = _language_model(stack.text_encoder)(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    # [B, S, hidden, layers + 1] -> [B, S, hidden * (layers + 1)], hidden-major like the pipeline.
    hidden = torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
    return hidden, mask


@torch.no_grad()
def encode_prompts(stack: TextStack, prompts: list[str]) -> PromptEmbeddings:
    """Encode prompts into the transformer's video/audio text conditioning."""
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    hidden, mask = text_encoder_hidden_states(stack, prompts)
    device, dtype = _device_dtype(stack.connectors)
    video, audio, connector_mask = stack.connectors(
        hidden.to(device=device, dtype=dtype), mask.to(device), padding_side="left"
    )
    return PromptEmbeddings(video=video, audio=audio, mask=connector_mask)
