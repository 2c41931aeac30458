"""Pure fitting helpers: spatial resize-fill + centre crop, temporal frame selection, audio length/loudness.

No file I/O. ``fit_audio`` with ``preserve_pitch`` runs FFmpeg's ``atempo`` filter in memory through PyAV.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.filter import Graph

from ltxlab.config.resolution import snap_frames as snap_to_valid_frames

MIN_FRAMES = 9
MAX_FRAMES = 121


@dataclass(frozen=True)
class FillCrop:
    """Where the fill-and-crop rule cuts a source frame: the surviving source box and its whole shrink factor."""

    x0: int
    y0: int
    width: int
    height: int
    shrink: int  # whole factor (>= 2) to shrink by with INTER_AREA before the final bilinear step; 1 = none


def fill_crop_box(src_w: int, src_h: int, width: int, height: int) -> FillCrop:
    """The source box that resize-to-fill + centre-crop keeps, rounded to whole source pixels.

    The scale is ``max(width / W, height / H)``, so one side matches exactly and the other overhangs and is
    cropped equally on both ends. Cropping first means only surviving pixels are resampled.
    """
    if width <= 0 or height <= 0:
        raise ValueError("target size must be positive")
    if src_h <= 0 or src_w <= 0:
        raise ValueError("empty frame")
    scale = max(width / src_w, height / src_h)
    crop_w = min(src_w, max(1, round(width / scale)))
    crop_h = min(src_h, max(1, round(height / scale)))
    k = int(1.0 / scale) if scale < 1.0 else 1
    if k >= 2:
        crop_w, crop_h = crop_w - crop_w % k, crop_h - crop_h % k  # exact multiples keep the integer fast path
    return FillCrop((src_w - crop_w) // 2, (src_h - crop_h) // 2, crop_w, crop_h, max(k, 1))


def resample(src: np.ndarray, width: int, height: int, shrink: int, out: np.ndarray | None = None) -> np.ndarray:
    """Resize ``src`` (H×W or H×W×C) to ``width``×``height``: INTER_AREA's exact-integer path for a whole
    ``shrink`` factor (proper anti-aliasing), then bilinear for the rest (< 2x)."""
    if shrink >= 2:
        src = cv2.resize(src, (src.shape[1] // shrink, src.shape[0] // shrink), interpolation=cv2.INTER_AREA)
    if out is None:
        out = np.empty((height, width, *src.shape[2:]), np.uint8)
    if src.shape[:2] == (height, width):
        out[...] = src
    else:
        cv2.resize(src, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    return out


def resize_fill_center_crop(frame: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """Scale ``frame`` (H×W×3 uint8) to *fill* ``width``×``height`` keeping aspect ratio, then centre-crop
    (see :func:`fill_crop_box`), straight into ``out`` when given."""
    box = fill_crop_box(frame.shape[1], frame.shape[0], width, height)
    src = frame[box.y0 : box.y0 + box.height, box.x0 : box.x0 + box.width]
    return resample(src, width, height, box.shrink, out)


def snap_frames(n: int) -> int:
    """Largest valid LTX frame count (8k + 1) ≤ ``n``; ``n`` must lie in 9..121."""
    if not MIN_FRAMES <= n <= MAX_FRAMES:
        raise ValueError(f"number of frames must be in {MIN_FRAMES}..{MAX_FRAMES}, got {n}")
    return snap_to_valid_frames(n)


@dataclass(frozen=True)
class FrameSelection:
    """Source frame indices for one training clip and the source time span they cover (for cutting audio)."""

    indices: list[int]
    start_s: float
    duration_s: float


def _nearest(x: float) -> int:
    return math.floor(x + 0.5 + 1e-9)  # round half up; epsilon absorbs float error in i * fps ratios


def select_frames(
    src_num_frames: int, src_fps: float, target_frames: int, target_fps: int, auto_scale: bool
) -> FrameSelection | None:
    """Choose which source frames make a ``target_frames`` clip; ``None`` if the clip is too short to use.

    Rule:

    * ``auto_scale=False``: the first ``target_frames`` source frames, unchanged in timing. The clip needs at
      least ``target_frames`` frames, else ``None``. Span: ``target_frames / src_fps`` seconds.
    * ``auto_scale=True``: resample to ``target_fps`` by nearest frame: output frame ``i`` (at time
      ``i / target_fps``) takes source index ``round(i * src_fps / target_fps)``. If the clip is too short for
      that, it is instead stretched uniformly over its whole length: index
      ``round(i * (N - 1) / (target_frames - 1))``, so exactly ``target_frames`` indices come out (frames
      repeat when N < target_frames). Span: the seconds of source those frames cover
      (``target_frames / target_fps``, or the whole clip, ``N / src_fps``).

    The clip always starts at source time 0.
    """
    if target_frames <= 0 or src_fps <= 0 or target_fps <= 0:
        raise ValueError("frame counts and rates must be positive")
    if src_num_frames <= 0:
        return None
    if not auto_scale:
        if src_num_frames < target_frames:
            return None
        return FrameSelection(list(range(target_frames)), 0.0, target_frames / src_fps)
    ratio = src_fps / target_fps
    if _nearest((target_frames - 1) * ratio) <= src_num_frames - 1:
        idx = [_nearest(i * ratio) for i in range(target_frames)]
        return FrameSelection(idx, 0.0, target_frames / target_fps)
    if target_frames == 1:
        return FrameSelection([0], 0.0, src_num_frames / src_fps)
    step = (src_num_frames - 1) / (target_frames - 1)
    idx = [min(src_num_frames - 1, _nearest(i * step)) for i in range(target_frames)]
    return FrameSelection(idx, 0.0, src_num_frames / src_fps)


def frame_indices(
    src_num_frames: int, src_fps: float, target_frames: int, target_fps: int, auto_scale: bool
) -> list[int] | None:
    """Source frame indices per :func:`select_frames` (``None`` = too short)."""
    sel = select_frames(src_num_frames, src_fps, target_frames, target_fps, auto_scale)
    return None if sel is None else sel.indices


def peak_normalize(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale so the largest absolute sample equals ``peak`` (float32). Silence stays silent."""
    a = np.asarray(audio, dtype=np.float32)
    m = float(np.max(np.abs(a))) if a.size else 0.0
    if m < 1e-6:  # don't blow digital noise floor up to full scale
        return np.zeros_like(a)
    return (a * (peak / m)).astype(np.float32)


