"""Shared pieces of the prepare-stage tests: the test bucket, settings and small generated media."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ltxlab.data.frame_fit import fit_video_frame
from ltxlab.data.ingest import ingest
from ltxlab.data.media import iter_decoded_frames
from ltxlab.data.media_write import write_video
from ltxlab.data.prepare import PrepareSettings, iter_prepared, plan

W, H = 288, 512  # a portrait bucket from 160x120 landscape sources: fill + crop on both axes
SR = 16000


def fitted(path: Path) -> Iterator[np.ndarray]:
    """A video's frames fitted to the test bucket, the way prepare fits them."""
    for frame in iter_decoded_frames(path):
        yield fit_video_frame(frame, W, H)


def settings(mode: str = "i2v", **kw: object) -> PrepareSettings:
    base: dict[str, object] = dict(mode=mode, width=W, height=H, number_of_frames=17, frame_rate=24)
    if mode == "a2v":
        base["split_input_into_scenes"] = False
    base.update(kw)
    return PrepareSettings(**base)  # type: ignore[arg-type]


def tone(seconds: float, amp: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, x])


def video(
    path: Path,
    n: int,
    fps: int = 24,
    size: tuple[int, int] = (160, 120),
    audio: bool = True,
    cut_at: int | None = None,
) -> Path:
    """A video whose frames differ (a moving bar); with ``cut_at`` it cuts hard from red to blue there."""
    w, h = size
    frames = []
    for i in range(n):
        colour = (200, 30, 30) if cut_at is None or i < cut_at else (30, 30, 200)
        f = np.empty((h, w, 3), np.uint8)
        f[:] = colour
        f[:, (i * 5) % w : (i * 5) % w + 4] = 255
        frames.append(f)
    write_video(path, frames, fps, audio=tone(n / fps) if audio else None, sample_rate=SR)
    return path


def prep(root: Path, settings: PrepareSettings, trigger: str = "") -> tuple:
    ds = ingest(root, settings.mode, trigger)
    p = plan(ds, settings)
    return p, list(iter_prepared(p))
