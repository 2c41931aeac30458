"""Every range and cross-field rule of the configuration, in one place.

Ranges and choices come from the seeds; a violation is a ``ConfigError`` naming the key and what is allowed,
raised before anything is read or written.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ltxlab.config.resolution import ASPECT_RATIOS, RESOLUTIONS, snap_frames
from ltxlab.config.schema import Config
from ltxlab.errors import ConfigError

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
}
POSITIVE = ("optim.learning_rate", "optim.batch_size", "optim.gradient_accumulation_steps",
            "train.checkpoint_interval", "data.samples_per_shard", "validation.inference_steps")
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
        cfg.audio.with_audio = True  # a2v requires audio on every group
        cfg.mode.first_frame_conditioning_p = 1.0  # the start image is always the first frame


def _check_validation(cfg: Config) -> None:
    samples = cfg.validation.samples
    if len(samples) > MAX_VALIDATION_SAMPLES:
        raise ConfigError(f"validation.samples has {len(samples)} entries: at most {MAX_VALIDATION_SAMPLES}")
    for i, sample in enumerate(samples):
        if not sample.image_url:
            raise ConfigError(f"validation.samples[{i}].image_url is required (the first-frame image)")
        if cfg.mode.name == "a2v" and not sample.audio_url:
            raise ConfigError(f"validation.samples[{i}].audio_url is required in a2v (the conditioning audio)")
    unknown = [b for b in cfg.validation.stg_blocks if b < 0]
    if unknown:
        raise ConfigError(f"validation.stg_blocks={unknown} must be non-negative block indices")


def _snap(cfg: Config, key: str) -> None:
    section, name = key.split(".")
    value = _get(cfg, key)
    snapped = snap_frames(value)
    if snapped != value:
        log.warning("%s=%d is not of the form 8k+1; snapped down to %d", key, value, snapped)
        setattr(getattr(cfg, section), name, snapped)


def validate(cfg: DictConfig | Config) -> Config:
    """Turn a composed config into a checked, typed ``Config`` (frame counts snapped down to 8k+1)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    assert isinstance(cfg, Config)
    _check_ranges(cfg)
    _check_mode(cfg)
    _check_validation(cfg)
    _snap(cfg, "data.number_of_frames")
    _snap(cfg, "validation.number_of_frames")
    return cfg