def _trim_pad(audio: np.ndarray, n: int) -> np.ndarray:
    if audio.shape[1] >= n:
        return np.ascontiguousarray(audio[:, :n])
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def _atempo_chain(tempo: float) -> list[float]:
    """Split a tempo factor into atempo stages, each within atempo's 0.5..100 range."""
    stages = []
    while tempo < 0.5:
        stages.append(0.5)
        tempo /= 0.5
    while tempo > 100.0:
        stages.append(100.0)
        tempo /= 100.0
    stages.append(tempo)
    return stages


def _atempo(audio: np.ndarray, sample_rate: int, tempo: float) -> np.ndarray:
    """Time-stretch ``[C, T]`` (C = 1 or 2) by ``tempo`` (>1 = shorter), pitch kept, via an FFmpeg graph."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    tb = Fraction(1, sample_rate)
    graph = Graph()
    nodes = [graph.add_abuffer(sample_rate=sample_rate, format="fltp", layout=layout, time_base=tb)]
    nodes += [graph.add("atempo", f"{t:.9f}") for t in _atempo_chain(tempo)]
    # Force planar float out: the sink would otherwise hand back whatever atempo produced (packed).
    nodes.append(graph.add("aformat", f"sample_fmts=fltp:channel_layouts={layout}"))
    nodes.append(graph.add("abuffersink"))
    for a, b in itertools.pairwise(nodes):
        a.link_to(b)
    graph.configure()

    out: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                out.append(graph.pull().to_ndarray())
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    chunk = 8192
    for pos in range(0, audio.shape[1], chunk):
        fr = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[:, pos : pos + chunk]), format="fltp", layout=layout
        )
        fr.sample_rate, fr.pts, fr.time_base = sample_rate, pos, tb
        graph.push(fr)
        drain()
    graph.push(None)
    drain()
    if not out:
        return np.zeros((audio.shape[0], 0), np.float32)
    return np.concatenate(out, axis=1).astype(np.float32, copy=False)


def fit_audio(
    audio: np.ndarray, sample_rate: int, target_duration_s: float, preserve_pitch: bool
) -> np.ndarray:
    """Fit ``[C, T]`` audio to exactly ``round(target_duration_s * sample_rate)`` samples (float32).

    ``preserve_pitch=False``: trim the end or zero-pad. ``preserve_pitch=True``: time-stretch the whole track
    to the target duration with FFmpeg's ``atempo`` (pitch unchanged), then trim/pad the few leftover samples;
    if the lengths already agree within 1 %, it just trims/pads (a stretch would only add artefacts).
    """
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"audio must be [C, T], got shape {a.shape}")
    n = round(target_duration_s * sample_rate)
    if n <= 0:
        raise ValueError("target duration must be positive")
    t = a.shape[1]
    if not preserve_pitch or t == 0 or abs(t - n) <= 0.01 * n:
        return _trim_pad(a, n)
    tempo = t / n
    if a.shape[0] in (1, 2):
        stretched = _atempo(a, sample_rate, tempo)
    else:
        # atempo aligns on all channels jointly; for >2 channels fall back to per-channel mono stretches.
        parts = [_atempo(a[c : c + 1], sample_rate, tempo) for c in range(a.shape[0])]
        m = min(p.shape[1] for p in parts)
        stretched = np.concatenate([p[:, :m] for p in parts], axis=0)
    return _trim_pad(stretched, n)
