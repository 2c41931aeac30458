"""Inputs of a preview or a generate run: the start image and the a2v conditioning audio, from a path or a URL.

URLs must be https (downloaded with the dataset downloader's caps into ``work_dir/inputs``); every file is then
opened through `ltxlab.data.media`'s allow-listed readers, so a URL cannot smuggle in a playlist or an odd
container. The fitting is the training data's, so a preview conditions the model the way training did.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from urllib.parse import urlparse

import av
import numpy as np

from ltxlab.data.fit import fit_audio, peak_normalize, resize_fill_center_crop
from ltxlab.data.frame_fit import read_fitted_still
from ltxlab.data.media import (
    AUDIO_EXTS,
    IMAGE_EXTS,
    VIDEO_EXTS,
    MediaError,
    read_audio,
    read_image,
)
from ltxlab.data.sources import SourceLimits, download
from ltxlab.errors import DatasetError, InputError

AUDIO_SAMPLE_RATE = 16000  # the audio VAE's input rate
INPUT_LIMITS = SourceLimits(max_download_bytes=1024**3, download_timeout_s=600.0)


def _is_url(text: str) -> bool:
    return "://" in text


def fetch_input(url_or_path: str | Path, work_dir: Path, allowed_exts: set[str], what: str) -> Path:
    """A local file for ``url_or_path``: an existing path as is, an https URL downloaded into work_dir/inputs.

    The extension (from the URL's path) must be one of ``allowed_exts``: it selects the demuxer allow-list.
    Raises `InputError` with a one-line reason (as do the loaders below, for unreadable media).
    """
    text = str(url_or_path).strip()
    if not text:
        raise InputError(f"no {what} given")
    if not _is_url(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise InputError(f"{what} not found: {text}")
        if path.suffix.lower() not in allowed_exts:
            raise InputError(f"{what} {path.name}: unsupported file type; expected one of {sorted(allowed_exts)}")
        return path
    parsed = urlparse(text)
    if parsed.scheme.lower() != "https":
        raise InputError(f"{what} URL must be https://, got {parsed.scheme}://")
    ext = Path(parsed.path).suffix.lower()
    if ext not in allowed_exts:
        raise InputError(f"{what} URL must end in one of {sorted(allowed_exts)} (got {Path(parsed.path).name!r})")
    # Named by a hash of the URL: two samples may share a base name, and signed query strings stay out of paths.
    dest = Path(work_dir) / "inputs" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}{ext}"
    if dest.is_file():
        return dest
    try:
        download(text, dest, INPUT_LIMITS, expect_zip=False)
    except DatasetError as e:
        raise InputError(f"{what}: {e}") from None
    return dest


def reencode_h264(image: np.ndarray, crf: int) -> np.ndarray:
    """``image`` (H×W×3 uint8) after one trip through H.264 at ``crf`` (libx264 veryfast, yuv420p, in memory),
    as ltx-pipelines conditions on images: the model was trained on compressed video frames. Odd sizes lose
    their last row/column (4:2:0 needs even sizes); ``crf=0`` returns the image unchanged."""
    if crf == 0:
        return image
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if min(height, width) < 2:
        return image
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height = width, height
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
        out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, "r") as decoded:
        return next(decoded.decode(video=0)).to_ndarray(format="rgb24")


def load_start_image(url_or_path: str | Path, width: int, height: int, work_dir: Path, crf: int = 0) -> np.ndarray:
    """The first-frame image as H×W×3 uint8 RGB at exactly ``width``×``height``.

    With ``crf`` > 0 an image is first re-encoded as one H.264 frame at its own size (`reencode_h264`, in
    ltx-pipelines' order: compress, then fit). Then it is resized to fill and centre-cropped like training clips.
    A video file is accepted too (its first frame is used, already H.264-like: it is fitted, then re-encoded),
    like the a2v datasets' ``_start.mp4``.
    """
    path = fetch_input(url_or_path, work_dir, IMAGE_EXTS | VIDEO_EXTS, "start image")
    try:
        if path.suffix.lower() in IMAGE_EXTS:
            return resize_fill_center_crop(reencode_h264(read_image(path), crf), width, height)
        return reencode_h264(read_fitted_still(path, width, height), crf)
    except MediaError as e:
        raise InputError(f"start image: {e}") from None


def load_conditioning_audio(url_or_path: str | Path, duration_s: float, work_dir: Path, normalize: bool = True,
                            preserve_pitch: bool = True) -> np.ndarray:
    """The a2v conditioning audio as float32 [2, round(duration_s·16000)] at 16 kHz.

    The documented fitting, the same as training's (`ltxlab.data.assemble`), in this order:
    1. decode the first audio stream to 16 kHz stereo (mono is duplicated to both channels);
    2. fit to exactly the clip duration (``num_frames / fps``): with ``preserve_pitch`` the whole track is
       time-stretched (FFmpeg atempo, pitch kept) unless it is already within 1 % of the duration, in which case
       it is trimmed/padded; without it the end is trimmed or zero-padded (`fit.fit_audio`);
    3. with ``normalize``, peak-normalise to 0.99 (silence stays silent; `fit.peak_normalize`).
    """
    path = fetch_input(url_or_path, work_dir, AUDIO_EXTS | VIDEO_EXTS, "conditioning audio")
    try:
        audio = read_audio(path, AUDIO_SAMPLE_RATE, 2)
    except MediaError as e:
        raise InputError(f"conditioning audio: {e}") from None
    audio = fit_audio(audio, AUDIO_SAMPLE_RATE, duration_s, preserve_pitch)
    if normalize:
        audio = peak_normalize(audio)
    return audio.astype(np.float32, copy=False)
