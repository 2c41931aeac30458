from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ltxlab.data import media, media_write
from ltxlab.data.media import MediaError, MediaLimits

SR = 16000


def _frames(n: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Flat frames whose grey level encodes the index (robust to lossy coding)."""
    levels = np.linspace(20, 230, n).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).copy()


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    audio = np.stack([_tone(440, 1.25, SR), _tone(660, 1.25, SR)])
    media_write.write_video(path, _frames(30), 24, audio=audio, sample_rate=SR)
    return path


def test_probe_and_iterate_round_trip(av_clip):
    info = media.probe_video(av_clip)
    assert (info.width, info.height, info.num_frames) == (64, 48, 30)
    assert info.fps == pytest.approx(24.0)
    assert info.duration_s == pytest.approx(1.25, abs=0.05)
    assert info.has_audio and media.has_audio_stream(av_clip)

    it = media.iter_video_frames(av_clip)
    assert iter(it) is it  # a generator: frames stream one at a time
    frames = list(it)
    assert len(frames) == 30
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    means = np.array([f.mean() for f in frames])
    np.testing.assert_allclose(means, _frames(30).reshape(30, -1).mean(1), atol=3)


def test_video_without_audio_and_odd_size_from_generator(tmp_path):
    path = tmp_path / "silent.mp4"
    media_write.write_video(path, (f for f in _frames(9, w=33, h=21)), 12)
    info = media.probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (32, 20, 9, 12.0)
    assert not info.has_audio and not media.has_audio_stream(path)
    with pytest.raises(MediaError, match="no audio"):
        media.read_audio(path)


def test_write_video_rejects_empty_and_mismatched(tmp_path):
    with pytest.raises(ValueError):
        media_write.write_video(tmp_path / "e.mp4", [], 24)
    with pytest.raises(ValueError):
        media_write.write_video(tmp_path / "m.mp4", [_frames(1)[0], _frames(1, w=32)[0]], 24)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_mkv_without_frame_count_header(tmp_path):
    # Matroska stores no per-stream frame count: probe falls back to duration × fps.
    path = tmp_path / "c.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(24):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
    info = media.probe_video(path)
    assert info.num_frames == 24 and info.fps == pytest.approx(24.0)
    assert sum(1 for _ in media.iter_video_frames(path)) == 24


def test_read_audio_resamples_mono_44k_wav_to_16k_stereo(tmp_path):
    path = tmp_path / "tone.wav"
    media_write.write_wav(path, _tone(440, 1.0, 44100), 44100)
    a = media.read_audio(path)
    assert a.dtype == np.float32 and a.shape[0] == 2
    assert abs(a.shape[1] - 16000) <= 16
    np.testing.assert_array_equal(a[0], a[1])  # mono duplicated, not attenuated
    assert np.abs(a).max() == pytest.approx(0.5, abs=0.02)
    assert _dominant_hz(a[0], SR) == pytest.approx(440, abs=3)


def test_read_audio_from_video_track(av_clip):
    a = media.read_audio(av_clip, sample_rate=SR, channels=2)
    assert a.shape == (2, round(1.25 * SR))  # AAC frame padding trimmed to the declared duration
    assert _dominant_hz(a[0], SR) == pytest.approx(440, abs=5)
    assert _dominant_hz(a[1], SR) == pytest.approx(660, abs=5)
    mono = media.read_audio(av_clip, sample_rate=8000, channels=1)
    assert mono.shape == (1, 10000)


def test_image_round_trip_png_and_jpeg(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (17, 31, 3), dtype=np.uint8)
    media_write.write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(media.read_image(tmp_path / "a.png"), img)
    smooth = np.broadcast_to(np.linspace(0, 255, 31, dtype=np.uint8)[None, :, None], (17, 31, 3)).copy()
    media_write.write_image(tmp_path / "b.jpg", smooth)
    out = media.read_image(tmp_path / "b.jpg")
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 4
    # A PNG carrying a .jpg name is still an allowed image container: accepted.
    (tmp_path / "c.jpg").write_bytes((tmp_path / "a.png").read_bytes())
    np.testing.assert_array_equal(media.read_image(tmp_path / "c.jpg"), img)


@pytest.mark.parametrize(
    "text",
    [
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n",
        "ffconcat version 1.0\nfile {target}\n",
        "ffconcat version 1.0\nfile /etc/passwd\n",
    ],
)
@pytest.mark.parametrize("sniff", [True, False])
def test_playlist_disguised_as_mp4_is_refused(tmp_path, av_clip, monkeypatch, text, sniff):
    if not sniff:  # prove the forced-demuxer layer alone refuses it too
        monkeypatch.setattr(media, "_PLAYLIST_MAGIC", ())
    # The playlist points at a perfectly valid clip: following it would *succeed*, so an error proves refusal.
    path = tmp_path / "x.mp4"
    path.write_text(text.format(target=av_clip))
    for fn in (media.probe_video, lambda p: list(media.iter_video_frames(p)), media.read_audio):
        with pytest.raises(MediaError) as err:
            fn(path)
        msg = str(err.value)
        assert msg.startswith("x.mp4:") and "\n" not in msg and str(tmp_path) not in msg


def test_wrong_container_for_extension_is_refused(tmp_path, av_clip):
    wav = tmp_path / "t.wav"
    media_write.write_wav(wav, _tone(440, 0.5, SR), SR)
    fake = tmp_path / "sound.mp4"
    fake.write_bytes(wav.read_bytes())
    with pytest.raises(MediaError, match=r"sound\.mp4: .*looks like wav"):
        media.probe_video(fake)
    fake_wav = tmp_path / "video.wav"
    fake_wav.write_bytes(av_clip.read_bytes())
    with pytest.raises(MediaError, match=r"video\.wav"):
        media.read_audio(fake_wav)
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(MediaError, match="unsupported"):
        media.read_image(tmp_path / "x.gif")
    with pytest.raises(MediaError, match="unsupported"):
        media.read_image(av_clip)  # a video is not an image


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_mp4_raises(tmp_path, av_clip, keep):
    data = av_clip.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(MediaError, match=r"cut\.mp4"):
        media.probe_video(path)
        list(media.iter_video_frames(path))
    tiny = tmp_path / "tiny.mp4"
    tiny.write_bytes(data[:100])
    with pytest.raises(MediaError):
        media.probe_video(tiny)


def test_moov_at_end_truncated_fails_at_open(tmp_path):
    path = tmp_path / "plain.mp4"
    with av.open(str(path), "w", format="mp4") as out:  # no faststart: index written last
        vs = out.add_stream("libx264", rate=Fraction(24))
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(12):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted download: no index
    with pytest.raises(MediaError, match=r"plain\.mp4: not a valid mp4"):
        media.probe_video(path)


def test_limits_enforced(tmp_path, av_clip):
    with pytest.raises(MediaError, match="frame size 64x48"):
        media.probe_video(av_clip, MediaLimits(max_width=32))
    with pytest.raises(MediaError, match="frame size"):
        list(media.iter_video_frames(av_clip, MediaLimits(max_pixels_per_frame=1000)))
    with pytest.raises(MediaError, match="duration"):
        media.probe_video(av_clip, MediaLimits(max_duration_s=0.5))
    with pytest.raises(MediaError, match="streams"):
        media.probe_video(av_clip, MediaLimits(max_streams=1))
    with pytest.raises(MediaError, match="byte limit"):
        media.probe_video(av_clip, MediaLimits(max_file_bytes=100))
    with pytest.raises(MediaError, match="more than 10 frames"):
        list(media.iter_video_frames(av_clip, MediaLimits(max_frames=10)))
    img = tmp_path / "big.png"
    media_write.write_image(img, np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(MediaError, match="frame size 50x40"):
        media.read_image(img, MediaLimits(max_height=39))


def test_odd_files_refused(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        media.probe_video(tmp_path / "empty.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(MediaError, match="not a regular file"):
        media.probe_video(tmp_path / "dir.mp4")
    with pytest.raises(MediaError, match="cannot read"):
        media.probe_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(MediaError, match=r"junk\.png"):
        media.read_image(tmp_path / "junk.png")


def _mux_tone(path: Path, fmt: str, codec: str, rate: int, seconds: float = 0.5) -> None:
    x = _tone(440, seconds, rate)[None]
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(x, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux(st.encode(frame))
        out.mux(st.encode(None))


@pytest.mark.parametrize(
    ("name", "fmt", "codec", "rate"),
    [
        ("a.mp3", "mp3", "libmp3lame", 44100),
        ("a.ogg", "ogg", "libopus", 48000),
        ("a.flac", "flac", "flac", 22050),
        ("a.m4a", "ipod", "aac", 44100),
        ("a.aac", "adts", "aac", 32000),
        ("m4a_named.aac", "ipod", "aac", 44100),  # an MP4 audio file carrying a .aac name
    ],
)
def test_read_audio_every_allowed_audio_container(tmp_path, name, fmt, codec, rate):
    path = tmp_path / name
    _mux_tone(path, fmt, codec, rate)
    a = media.read_audio(path)
    assert a.shape[0] == 2 and abs(a.shape[1] - SR // 2) < SR // 10
    assert _dominant_hz(a[0], SR) == pytest.approx(440, abs=10)
    assert media.has_audio_stream(path)


@pytest.mark.parametrize(("name", "fmt", "codec"), [("v.mov", "mov", "libx264"), ("v.avi", "avi", "mpeg4")])
def test_other_video_containers(tmp_path, name, fmt, codec):
    path = tmp_path / name
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(codec, rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for f in _frames(10):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
    info = media.probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 10, 25.0)
    assert len(list(media.iter_video_frames(path))) == 10


@pytest.mark.parametrize(("ext", "vcodec"), [(".mov", "libx264"), (".avi", "mpeg4")])
def test_pcm_audio_in_mov_and_avi_is_read_whole(tmp_path, ext, vcodec):
    # Camera files (DSLR .mov, older .avi) carry PCM: their headers count samples, not packets.
    path = tmp_path / f"camera{ext}"
    sr = 44100
    tone = _tone(440, 1.0, sr)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("pcm_s16le", rate=sr, layout="mono")
        for frame in _frames(24):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        pcm = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16)[None], format="s16", layout="mono")
        pcm.sample_rate = sr
        out.mux(aus.encode(pcm))
        out.mux(aus.encode(None))
        out.mux(vs.encode(None))
    assert media.has_audio_stream(path) and media.probe_video(path).has_audio
    audio = media.read_audio(path, SR, 2)
    assert audio.shape == (2, SR) and abs(_dominant_hz(audio[0], SR) - 440) < 5
