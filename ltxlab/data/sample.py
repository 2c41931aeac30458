"""Small synthetic datasets in the seeds' layouts, made in-process (PyAV + OpenCV drawing, no ffmpeg binary).

* i2v: ``clipNN.mp4`` (a coloured shape moving across a gradient, with a tone track) + ``clipNN.txt``;
  or ``imgNN.png`` stills + captions.
* a2v: ``clipNN_start.png`` + ``clipNN_audio.wav`` + ``clipNN_end.mp4`` + ``clipNN.txt``, where the audio's
  loudness envelope drives the shape's radius, so motion is learnably tied to sound.

Everything is drawn from ``numpy.random.default_rng(seed)`` and x264 runs single-threaded: the same seed gives
byte-identical files.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ltxlab.data.media_write import write_image, write_video, write_wav

SAMPLE_RATE = 44100  # a typical source rate, so consumers exercise resampling to 16 kHz

_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 80, 220),
    "yellow": (235, 215, 40),
    "orange": (240, 140, 30),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "cyan": (40, 200, 210),
}
_SHAPES = ("circle", "square", "triangle")
_DIRECTIONS = ("left to right", "right to left", "top to bottom", "bottom to top")


@dataclass(frozen=True)
class _Look:
    shape: str
    colour: str
    background: str
    size: int


def _pick_look(rng: np.random.Generator, size: tuple[int, int]) -> _Look:
    names = list(_COLOURS)
    colour, background = rng.choice(names, size=2, replace=False)
    return _Look(
        shape=str(rng.choice(_SHAPES)),
        colour=str(colour),
        background=str(background),
        size=int(min(size) * rng.uniform(0.10, 0.16)),
    )


def _gradient(size: tuple[int, int], name: str) -> np.ndarray:
    """Vertical gradient from a dark to a light shade of the named colour."""
    w, h = size
    c = np.array(_COLOURS[name], np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    col = (0.25 + 0.6 * t) * c + 0.15 * 255 * t
    return np.repeat(np.clip(col, 0, 255).astype(np.uint8)[:, None, :], w, axis=1)


def _draw(canvas: np.ndarray, look: _Look, cx: float, cy: float, r: float) -> np.ndarray:
    colour = tuple(int(v) for v in _COLOURS[look.colour])
    # Fixed-point coordinates (shift=4) keep sub-pixel motion smooth.
    s = 16
    x, y, rr = round(cx * s), round(cy * s), max(1, round(r * s))
    if look.shape == "circle":
        cv2.circle(canvas, (x, y), rr, colour, -1, cv2.LINE_AA, 4)
    elif look.shape == "square":
        cv2.rectangle(canvas, (x - rr, y - rr), (x + rr, y + rr), colour, -1, cv2.LINE_AA, 4)
    else:
        pts = np.array([[x, y - rr], [x - rr, y + rr], [x + rr, y + rr]], np.int32)
        cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, 4)
    return canvas


def _name(prefix: str, i: int, n: int) -> str:
    return f"{prefix}{i + 1:0{max(2, len(str(n)))}d}"


def _tone(rng: np.random.Generator, seconds: float, freq: float, amp: float, channels: int) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE), dtype=np.float64) / SAMPLE_RATE
    x = amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    fade = np.clip(np.minimum(t, t[-1] - t) / 0.02, 0, 1)  # 20 ms fades: no clicks at the ends
    x = (x * fade).astype(np.float32)
    if channels == 1:
        return x[None]
    pan = rng.uniform(0.3, 0.7)
    return np.stack([x * (1 - pan) * 2 * 0.7, x * pan * 2 * 0.7]).astype(np.float32)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _pitch_word(freq: float) -> str:
    return "low" if freq < 300 else "high" if freq > 500 else "mid-pitched"


# ----------------------------------------------------------------------------------------------------
# i2v


def _moving_frames(
    look: _Look, direction: str, speed: float, offset: float, n: int, size: tuple[int, int]
) -> Iterator[np.ndarray]:
    w, h = size
    bg = _gradient(size, look.background)
    r = look.size
    margin = r + 4  # the whole shape is inside frame 0: a clean first frame
    horizontal = direction in ("left to right", "right to left")
    span = (w if horizontal else h) - 2 * margin
    for i in range(n):
        p = margin + span * speed * i / max(1, n - 1)
        if direction in ("right to left", "bottom to top"):
            p = (w if horizontal else h) - p
        cx, cy = (
            (p, h / 2 + offset * (h / 2 - margin)) if horizontal else (w / 2 + offset * (w / 2 - margin), p)
        )
        yield _draw(bg.copy(), look, cx, cy, r)


def make_i2v_dataset(
    out_dir: Path,
    num_clips: int = 12,
    seconds: float = 2.0,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    with_audio: bool = True,
    images: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write an i2v dataset into ``out_dir``; returns every file written, sorted.

    Videos: ``clipNN.mp4`` (H.264, ``size`` = (width, height), ``seconds`` × ``fps`` frames, AAC tone track if
    ``with_audio``) + ``clipNN.txt``. With ``images=True``: ``imgNN.png`` + ``imgNN.txt`` instead.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_frames = max(1, round(seconds * fps))
    written: list[Path] = []
    for i in range(num_clips):
        look = _pick_look(rng, size)
        direction = str(rng.choice(_DIRECTIONS))
        speed = float(rng.uniform(0.5, 1.0))
        offset = float(rng.uniform(-0.5, 0.5))
        freq = float(rng.choice([220.0, 330.0, 440.0, 550.0, 660.0, 880.0]))
        amp = float(rng.uniform(0.2, 0.8))
        if images:
            name = _name("img", i, num_clips)
            frame = next(_moving_frames(look, direction, speed, offset, 1, size))
            write_image(out_dir / f"{name}.png", frame)
            caption = f"{_a(look.colour)} {look.shape} over {_a(look.background)} gradient"
            media = out_dir / f"{name}.png"
        else:
            name = _name("clip", i, num_clips)
            audio = _tone(rng, n_frames / fps, freq, amp, channels=2) if with_audio else None
            media = out_dir / f"{name}.mp4"
            frames = _moving_frames(look, direction, speed, offset, n_frames, size)
            write_video(media, frames, fps, audio=audio, sample_rate=SAMPLE_RATE, threads=1)
            caption = f"{_a(look.colour)} {look.shape} moving {direction} over {_a(look.background)} gradient"
            if with_audio:
                loud = "loud" if amp > 0.5 else "soft"
                caption += f", with a {loud} {_pitch_word(freq)} tone"
        (out_dir / f"{name}.txt").write_text(caption + "\n")
        written += [media, out_dir / f"{name}.txt"]
    return sorted(written)


# ----------------------------------------------------------------------------------------------------
# a2v


def envelope(t: np.ndarray, rate_hz: float, phase: float) -> np.ndarray:
    """Loudness envelope in [0.1, 1] at times ``t`` (s): smooth beats at ``rate_hz``; drives both."""
    beat = 0.5 * (1.0 + np.cos(2 * np.pi * rate_hz * t + phase))
    return 0.1 + 0.9 * beat**2


def radius_for(env: np.ndarray, base: float) -> np.ndarray:
    """Shape radius driven by the envelope: ``base`` at silence-ish, 2.2 × ``base`` at full loudness."""
    return base * (1.0 + 1.2 * (env - 0.1) / 0.9)


def make_a2v_dataset(
    out_dir: Path,
    num_groups: int = 12,
    seconds: float = 2.0,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
    start_video_groups: int = 0,
) -> list[Path]:
    """Write an a2v dataset into ``out_dir``; returns every file written, sorted.

    Per group ``clipNN``: ``_start.png`` (exactly frame 0 of the target), ``_audio.wav`` (mono
    amplitude-modulated tone), ``_end.mp4`` (silent target video: the shape's radius follows the audio
    envelope at each frame's time, see :func:`envelope` / :func:`radius_for`) and ``.txt``. The first
    ``start_video_groups`` groups instead ship a ``_start.mp4`` (the target clip with the audio track) in
    place of ``_start.png`` and ``_audio.wav``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_frames = max(1, round(seconds * fps))
    w, h = size
    written: list[Path] = []
    for i in range(num_groups):
        look = _pick_look(rng, size)
        rate_hz = float(rng.uniform(1.0, 3.0))
        phase = float(rng.uniform(0, 2 * np.pi))
        freq = float(rng.choice([220.0, 330.0, 440.0, 550.0, 660.0]))
        cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
        base = min(size) * 0.09

        t_audio = np.arange(round(n_frames / fps * SAMPLE_RATE)) / SAMPLE_RATE
        audio = (0.9 * envelope(t_audio, rate_hz, phase) * np.sin(2 * np.pi * freq * t_audio)).astype(
            np.float32
        )
        radii = radius_for(envelope(np.arange(n_frames) / fps, rate_hz, phase), base)
        bg = _gradient(size, look.background)
        frames = [_draw(bg.copy(), look, cx, cy, float(r)) for r in radii]

        name = _name("clip", i, num_groups)
        end = out_dir / f"{name}_end.mp4"
        write_video(end, frames, fps, threads=1)
        written.append(end)
        if i < start_video_groups:
            start = out_dir / f"{name}_start.mp4"
            write_video(start, frames, fps, audio=audio[None], sample_rate=SAMPLE_RATE, threads=1)
            written.append(start)
        else:
            write_image(out_dir / f"{name}_start.png", frames[0])
            write_wav(out_dir / f"{name}_audio.wav", audio[None], SAMPLE_RATE)
            written += [out_dir / f"{name}_start.png", out_dir / f"{name}_audio.wav"]
        caption = (
            f"{_a(look.colour)} {look.shape} growing and shrinking to the beat of a {_pitch_word(freq)} tone "
            f"over {_a(look.background)} gradient, pulsing {rate_hz:.1f} times per second"
        )
        (out_dir / f"{name}.txt").write_text(caption + "\n")
        written.append(out_dir / f"{name}.txt")
    return sorted(written)


def zip_dir(src_dir: Path, zip_path: Path) -> Path:
    """Zip every file under ``src_dir`` (relative paths, sorted, fixed timestamps: reproducible bytes)."""
    src_dir, zip_path = Path(src_dir), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.resolve() != zip_path.resolve())
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(src_dir).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, p.read_bytes())
    return zip_path
