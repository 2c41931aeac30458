"""The tiny model's world: procedurally generated clips of one coloured shape over a gradient, with a tone.

A clip is a :class:`ClipSpec` (drawn from a seeded ``numpy`` generator) rendered to frames and audio in memory —
no files, no codecs — so pretraining sees thousands of distinct clips and tests can render held-out ones.

What drives what:

* the caption names colour, shape, background, motion and the tone's pitch, so text drives the video;
* the shape's radius follows a loudness envelope (``size_for_loudness``). In a clip from :func:`random_spec` the
  tone plays that same envelope; the pretraining corpus gives the tone an envelope of its own
  (:func:`with_independent_tone`), so the base model learns no audio → size link, and an a2v LoRA can teach it
  (the a2v sample dataset couples them) and a test can measure it by correlating size with loudness.

Motions: the four axis directions and ``pulsing`` in place. Diagonal motions exist for the VAE (any motion) but are kept
out of the transformer's corpus. The sample datasets (``ltxlab.data.sample``) draw with the same colours and
primitives; their concepts (a fade to black, a shape that swells with the loudness) are not in the corpus either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 80, 220),
    "yellow": (235, 215, 40),
    "orange": (240, 140, 30),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
AXIS_MOTIONS = ("left", "right", "up", "down")
DIAGONAL_MOTIONS = ("up left", "up right", "down left", "down right")
PITCHES = {"low": 220.0, "mid-pitched": 440.0, "high": 660.0}
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class ClipSpec:
    shape: str
    colour: str
    background: str
    motion: str  # an axis or diagonal direction ("down right"), or "pulsing"
    start: tuple[float, float]  # centre at t = 0, as a fraction of (width, height)
    speed: float  # fraction of the frame size travelled per second
    radius: float  # base radius as a fraction of min(width, height), at the quietest loudness
    pitch: str
    beat_hz: float  # loudness envelope rate; 0 = steady tone
    beat_phase: float
    tone_beat: tuple[float, float] | None = None  # the tone's own (rate, phase); None = the shape's envelope
    swell: float = 1.0  # radius gain at full loudness over the quietest (the corpus: 1, so 1× to 2×)

    def caption(self, motion: bool = True, tone: bool = True) -> str:
        """What the clip shows; ``motion=False`` describes a still, ``tone=False`` a silent clip."""
        what = f"{'an' if self.colour[0] in 'aeiou' else 'a'} {self.colour} {self.shape}"
        pulsing = self.motion == "pulsing"
        if motion and tone:
            act = f" pulsing to a {self.pitch} tone" if pulsing else f" moving {self.motion} with a {self.pitch} tone"
        elif motion:
            act = " pulsing" if pulsing else f" moving {self.motion}"
        else:
            act = f" with a {self.pitch} tone" if tone else ""
        return f"{what}{act} over a {self.background} background"


def loudness(t: np.ndarray, beat_hz: float, phase: float) -> np.ndarray:
    """Loudness envelope in [0.1, 1] at times ``t`` (s); a steady tone sits at 0.55."""
    if beat_hz == 0:
        return np.full_like(t, 0.55, dtype=np.float64)
    return 0.1 + 0.9 * (0.5 * (1.0 + np.cos(2 * np.pi * beat_hz * t + phase))) ** 2


def size_for_loudness(env: np.ndarray, swell: float = 1.0) -> np.ndarray:
    """Radius multiplier from loudness: 1 at the quietest (0.1), 1 + ``swell`` at full loudness."""
    return 1.0 + swell * (env - 0.1) / 0.9


def random_spec(rng: np.random.Generator, motions: tuple[str, ...] = (*AXIS_MOTIONS, "pulsing")) -> ClipSpec:
    colour, background = (str(c) for c in rng.choice(list(COLOURS), size=2, replace=False))
    motion = str(rng.choice(motions))
    pulsing = motion == "pulsing"
    return ClipSpec(
        shape=str(rng.choice(SHAPES)), colour=colour, background=background, motion=motion,
        start=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        speed=0.0 if pulsing else float(rng.uniform(0.25, 0.45)),
        radius=float(rng.uniform(0.07, 0.1)), pitch=str(rng.choice(list(PITCHES))),
        beat_hz=float(rng.uniform(1.0, 2.5)) if pulsing or rng.random() < 0.5 else 0.0,
        beat_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def with_independent_tone(spec: ClipSpec, rng: np.random.Generator) -> ClipSpec:
    """The same clip with a tone whose loudness envelope is drawn apart from the shape's (steady half the time)."""
    rate = float(rng.uniform(1.0, 2.5)) if rng.random() < 0.5 else 0.0
    return replace(spec, tone_beat=(rate, float(rng.uniform(0, 2 * np.pi))))


