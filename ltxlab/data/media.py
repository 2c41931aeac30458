"""Safe, streaming media I/O on PyAV (bundled FFmpeg).

Every input is opened through one gate (:func:`_open_input`) that

* accepts only extensions we know and forces a demuxer from an allow-list matching that extension, so FFmpeg
  never probes: an HLS/ffconcat playlist renamed ``clip.mp4`` cannot select the ``hls``/``concat`` demuxer
  and is never followed (playlist magic is also sniffed and refused up front);
* restricts FFmpeg to the ``file`` protocol and opens an absolute path (a relative ``concat:a|b`` name can't
  select a protocol);
* enforces :class:`MediaLimits` on file size, stream count, frame dimensions and duration before decoding, and
  again per decoded frame (headers can lie).

Any failure surfaces as :class:`MediaError` with a one-line reason naming only the file's base name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
AUDIO_EXTS = {".wav", ".mp3", ".ogg", ".m4a", ".aac", ".flac"}

# Extension -> demuxers we are willing to use for it (first = default when sniffing is inconclusive).
# Images use the *_pipe demuxers, which read exactly one file (image2 would expand %d patterns and globs).
_DEMUXERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((".mp4", ".mov", ".m4a"), ("mov",)),
    **{".mkv": ("matroska",), ".avi": ("avi",), ".wav": ("wav",), ".mp3": ("mp3",), ".ogg": ("ogg",)},
    **{".flac": ("flac",), ".aac": ("aac", "mov")},  # .aac: raw ADTS, or an MP4 audio file with that name
    **{".png": ("png_pipe", "jpeg_pipe"), **dict.fromkeys((".jpg", ".jpeg"), ("jpeg_pipe", "png_pipe"))},
}
# (offset, magic, demuxer) for sniffing; picks among allowed demuxers and explains refusals.
_MAGIC = (
    (0, b"\x89PNG\r\n\x1a\n", "png_pipe"),
    (0, b"\xff\xd8\xff", "jpeg_pipe"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (8, b"WAVE", "wav"),
    (8, b"AVI ", "avi"),
    (0, b"ID3", "mp3"),
    *((4, atom, "mov") for atom in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")),
)
_PLAYLIST_MAGIC = (b"#EXTM3U", b"#EXT-X-", b"ffconcat", b"[playlist]", b"<?xml", b"<smil", b"#!")
_SNIFF_BYTES = 64


class MediaError(Exception):
    """A media file that cannot be used (corrupt, truncated, wrong container, over limits)."""


@dataclass(frozen=True)
class MediaLimits:
    max_width: int = 8192
    max_height: int = 8192
    max_pixels_per_frame: int = 7680 * 4320  # 8K UHD
    max_duration_s: float = 3600.0
    max_streams: int = 8
    max_file_bytes: int = 4 * 1024**3
    max_frames: int = 3600 * 60  # decoded-frame cap, a backstop for streams whose headers lie about duration


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    has_audio: bool


# ----------------------------------------------------------------------------------------------------
# The gate


def _sniff(head: bytes) -> str | None:
    for offset, magic, fmt in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "aac" if head[1] & 0xF6 == 0xF0 else "mp3"  # shared 0xFFF sync word; ADTS has layer bits 00
    return None


def _check_file(path: Path, limits: MediaLimits) -> None:
    name = path.name
    try:
        st = os.stat(path)
    except OSError as e:
        raise MediaError(f"{name}: cannot read file ({e.strerror or type(e).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{name}: not a regular file")
    if st.st_size == 0:
        raise MediaError(f"{name}: empty file")
    if st.st_size > limits.max_file_bytes:
        raise MediaError(f"{name}: file is {st.st_size} bytes, over the {limits.max_file_bytes}-byte limit")


def _ffmpeg_reason(e: BaseException) -> str:
    # FFmpeg errors embed the full (temp) path; keep only the reason.
    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(reason).split())


def _check_streams(container: av.container.InputContainer, name: str, limits: MediaLimits) -> None:
    streams = container.streams
    if len(streams) > limits.max_streams:
        raise MediaError(f"{name}: {len(streams)} streams, over the limit of {limits.max_streams}")
    for vs in streams.video:
        _check_dims(vs.codec_context.width, vs.codec_context.height, name, limits)
    durations = [container.duration / av.time_base] if container.duration else []
    durations += [float(s.duration * s.time_base) for s in streams if s.duration and s.time_base]
    if durations and max(durations) > limits.max_duration_s:
        raise MediaError(
            f"{name}: duration {max(durations):.1f} s is over the {limits.max_duration_s:g} s limit"
        )


def _check_dims(width: int, height: int, name: str, limits: MediaLimits) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: video stream has no valid frame size")
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels_per_frame:
        raise MediaError(
            f"{name}: frame size {width}x{height} is over the limit "
            f"({limits.max_width}x{limits.max_height}, {limits.max_pixels_per_frame} pixels)"
        )


@contextlib.contextmanager
def _open_input(
    path: str | os.PathLike, limits: MediaLimits, exts: set[str]
) -> Iterator[av.container.InputContainer]:
    """Open ``path`` for reading through the allow-list; yields the container, closes it on exit."""
    path = Path(os.path.abspath(path))
    name, ext = path.name, path.suffix.lower()
    if ext not in exts or ext not in _DEMUXERS:
        raise MediaError(f"{name}: unsupported file type {ext or '(none)'!r}")
    _check_file(path, limits)
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError as e:
        raise MediaError(f"{name}: cannot read file ({e.strerror})") from None
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_PLAYLIST_MAGIC):
        raise MediaError(f"{name}: is a playlist/text file, not media; refused")
    allowed = _DEMUXERS[ext]
    sniffed = _sniff(head)
    fmt = sniffed if sniffed in allowed else allowed[0]
    options = {"protocol_whitelist": "file"}
    if fmt == "mov":
        options["enable_drefs"] = "0"  # never follow external data references (the default, made explicit)
    try:
        container = av.open(str(path), mode="r", format=fmt, container_options=options)
    except av.error.FFmpegError as e:
        looks = f" (content looks like {sniffed})" if sniffed and sniffed not in allowed else ""
        raise MediaError(f"{name}: not a valid {ext[1:]} file{looks}: {_ffmpeg_reason(e)}") from None
    try:
        # PyAV reports the forced name; checked anyway so a future auto-probe path can't slip past.
        if not set(container.format.name.split(",")) & set(allowed):
            raise MediaError(f"{name}: container format {container.format.name!r} not allowed for {ext}")
        _check_streams(container, name, limits)
        yield container
    except av.error.FFmpegError as e:
        raise MediaError(f"{name}: decode failed: {_ffmpeg_reason(e)}") from None
    finally:
        container.close()


_ROTATE_CCW = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that bring a decoded frame upright (its display matrix: phone portrait
    videos are coded landscape and tagged with a rotation; 0 when untagged)."""
    return round(frame.rotation / 90) % 4 if frame.rotation else 0


