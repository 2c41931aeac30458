"""Writing media (mp4 with H.264 + AAC, wav, png/jpeg) on PyAV.

Writes are atomic: a ``.part`` file is renamed into place, so a crash never leaves a half file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import wave
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@contextlib.contextmanager
def _atomic(path: str | os.PathLike) -> Iterator[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _as_audio(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise ValueError(f"audio must be [T] or [C, T] with C in (1, 2), got shape {a.shape}")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))


def _even_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be H×W×3 uint8, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[0] & ~1, frame.shape[1] & ~1  # yuv420p needs even sizes: drop an odd last row/column
    if h == 0 or w == 0:
        raise ValueError("frame too small")
    return np.ascontiguousarray(frame[:h, :w])


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: int | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
    preset: str = "fast",
    threads: int = 0,
    deterministic: bool = False,
) -> None:
    """Write an H.264 (yuv420p) + AAC mp4 with the index up front (``+faststart``), streaming the frames.

    ``frames``: an iterable of H×W×3 uint8 RGB frames or an ``[F, H, W, 3]`` array; odd sizes lose their last
    row/column. ``audio``: float ``[C, T]`` or ``[T]`` in [-1, 1] (C = 1 or 2) at ``sample_rate``; it is
    interleaved with the video as it is written, and written whole even if longer than the video.
    ``threads=0`` lets x264 pick. ``deterministic=True`` gives byte-identical files run to run: one x264 thread
    and no macroblock-tree rate control (with mbtree on, single-threaded x264 still varied its output between
    identical runs of the same YUV frames, depending on the process — e.g. with torch loaded).
    """
    pcm = _as_audio(audio) if audio is not None else None
    rate = Fraction(fps)
    with (
        _atomic(path) as tmp,
        av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        vs = None
        astream = None
        if pcm is not None:
            astream = out.add_stream(
                "aac", rate=sample_rate, layout="mono" if pcm.shape[0] == 1 else "stereo"
            )
            astream.bit_rate = 128_000
        a_pos = 0

        def push_audio(upto: int) -> None:
            nonlocal a_pos
            upto = min(upto, pcm.shape[1])
            if upto <= a_pos:
                return
            fr = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pcm[:, a_pos:upto]), format="fltp", layout=astream.layout.name
            )
            fr.sample_rate, fr.pts, fr.time_base = sample_rate, a_pos, Fraction(1, sample_rate)
            out.mux(astream.encode(fr))
            a_pos = upto

        shape = None
        for n, raw in enumerate(frames, start=1):
            frame = _even_rgb(np.asarray(raw))
            if vs is None:
                shape = frame.shape
                vs = out.add_stream("libx264", rate=rate)
                vs.width, vs.height, vs.pix_fmt = shape[1], shape[0], "yuv420p"
                vs.options = {"crf": str(crf), "preset": preset} | ({"x264-params": "mbtree=0"} if deterministic
                                                                      else {})
                vs.codec_context.thread_count = 1 if deterministic else threads
            elif frame.shape != shape:
                raise ValueError(f"frame {n - 1} has shape {frame.shape}, expected {shape}")
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            if astream is not None:
                push_audio(round(n / rate * sample_rate))
        if vs is None:
            raise ValueError("write_video needs at least one frame")
        out.mux(vs.encode(None))
        if astream is not None:
            push_audio(pcm.shape[1])
            out.mux(astream.encode(None))


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV from float ``[C, T]`` or ``[T]`` in [-1, 1] (stdlib writer: no codec surprises)."""
    a = _as_audio(audio)
    pcm = np.round(a.T * 32767.0).astype("<i2")
    with _atomic(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(a.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


def write_image(path: str | os.PathLike, frame: np.ndarray) -> None:
    """Write an H×W×3 uint8 RGB frame as PNG (lossless), or JPEG if the name ends in .jpg/.jpeg."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image must be H×W×3 uint8, got {arr.shape} {arr.dtype}")
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        cc = av.CodecContext.create("mjpeg", "w")
        cc.pix_fmt, cc.options = "yuvj444p", {"qscale": "2"}
        vf = vf.reformat(format="yuvj444p")
    else:
        cc = av.CodecContext.create("png", "w")
        cc.pix_fmt = "rgb24"
    cc.width, cc.height = arr.shape[1], arr.shape[0]
    cc.time_base = Fraction(1, 25)
    data = b"".join(bytes(p) for p in cc.encode(vf) + cc.encode(None))
    with _atomic(path) as tmp:
        tmp.write_bytes(data)