def gradient(size: tuple[int, int], name: str) -> np.ndarray:
    """Vertical gradient from a dark to a light shade of the named colour, [H, W, 3] uint8."""
    w, h = size
    c = np.array(COLOURS[name], np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    col = (0.25 + 0.6 * t) * c + 0.15 * 255 * t
    return np.repeat(np.clip(col, 0, 255).astype(np.uint8)[:, None, :], w, axis=1)


def draw_shape(canvas: np.ndarray, shape: str, colour: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Draw a filled, anti-aliased shape in place (sub-pixel exact: 4 fractional bits)."""
    rgb = tuple(int(v) for v in COLOURS[colour])
    s = 16
    x, y, rr = round(cx * s), round(cy * s), max(1, round(r * s))
    if shape == "circle":
        cv2.circle(canvas, (x, y), rr, rgb, -1, cv2.LINE_AA, 4)
    elif shape == "square":
        cv2.rectangle(canvas, (x - rr, y - rr), (x + rr, y + rr), rgb, -1, cv2.LINE_AA, 4)
    else:
        pts = np.array([[x, y - rr], [x - rr, y + rr], [x + rr, y + rr]], np.int32)
        cv2.fillPoly(canvas, [pts], rgb, cv2.LINE_AA, 4)
    return canvas


def direction(motion: str) -> tuple[float, float]:
    """Unit-free (dx, dy) of a motion name: (1, 0) = right, (1, -1) = up right, (0, 0) = pulsing."""
    dx = sum(_UNIT[w][0] for w in motion.split() if w in _UNIT)
    dy = sum(_UNIT[w][1] for w in motion.split() if w in _UNIT)
    return float(dx), float(dy)


def centres_and_radii(spec: ClipSpec, frames: int, fps: float, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Per-frame centre x, centre y and radius in pixels; the shape bounces off the frame edges."""
    w, h = size
    t = np.arange(frames) / fps
    radius = spec.radius * min(w, h) * size_for_loudness(loudness(t, spec.beat_hz, spec.beat_phase), spec.swell)
    dx, dy = direction(spec.motion)
    norm = max(1.0, np.hypot(dx, dy))  # a diagonal travels each axis at 1/√2 of the speed

    def bounce(start: float, velocity: float, extent: float) -> np.ndarray:
        margin = 2.0 * spec.radius * min(w, h) + 2  # the largest shape stays inside the frame
        lo, hi = margin, extent - margin
        p = start * extent + velocity * t - lo
        span = hi - lo
        p = np.mod(p, 2 * span)
        return lo + np.where(p > span, 2 * span - p, p)

    cx = bounce(spec.start[0], dx / norm * spec.speed * w, w)
    cy = bounce(spec.start[1], dy / norm * spec.speed * h, h)
    return cx, cy, radius


def render_frames(spec: ClipSpec, frames: int, fps: float, size: tuple[int, int]) -> np.ndarray:
    """[F, H, W, 3] uint8 frames of the clip at ``size`` = (width, height)."""
    bg = gradient(size, spec.background)
    cx, cy, radius = centres_and_radii(spec, frames, fps, size)
    shapes = zip(cx, cy, radius, strict=True)
    return np.stack([draw_shape(bg.copy(), spec.shape, spec.colour, x, y, r) for x, y, r in shapes])


def render_audio(spec: ClipSpec, seconds: float, sample_rate: int) -> np.ndarray:
    """[2, T] float32 stereo tone at ``sample_rate`` whose amplitude is the loudness envelope."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    rate, phase = spec.tone_beat or (spec.beat_hz, spec.beat_phase)
    wave = 0.8 * loudness(t, rate, phase) * np.sin(2 * np.pi * PITCHES[spec.pitch] * t)
    return np.stack([wave, wave]).astype(np.float32)


def to_pixels(frames: np.ndarray) -> np.ndarray:
    """uint8 [F, H, W, 3] -> float32 [3, F, H, W] in [-1, 1] (the VAE's input layout)."""
    return (frames.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2)


def to_frames(pixels: np.ndarray) -> np.ndarray:
    """float [3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3] (the inverse of :func:`to_pixels`, clipped)."""
    return np.clip((pixels.transpose(1, 2, 3, 0) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------ measuring


def shape_mask(frames: np.ndarray, colour: str, tolerance: float = 60.0) -> np.ndarray:
    """[F, H, W] bool: pixels within ``tolerance`` (RGB distance) of the shape's colour."""
    target = np.array(COLOURS[colour], np.float32)
    return np.linalg.norm(frames.astype(np.float32) - target, axis=-1) < tolerance


def measure_shape(frames: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centroid x, centroid y and equivalent radius √(area/π) of the shape's colour (NaN if absent)."""
    mask = shape_mask(frames, colour)
    area = mask.sum(axis=(1, 2)).astype(np.float64)
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * xs).sum(axis=(1, 2)) / area
        cy = (mask * ys).sum(axis=(1, 2)) / area
    cx[area == 0] = np.nan
    cy[area == 0] = np.nan
    return cx, cy, np.sqrt(area / np.pi)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 arrays."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def envelope_of(wave: np.ndarray, sample_rate: int, times: np.ndarray, window_s: float = 0.04) -> np.ndarray:
    """RMS loudness of a [C, T] waveform in a window centred on each of ``times`` (s)."""
    mono = wave.mean(axis=0) if wave.ndim == 2 else wave
    half = max(1, round(window_s * sample_rate / 2))
    out = []
    for t in times:
        i = round(t * sample_rate)
        seg = mono[max(0, i - half) : i + half]
        out.append(float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0)
    return np.array(out)


def darkening(frames: np.ndarray) -> float:
    """How much darker (mean grey level, 0–255) the last frames are than the first (the mean of the last three,
    which steadies a decoded clip's jitter)."""
    grey = frames.astype(np.float64).mean(axis=(1, 2, 3))
    return float(grey[0] - grey[-3:].mean())


def size_loudness_correlation(frames: np.ndarray, colour: str, wave: np.ndarray, sample_rate: int,
                              fps: float) -> float:
    """Pearson correlation of the shape's per-frame radius with the track's loudness at each frame's time
    (frames where the shape is not found count as radius 0)."""
    _, _, radius = measure_shape(frames, colour)
    loud = envelope_of(wave, sample_rate, np.arange(len(frames)) / fps)
    if radius.std() == 0 or loud.std() == 0:
        return 0.0
    return float(np.corrcoef(radius, loud)[0, 1])


def background_name(frames: np.ndarray) -> str:
    """The named colour whose gradient best matches the frames' median colour per row (the shape is a small
    part of each row, so the median is the background)."""
    rows = np.median(frames.astype(np.float32), axis=(0, 2))  # [H, 3]
    size = (1, frames.shape[1])

    def distance(name: str) -> float:
        return float(np.abs(gradient(size, name)[:, 0].astype(np.float32) - rows).mean())

    return min(COLOURS, key=distance)