def rotate_upright(pixels: np.ndarray, turns: int) -> np.ndarray:
    """``pixels`` (H×W or H×W×C) turned ``turns`` quarter turns counter-clockwise."""
    return cv2.rotate(pixels, _ROTATE_CCW[turns]) if turns else pixels


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as upright H×W×3 uint8 RGB through swscale (honours the colour matrix and range)."""
    # Honour a full-range tag on plain yuv420p (phones); unspecified ranges default to limited.
    kwargs = {"src_color_range": frame.color_range} if frame.color_range else {}
    return rotate_upright(frame.to_ndarray(format="rgb24", **kwargs), quarter_turns(frame))


# ----------------------------------------------------------------------------------------------------
# Reading


def _fps_of(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) <= 1000:
            return float(rate)
    return 0.0


def _decode_checked(
    c: av.container.InputContainer, stream: av.stream.Stream, name: str
) -> Iterator[av.frame.Frame]:
    """Decode one stream; at the end, raise if less came than the header declares (truncation).

    Headers count packets, except for PCM audio, where mov and avi count samples.
    """
    declared = int(stream.frames or 0)
    # mov/mp4 sample tables are exact; other containers' counts can be estimates, so allow slack there.
    slack = 0 if c.format.name == "mov" else max(2, declared // 50)
    pcm = stream.type == "audio" and stream.codec_context.name.startswith("pcm_")
    present = 0
    for packet in c.demux(stream):
        if packet.size and not pcm:
            present += 1
        for frame in packet.decode():
            if pcm:
                present += frame.samples
            yield frame
    if declared and present < declared - slack:
        unit = "samples" if pcm else "packets"
        raise MediaError(f"{name}: truncated or corrupt: {present} of {declared} {unit} present")


def _audio_decodes(c: av.container.InputContainer, max_packets: int = 64) -> bool:
    """Whether the first audio stream yields samples (an empty or undecodable track counts as no audio)."""
    stream = c.streams.audio[0]
    tried = 0
    try:
        for packet in c.demux(stream):
            if not packet.size:
                continue
            if any(frame.samples for frame in packet.decode()):
                return True
            tried += 1
            if tried >= max_packets:
                return False
    except av.error.FFmpegError:
        return False
    return False


def probe_video(path: str | os.PathLike, limits: MediaLimits = MediaLimits()) -> VideoInfo:
    """Size, frame rate, frame count and duration of a video, from its headers (packets counted if needed)."""
    name = Path(path).name
    with _open_input(path, limits, VIDEO_EXTS) as c:
        if not c.streams.video:
            raise MediaError(f"{name}: no video stream")
        vs = c.streams.video[0]
        fps = _fps_of(vs)
        if fps <= 0:
            raise MediaError(f"{name}: unknown frame rate")
        duration = 0.0
        if vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif c.duration:
            duration = c.duration / av.time_base
        num_frames = int(vs.frames or 0)
        if num_frames <= 0 and duration > 0:
            num_frames = round(duration * fps)
        if num_frames <= 0:
            # Headers know nothing: count packets (demux only, no decode), bounded by the frame cap.
            for pkt in c.demux(vs):
                if pkt.size:
                    num_frames += 1
                    if num_frames > limits.max_frames:
                        raise MediaError(f"{name}: more than {limits.max_frames} frames")
        if num_frames <= 0:
            raise MediaError(f"{name}: video stream has no frames")
        if duration <= 0:
            duration = num_frames / fps
        info = VideoInfo(
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=fps,
            num_frames=num_frames,
            duration_s=duration,
            has_audio=False,
        )
    # Decided apart (a second open) so the audio scan cannot disturb the video stream's probing above.
    return dataclasses.replace(info, has_audio=has_audio_stream(path, limits))


def iter_decoded_frames(
    path: str | os.PathLike, limits: MediaLimits = MediaLimits(), threaded: bool = True
) -> Iterator[av.VideoFrame]:
    """Decode a video's frames one at a time, as PyAV frames (nothing converted, never the whole video).

    ``threaded`` uses FFmpeg's frame and slice threads; callers that already decode several files in parallel
    pass False so the workers do not oversubscribe the cores. A yielded frame is valid until the next one.

    Raises :class:`MediaError` mid-iteration on decode errors or over-limit frames, and at the end when the
    stream delivered fewer packets than its header promised (a truncated file; :func:`probe_video` reads
    headers only and cannot tell).
    """
    name = Path(path).name
    with _open_input(path, limits, VIDEO_EXTS) as c:
        if not c.streams.video:
            raise MediaError(f"{name}: no video stream")
        vs = c.streams.video[0]
        if threaded:
            vs.thread_type = "AUTO"  # frame + slice threads: one decode uses all cores
        count = 0
        for frame in _decode_checked(c, vs, name):
            _check_dims(frame.width, frame.height, name, limits)
            count += 1
            if count > limits.max_frames:
                raise MediaError(f"{name}: more than {limits.max_frames} frames")
            if frame.time is not None and frame.time > limits.max_duration_s:
                raise MediaError(f"{name}: runs past the {limits.max_duration_s:g} s limit")
            yield frame
        if count == 0:
            raise MediaError(f"{name}: no decodable video frames")


def iter_video_frames(
    path: str | os.PathLike, limits: MediaLimits = MediaLimits(), threaded: bool = True
) -> Iterator[np.ndarray]:
    """:func:`iter_decoded_frames` converted to H×W×3 uint8 RGB arrays."""
    frames = iter_decoded_frames(path, limits, threaded)
    try:
        for frame in frames:
            yield frame_to_rgb(frame)
    finally:
        frames.close()


def read_image(path: str | os.PathLike, limits: MediaLimits = MediaLimits()) -> np.ndarray:
    """Decode a PNG/JPEG still to H×W×3 uint8 RGB (alpha dropped, grey/palette expanded)."""
    name = Path(path).name
    with _open_input(path, limits, IMAGE_EXTS) as c:
        if not c.streams.video:
            raise MediaError(f"{name}: no image data")
        for frame in c.decode(c.streams.video[0]):
            _check_dims(frame.width, frame.height, name, limits)
            return frame_to_rgb(frame)
    raise MediaError(f"{name}: no decodable image")


def has_audio_stream(path: str | os.PathLike, limits: MediaLimits = MediaLimits()) -> bool:
    """Whether a video/audio file carries audio that decodes (MediaError if the file can't be opened).

    A declared stream with no packets, or one whose first packets decode to nothing, is silence, not audio.
    """
    with _open_input(path, limits, VIDEO_EXTS | AUDIO_EXTS) as c:
        return bool(c.streams.audio) and _audio_decodes(c)


def read_audio(
    path: str | os.PathLike, sample_rate: int = 16000, channels: int = 2, limits: MediaLimits = MediaLimits()
) -> np.ndarray:
    """Decode the first audio stream of an audio or video file to float32 ``[channels, T]`` in [-1, 1].

    Resampled with FFmpeg's swresample. Mono sources are duplicated to every output channel at full level
    (swresample's own upmix would attenuate by 3 dB); sources with more channels are down-mixed by swresample.
    """
    if channels not in (1, 2):
        raise ValueError("channels must be 1 or 2")
    name = Path(path).name
    with _open_input(path, limits, VIDEO_EXTS | AUDIO_EXTS) as c:
        if not c.streams.audio:
            raise MediaError(f"{name}: no audio stream")
        stream = c.streams.audio[0]
        src_channels = stream.codec_context.layout.nb_channels
        if src_channels <= 0:
            raise MediaError(f"{name}: audio stream has no channels")
        layout = "mono" if (src_channels == 1 or channels == 1) else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        max_samples = int(limits.max_duration_s * sample_rate) + sample_rate
        chunks: list[np.ndarray] = []
        total = 0

        def take(frames: list[av.AudioFrame]) -> None:
            nonlocal total
            for fr in frames:
                arr = fr.to_ndarray()
                total += arr.shape[1]
                if total > max_samples:
                    raise MediaError(f"{name}: audio runs past the {limits.max_duration_s:g} s limit")
                chunks.append(arr)

        for frame in _decode_checked(c, stream, name):
            take(resampler.resample(frame))
        take(resampler.resample(None))
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    if not chunks:
        raise MediaError(f"{name}: no decodable audio")
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if declared > 0:
        # Codecs decode whole frames (AAC: 1024 samples); drop the padding past the stream's declared end.
        audio = audio[:, : max(1, round(declared * sample_rate))]
    if audio.shape[0] != channels:
        audio = np.repeat(audio, channels, axis=0)
    return np.clip(audio, -1.0, 1.0)
