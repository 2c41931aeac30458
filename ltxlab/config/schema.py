"""Typed configuration: one dataclass per Hydra group, registered in Hydra's ConfigStore.

Defaults here are the service defaults from the seeds (``ltxlab/conf/preset/demo.yaml`` shrinks them for the demo).
Cross-field rules and ranges live in ``ltxlab.config.validate``; the YAML under ``ltxlab/conf/`` only selects values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from ltxlab.distributed import launch_time
from ltxlab.models.spec import ModelConfig
from ltxlab.sample.settings import SamplingSettings


@dataclass
class ModeConfig:
    name: str = "i2v"  # i2v | a2v
    # i2v: probability that a clip's first latent frame is held clean. a2v always holds it (forced to 1.0).
    first_frame_conditioning_p: float = 0.5


@dataclass
class ResolutionConfig:
    name: str = "medium"  # low | medium | high
    aspect_ratio: str = "1:1"  # 16:9 | 1:1 | 9:16


@dataclass
class AudioConfig:
    with_audio: bool | None = None  # None = auto: on only if every clip has a track
    normalize: bool = True  # seeds' audio_normalize: peak-normalise
    preserve_pitch: bool = True  # seeds' audio_preserve_pitch: time-stretch instead of trim/pad
    video_loss_weight: float = 1.0
    audio_loss_weight: float = 1.0


@dataclass
class DataConfig:
    source: str = "sample"  # .zip, folder, https:// URL to a zip, or "sample" (generated demo dataset)
    trigger_phrase: str = ""
    number_of_frames: int = 89  # snapped down to 8k+1
    frame_rate: int = 24
    auto_scale_input: bool = False
    split_input_into_scenes: bool = True  # mode/a2v turns it off
    split_input_duration_threshold: float = 30.0
    debug_dataset: bool = False
    cache_dir: str = "cache"  # latent shard cache, relative to the launch directory
    samples_per_shard: int = 64
    num_workers: int = 2  # prepare/encode worker threads; also the trainer's loader workers


@dataclass
class LoraConfig:
    rank: int = 32
    alpha: float | None = None  # None = rank (what ComfyUI/ltx-core consumers assume)
    dropout: float = 0.0
    # q/k/v/out of all six attention modules per block; never the 2.3 gate projections (DESIGN.md §3).
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    include_ffn: bool = False


@dataclass
class OptimConfig:
    learning_rate: float = 2e-4
    number_of_steps: int = 2000
    warmup_steps: int = 0
    schedule: str = "linear"  # linear | cosine | constant (after warmup)
    min_lr_ratio: float = 0.1  # final LR as a fraction of learning_rate for linear/cosine
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    batch_size: int = 1  # per device
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw"  # adamw (fp32 state) | adamw8bit (bitsandbytes block-wise 8-bit state)
    min_8bit_size: int = 4096  # adamw8bit: tensors with fewer elements keep fp32 state


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: str = "ltxlab"
    group: str | None = None  # None in a multirun: one group per sweep, named from the sweep directory
    run_name: str | None = None  # None: the swept values (`rank=16,lr=4e-4`) in a multirun, else the run dir name
    tags: list[str] = field(default_factory=list)  # a multirun adds one `key=value` tag per swept value
    swept: dict[str, Any] = field(default_factory=dict)  # set by a multirun: the job's swept values (W&B config)
    log_every: int = 10
    progress_bar: bool = True
    library_logs: bool = False  # DeepSpeed / W&B banners and INFO lines (off: WARNING and above only)


@dataclass
class ValidationSample:
    prompt: str = ""
    image_url: str = ""
    audio_url: str | None = None  # the conditioning audio: required in a2v, unused in i2v


@dataclass
class ValidationConfig(SamplingSettings):
    """Validation previews: the samples and how often, plus every sampling setting (defaults written once, in
    `ltxlab.sample.settings.SamplingSettings`, shared with ``python -m ltxlab.generate``)."""

    samples: list[ValidationSample] = field(default_factory=list)  # seeds' `validation` (max 2)
    interval: int = 250  # steps between preview rounds (0 = only at the end)
    # Show each preview beside the base model's clip for the same inputs (rendered once per run, adapter off).
    compare_base: bool = True


@dataclass
class TrainConfig:
    seed: int = 42
    checkpoint_interval: int = 250
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the run directory's last checkpoint when one exists
    # Optimizer steps with non-finite loss/gradients skipped before training aborts (ltxlab/train/guard.py).
    max_nonfinite_steps: int = 5
    # Shifted logit-normal sigma sampler (ltx-trainer reference values).
    sigma_shift_min: float = 0.95  # mu at 1024 tokens
    sigma_shift_max: float = 2.05  # mu at 4096 tokens
    sigma_uniform_fraction: float = 0.1
    # Every N optimizer steps, check that all ranks hold bit-identical LoRA weights (0 = off; replicas.py).
    replica_check_interval: int = 0
    # Held-out loss (ltxlab/train/heldout.py): a deterministic share of the cache is kept out of training and
    # scored at fixed σ levels with fixed noise at every validation interval and at the end (`val/loss`).
    heldout_fraction: float = 0.1  # 0 = no split: score training samples instead
    heldout_max_samples: int = 8  # cap, so scoring stays cheap on large datasets
    heldout_min_dataset: int = 20  # smaller caches keep every sample for training and score training samples
    heldout_sigmas: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])


@dataclass
class Config:
    mode: ModeConfig = field(default_factory=ModeConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: dict[str, Any] = field(default_factory=dict)  # native DeepSpeed JSON (ltxlab/conf/deepspeed/)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "seed"


ASSETS = Path(__file__).resolve().parents[1] / "assets"


def asset_path(name: str) -> str:
    """``${ltxlab_asset:validation/i2v_start.png}``: a file shipped inside the package."""
    return str(ASSETS / name)


def asset_text(name: str) -> str:
    """``${ltxlab_asset_text:validation/i2v_prompt.txt}``: the stripped text of a shipped file."""
    return (ASSETS / name).read_text().strip()


def register_configs() -> None:
    """Register the schema and the asset resolvers (called by the entry points, not on import)."""
    ConfigStore.instance().store(name="ltxlab_schema", node=Config)
    OmegaConf.register_new_resolver("ltxlab_asset", asset_path, replace=True)
    OmegaConf.register_new_resolver("ltxlab_asset_text", asset_text, replace=True)
    # `${ltxlab_now:…}`: the launch time every rank agrees on (ltxlab/distributed.py), for the run directory.
    OmegaConf.register_new_resolver("ltxlab_now", launch_time, use_cache=True, replace=True)
