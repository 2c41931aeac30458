"""Data types of the prepare stage (shared by the planner and the decoding workers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ltxlab.data.ingest import ClipSource
from ltxlab.data.media import MediaLimits


@dataclass
class PrepareSettings:
    mode: str
    width: int
    height: int
    number_of_frames: int
    frame_rate: int
    auto_scale_input: bool = False
    split_input_into_scenes: bool = True  # the seeds' default for i2v; a2v callers pass False by default
    split_input_duration_threshold: float = 30.0
    with_audio: bool | None = None  # i2v only; a2v always conditions on audio
    audio_normalize: bool = True
    audio_preserve_pitch: bool = True
    trigger_phrase: str = ""
    sample_rate: int = 16000
    num_workers: int = 2
    limits: MediaLimits = field(default_factory=MediaLimits)
    scene_threshold: float = 27.0  # ContentDetector's default cut threshold


@dataclass
class PreparedClip:
    name: str
    caption: str  # final caption, trigger phrase prepended
    frames: np.ndarray  # [F, H, W, 3] uint8 fitted to the bucket; F = number_of_frames (1 for images)
    fps: float  # the clip's real frame rate (its source rate when auto_scale_input is off)
    audio: np.ndarray | None  # [2, T] float32 at sample_rate covering exactly F/fps s (real duration); None = off
    source: str  # relative path of the media it came from (manifest)
    recycle: Callable[[np.ndarray], None] | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Hand the frame buffer back to the prepare stage for the next clip (optional: a consumer that is done
        with ``frames`` saves a fresh allocation and its page faults). ``frames`` is empty afterwards, and views
        of it taken before must not be used: the next clip overwrites them."""
        if self.recycle is not None:
            self.recycle(self.frames)
            self.recycle = None
        self.frames = self.frames[:0]


@dataclass
class PlanItem:
    """One training example to decode: a whole clip, or one scene of it."""

    name: str
    clip: ClipSource
    source: str  # relative path of clip.media
    indices: list[int]  # absolute source frame indices ([0] for images)
    start_s: float  # source time span the frames cover (for cutting audio)
    duration_s: float
    src_duration_s: float  # the whole source video's duration (a2v maps the audio file onto it)
    use_start: bool = False  # a2v: frame 0 becomes the group's start image
    scene: tuple[int, int] | None = None  # [start, end) source frames when the clip was split


@dataclass
class PreparePlan:
    settings: PrepareSettings
    with_audio: bool
    is_image: bool
    items: list[PlanItem]
    skipped: list[tuple[str, str]]  # (name, reason); iter_prepared appends clips that fail while decoding
    warnings: list[str]
    audio_reason: str = ""
    root: Path | None = None


def final_caption(caption: str | None, trigger_phrase: str) -> str:
    """The caption the model sees: trigger phrase first, then the clip's own text."""
    parts = [p for p in (trigger_phrase.strip(), (caption or "").strip()) if p]
    return " ".join(parts)
