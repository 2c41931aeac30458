"""Every range and cross-field rule of the configuration, in one place.

Ranges and choices come from the seeds; a violation is a ``ConfigError`` naming the key and what is allowed,
raised before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from typing import Any, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from ltxlab.config.resolution import ASPECT_RATIOS, RESOLUTIONS, snap_frames
from ltxlab.config.schema import Config
from ltxlab.errors import ConfigError
from ltxlab.sample.settings import sampling_problems, unused_with_frozen_audio

log = logging.getLogger(__name__)

# key -> (low, high), inclusive
RANGES: dict[str, tuple[float, float]] = {
    "optim.number_of_steps": (100, 20000),
    "mode.first_frame_conditioning_p": (0.0, 1.0),
    "data.number_of_frames": (9, 121),
    "data.frame_rate": (8, 60),
    "data.split_input_duration_threshold": (1.0, 60.0),
    "validation.number_of_frames": (9, 121),
    "validation.frame_rate": (8, 60),
    "validation.stg_scale": (0.0, 3.0),
    # Optimizer values: beyond these a LoRA run only diverges (or, for beta = 1, divides by zero).
    "optim.learning_rate": (0.0, 0.01),  # > 0 too (POSITIVE)
    "optim.weight_decay": (0.0, 1.0),
    "optim.beta1": (0.0, 0.9999),
    "optim.beta2": (0.0, 0.9999),
    "optim.eps": (1e-12, 1e-3),
    "optim.max_grad_norm": (0.0, 1000.0),  # 0 = no clipping
    "optim.min_lr_ratio": (0.0, 1.0),
    "optim.batch_size": (1, 64),
    "optim.gradient_accumulation_steps": (1, 1024),
    "train.max_nonfinite_steps": (0, 1000),
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "mode.name": ("i2v", "a2v"),
    "lora.rank": (8, 16, 32, 64, 128),
    "resolution.name": tuple(RESOLUTIONS),
    "resolution.aspect_ratio": ASPECT_RATIOS,
    "validation.resolution": tuple(RESOLUTIONS),
    "validation.aspect_ratio": ASPECT_RATIOS,
    "logger.name": ("wandb", "none"),
    "optim.schedule": ("linear", "cosine", "constant"),
    "model.name": ("tiny", "ltx23"),
    "model.dtype": ("float32", "bfloat16"),
    "model.base_precision": ("fp32", "bf16", "int8", "fp8"),
    "model.text_encoder_precision": ("fp32", "bf16", "int8", "fp8"),
    "model.offload": ("none", "blocks"),
    "model.cross_modulation": ("ltx_core", "legacy"),
    "optim.optimizer": ("adamw", "adamw8bit"),
}
POSITIVE = ("optim.learning_rate", "optim.batch_size", "optim.gradient_accumulation_steps",
            "train.checkpoint_interval", "data.samples_per_shard")
MAX_VALIDATION_SAMPLES = 2


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(cfg: Config) -> None:
    for key, (low, high) in RANGES.items():
        value = _get(cfg, key)
        if not isinstance(value, int | float) or math.isnan(value) or not low <= value <= high:
            raise ConfigError(f"{key}={value!r} is out of range: allowed {low}–{high}")
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            shown = ", ".join(map(str, allowed))
            raise ConfigError(f"{key}={value!r} is not allowed: choose one of {shown}")
    for key in POSITIVE:
        value = _get(cfg, key)
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be greater than 0")
    if cfg.optim.warmup_steps < 0 or cfg.optim.warmup_steps >= cfg.optim.number_of_steps:
        raise ConfigError(
            f"optim.warmup_steps={cfg.optim.warmup_steps} must be ≥ 0 and below optim.number_of_steps"
        )


def _check_mode(cfg: Config) -> None:
    if cfg.mode.name == "a2v":
        if cfg.audio.with_audio is False:
            raise ConfigError("audio.with_audio=false is not allowed with mode=a2v: the conditioning audio "
                              "drives the video (use audio=auto or audio=on)")
        cfg.audio.with_audio = True  # a2v requires audio on every group (auto = on)
        # A value meant for i2v is refused, never overridden: a p-sweep under a2v would train one job N times.
        if cfg.mode.first_frame_conditioning_p != 1.0:
            raise ConfigError(f"mode.first_frame_conditioning_p={cfg.mode.first_frame_conditioning_p} applies to "
                              "mode=i2v only: a2v always holds the start image as the first frame (1.0)")
    heldout = cfg.train
    if not 0.0 <= heldout.heldout_fraction <= 0.5:
        raise ConfigError(f"train.heldout_fraction={heldout.heldout_fraction} is out of range: allowed 0–0.5")
    if heldout.heldout_max_samples < 1 or not heldout.heldout_sigmas:
        raise ConfigError("train.heldout_max_samples must be ≥ 1 and train.heldout_sigmas non-empty")
    bad = [s for s in heldout.heldout_sigmas if not 0.0 < s <= 1.0]
    if bad:
        raise ConfigError(f"train.heldout_sigmas={bad}: every σ level must be in (0, 1]")


def _check_validation(cfg: Config) -> None:
    samples = cfg.validation.samples
    if len(samples) > MAX_VALIDATION_SAMPLES:
        raise ConfigError(f"validation.samples has {len(samples)} entries: at most {MAX_VALIDATION_SAMPLES}")
    for i, sample in enumerate(samples):
        if not sample.image_url:
            raise ConfigError(f"validation.samples[{i}].image_url is required (the first-frame image)")
        if cfg.mode.name == "a2v" and not sample.audio_url:
            raise ConfigError(f"validation.samples[{i}].audio_url is required in a2v (the conditioning audio)")
    problems = sampling_problems(cfg.validation)
    if problems:
        raise ConfigError(f"validation.{problems[0]}")
    unused = unused_with_frozen_audio(cfg.validation) if cfg.mode.name == "a2v" else []
    if unused:
        log.warning("validation.%s has no effect in a2v: the conditioning audio is frozen (no audio guidance)",
                    ", validation.".join(unused))


_UNQUANTIZED_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}


def _check_memory_options(cfg: Config) -> None:
    """Precision, offload and compile combinations (README "Memory and speed")."""
    model = cfg.model
    for key in ("base_precision", "text_encoder_precision"):
        value = getattr(model, key)
        if _UNQUANTIZED_DTYPE.get(value, model.dtype) != model.dtype:
            raise ConfigError(f"model.{key}={value} contradicts model.dtype={model.dtype}: unquantized weights are "
                              f"stored in model.dtype (set {key}={'bf16' if model.dtype == 'bfloat16' else 'fp32'}, "
                              "or int8 / fp8)")
    stage = int(cfg.deepspeed.get("zero_optimization", {}).get("stage", 0))
    if model.offload == "blocks":
        if stage == 3:
            raise ConfigError("model.offload=blocks cannot be combined with deepspeed=zero3 (ZeRO-3 already "
                              "partitions the base; use deepspeed=zero3_offload to offload its shards to the host)")
        if model.compile:
            raise ConfigError("model.compile=true cannot be combined with model.offload=blocks (the offload hooks "
                              "swap weights inside each block's forward)")
        if not model.gradient_checkpointing:
            log.warning("model.offload=blocks without model.gradient_checkpointing=true keeps every block's weights "
                        "on the GPU until backward: it saves no memory")
    if stage == 3 and model.base_precision in ("int8", "fp8"):
        raise ConfigError(f"model.base_precision={model.base_precision} cannot be combined with deepspeed=zero3 "
                          "(ZeRO-3 partitions plain tensors only): use bf16 with zero3, or int8 / fp8 with zero2")
    if cfg.optim.min_8bit_size < 0:
        raise ConfigError(f"optim.min_8bit_size={cfg.optim.min_8bit_size} must be ≥ 0")


def _snap(cfg: Config, key: str) -> None:
    section, name = key.split(".")
    value = _get(cfg, key)
    snapped = snap_frames(value)
    if snapped != value:
        log.warning("%s=%d is not of the form 8k+1; snapped down to %d", key, value, snapped)
        setattr(getattr(cfg, section), name, snapped)


def _config_keys(node: type = Config, prefix: str = "") -> dict[str, Any]:
    """Every key path of the schema (groups and leaves) with its type hint."""
    keys: dict[str, Any] = {}
    for name, hint in get_type_hints(node).items():
        keys[prefix + name] = hint
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys |= _config_keys(hint, f"{prefix}{name}.")
    return keys


def unknown_key_message(key: str) -> str:
    """``data.with_audio is not a config key (did you mean audio.with_audio?)``: the same leaf elsewhere, else a
    near spelling; under a free-form mapping (deepspeed), how to add the key."""
    keys = _config_keys()
    parent, _, leaf = key.rpartition(".")
    if get_origin(keys.get(parent)) is dict:  # a free-form mapping (deepspeed): new keys are appended
        return f"{key} is not a config key (to add it, write +{key}=...)"
    matches = [k for k in keys if k.rpartition(".")[2] == leaf] or difflib.get_close_matches(key, keys, n=1,
                                                                                          cutoff=0.75)
    hint = f" (did you mean {' or '.join(matches[:3])}?)" if matches else ""
    return f"{key} is not a config key{hint}"


def _check_known_keys(node: DictConfig, schema: type = Config, prefix: str = "") -> None:
    """``+data.with_audio=true`` appends a key Hydra accepts and the typed config would silently drop."""
    fields = get_type_hints(schema)
    for key, child in node.items_ex(resolve=False):
        hint = fields.get(str(key))
        if hint is None:
            raise ConfigError(unknown_key_message(f"{prefix}{key}"))
        if isinstance(child, DictConfig) and isinstance(hint, type) and dataclasses.is_dataclass(hint):
            _check_known_keys(child, hint, f"{prefix}{key}.")


def validate(cfg: DictConfig | Config) -> Config:
    """Turn a composed config into a checked, typed ``Config`` (frame counts snapped down to 8k+1)."""
    if isinstance(cfg, DictConfig):
        _check_known_keys(cfg)
        cfg = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    assert isinstance(cfg, Config)
    _check_ranges(cfg)
    _check_mode(cfg)
    _check_validation(cfg)
    _check_memory_options(cfg)
    _snap(cfg, "data.number_of_frames")
    _snap(cfg, "validation.number_of_frames")
    return cfg
