"""ZeRO-3 with real weights: the transformer built under the active ``deepspeed.zero.Init`` (every rank keeps only
its shard of each weight from the start), then filled tensor by tensor from the checkpoint's safetensors shards.

diffusers' ``from_pretrained`` would materialise the whole model on every rank first (and does not know about
ZeRO-3 partitions); here rank 0 reads one tensor at a time, the parameter is gathered for that moment only, and
DeepSpeed scatters the shards back when it is released. Peak memory per rank: one full weight.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import LTX2VideoTransformer3DModel

from ltxlab.errors import ConfigError, ModelPathError
from ltxlab.models.spec import ModelConfig

log = logging.getLogger(__name__)


def transformer_shards(cfg: ModelConfig) -> tuple[Path, list[Path]]:
    """The diffusers-format transformer folder and its safetensors files."""
    if cfg.transformer_file:
        raise ConfigError("deepspeed=zero3 with real weights reads a diffusers-format folder: set "
                          "model.checkpoint_dir (convert the single file with diffusers' "
                          "scripts/convert_ltx2_to_diffusers.py) or use deepspeed=zero2")
    if not cfg.checkpoint_dir:
        raise ConfigError("model.checkpoint_dir is required for model=ltx23")
    root = Path(cfg.checkpoint_dir) / "transformer"
    files = sorted(root.glob("*.safetensors"))
    if not (root / "config.json").is_file() or not files:
        raise ModelPathError(f"model.checkpoint_dir: {root} has no config.json and *.safetensors weights")
    return root, files


def load_partitioned_transformer(cfg: ModelConfig, dtype: torch.dtype) -> LTX2VideoTransformer3DModel:
    """Call inside ``deepspeed.zero.Init``; returns the partitioned transformer holding the checkpoint's weights."""
    import deepspeed
    from safetensors import safe_open

    root, files = transformer_shards(cfg)
    model = LTX2VideoTransformer3DModel.from_config(LTX2VideoTransformer3DModel.load_config(str(root)))
    params = dict(model.named_parameters())
    is_reader = torch.distributed.get_rank() == 0
    seen: set[str] = set()
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            keys = [k for k in handle.keys() if k in params]  # noqa: SIM118 (safe_open handles are not dicts)
            for key in keys:
                param = params[key]
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    if is_reader:
                        param.data.copy_(handle.get_tensor(key).to(dtype))
                seen.add(key)
    missing = sorted(set(params) - seen)
    if missing:
        raise ModelPathError(f"model.checkpoint_dir: {root} lacks {len(missing)} transformer weights, "
                             f"e.g. {missing[:3]}")
    log.info("ZeRO-3: %d transformer weights loaded shard by shard from %s", len(seen), root)
    return model
