"""Export the trained LoRA in both consumer formats, plus the config JSON and the run's result record.

- ComfyUI / ltx-core format: ``diffusion_model.`` + peft keys, no alpha. Consumers apply B·A at strength 1
  (alpha = rank), so alpha/rank is baked into ``lora_B``: the file loads at the trained strength everywhere.
- diffusers format: ``transformer.`` keys with the adapter metadata (rank and alpha kept).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn

from ltxlab.config.schema import Config

COMFY_PREFIX = "diffusion_model."
LORA_FILE = "lora.safetensors"
DIFFUSERS_DIR = "lora_diffusers"
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
CONFIG_FILE = "config.json"


def lora_state_dict(transformer: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors with peft key names (``transformer_blocks.0.attn1.to_q.lora_A.weight``)."""
    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def comfy_state_dict(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    scale = alpha / rank
    out = {}
    for key, value in state.items():
        out[COMFY_PREFIX + key] = value * scale if ".lora_B." in key else value
    return out


def save_lora(transformer: nn.Module, peft_config: PeftLoraConfig, out_dir: Path,
              metadata: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write both formats; returns (comfy file, diffusers file)."""
    from diffusers import LTX2Pipeline

    state = lora_state_dict(transformer)
    comfy_path = out_dir / LORA_FILE
    save_file(comfy_state_dict(state, peft_config.r, peft_config.lora_alpha), str(comfy_path),
              metadata=metadata or {})
    diffusers_dir = out_dir / DIFFUSERS_DIR
    LTX2Pipeline.save_lora_weights(str(diffusers_dir), transformer_lora_layers=state,
                                   transformer_lora_adapter_metadata=_jsonable(peft_config.to_dict()),
                                   weight_name=DIFFUSERS_FILE)
    return comfy_path, diffusers_dir / DIFFUSERS_FILE


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def training_config_json(cfg: Config, with_audio: bool, size: tuple[int, int]) -> dict[str, Any]:
    """The seeds' ``config_file``: what a consumer needs to use the LoRA (trigger phrase, training type)."""
    return {
        "trigger_phrase": cfg.data.trigger_phrase,
        "training_type": cfg.mode.name,
        "base_model": "LTX-2.3",
        "lora_format": "comfyui (diffusion_model. keys, alpha baked into lora_B)",
        "lora_rank": cfg.lora.rank,
        "lora_alpha": cfg.lora.alpha or cfg.lora.rank,
        "first_frame_conditioning_p": cfg.mode.first_frame_conditioning_p,
        "with_audio": with_audio,
        "audio_conditioning": cfg.mode.name == "a2v",
        "number_of_frames": cfg.data.number_of_frames,
        "frame_rate": cfg.data.frame_rate,
        "width": size[0],
        "height": size[1],
        "number_of_steps": cfg.optim.number_of_steps,
        "learning_rate": cfg.optim.learning_rate,
    }


def write_config_file(out_dir: Path, content: dict[str, Any]) -> Path:
    path = out_dir / CONFIG_FILE
    path.write_text(json.dumps(content, indent=2))
    return path


@dataclass
class RunOutputs:
    lora_file: str
    lora_file_diffusers: str
    config_file: str
    video: str | None
    debug_dataset: str | None
    billable_units: int
    final_loss: float | None
    val_loss: float | None = None  # the final held-out loss (ltxlab/train/heldout.py)

    def write(self, out_dir: Path) -> Path:
        """``result.json``; the seeds' optional outputs (``video``, ``debug_dataset``) only when produced."""
        content = {k: v for k, v in self.__dict__.items() if v is not None or k not in ("video", "debug_dataset")}
        path = out_dir / "result.json"
        path.write_text(json.dumps(_strict(content), indent=2, allow_nan=False))
        return path


def billable_units(number_of_steps: int) -> int:
    """The seeds' billing rule for a successful run."""
    return max(100, number_of_steps)


def _strict(content: dict[str, Any]) -> dict[str, Any]:
    """Strict JSON: a non-finite number (which JSON cannot hold) is recorded as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in content.items()}
