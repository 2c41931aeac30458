import numpy as np
import pytest

from ltxlab.data.fit import (
    _atempo_chain,
    fit_audio,
    frame_indices,
    peak_normalize,
    resize_fill_center_crop,
    select_frames,
    snap_frames,
)

SR = 16000


def _marker_frame(h: int, w: int, cy: int, cx: int, half: int = 4) -> np.ndarray:
    frame = np.zeros((h, w, 3), np.uint8)
    frame[cy - half : cy + half, cx - half : cx + half] = 255
    return frame


def _centroid(frame: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(frame[..., 0] > 127)
    return float(ys.mean()), float(xs.mean())


@pytest.mark.parametrize(
    ("src_hw", "target_wh"),
    [
        ((1080, 1920), (512, 512)),  # landscape → square
        ((1920, 1080), (448, 768)),  # portrait → 9:16 bucket
        ((1080, 1920), (768, 448)),  # landscape → 16:9 bucket
        ((50, 100), (960, 544)),  # upscale
        ((241, 333), (288, 512)),  # odd sizes
        ((544, 960), (960, 544)),  # already the right size
    ],
)
def test_resize_fill_exact_size_and_centred(src_hw, target_wh):
    h, w = src_hw
    tw, th = target_wh
    frame = _marker_frame(h, w, h // 2, w // 2, half=max(2, min(h, w) // 20))
    out = resize_fill_center_crop(frame, tw, th)
    assert out.shape == (th, tw, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    cy, cx = _centroid(out)
    assert abs(cy - (th - 1) / 2) <= 2 and abs(cx - (tw - 1) / 2) <= 2


def test_resize_fill_crops_overhang_equally_and_keeps_aspect():
    # 200×400 → 100×100: scaled to 100×200, then 50 px cut from each side.
    frame = np.zeros((200, 400, 3), np.uint8)
    frame[:, :100] = 255  # left quarter: lies entirely in the cropped-away left margin
    frame[90:110, 190:210] = 128  # centre square stays a square (aspect kept)
    out = resize_fill_center_crop(frame, 100, 100)
    assert out[:, :2].max() < 140  # left white band is gone (only its resampled edge may bleed a pixel)
    mid = np.nonzero(np.abs(out[..., 0].astype(int) - 128) < 40)
    assert np.ptp(mid[0]) == pytest.approx(np.ptp(mid[1]), abs=1)


def test_identity_when_sizes_match():
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_fill_center_crop(frame, 64, 48), frame)


def test_snap_frames():
    assert [snap_frames(n) for n in (9, 10, 16, 17, 88, 89, 96, 97, 120, 121)] == [
        9, 9, 9, 17, 81, 89, 89, 97, 113, 121,
    ]  # fmt: skip
    for bad in (0, 8, 122):
        with pytest.raises(ValueError):
            snap_frames(bad)


def test_frame_indices_without_auto_scale():
    assert frame_indices(100, 30.0, 89, 24, auto_scale=False) == list(range(89))
    assert frame_indices(89, 24.0, 89, 24, auto_scale=False) == list(range(89))
    assert frame_indices(88, 24.0, 89, 24, auto_scale=False) is None
    assert frame_indices(0, 24.0, 9, 24, auto_scale=False) is None
    sel = select_frames(100, 30.0, 89, 24, auto_scale=False)
    assert sel.start_s == 0.0 and sel.duration_s == pytest.approx(89 / 30)


def test_frame_indices_auto_scale_resamples_to_target_fps():
    # 60 fps source, 24 fps target: every 2.5th frame, nearest (half up).
    assert frame_indices(300, 60.0, 9, 24, auto_scale=True) == [0, 3, 5, 8, 10, 13, 15, 18, 20]
    sel = select_frames(300, 60.0, 9, 24, auto_scale=True)
    assert sel.duration_s == pytest.approx(9 / 24)
    # 12 fps source, 24 fps target: frames repeat.
    assert frame_indices(100, 12.0, 9, 24, auto_scale=True) == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    # Same fps and long enough: identical to the plain rule.
    assert frame_indices(200, 24.0, 89, 24, auto_scale=True) == list(range(89))
    # NTSC rate: no drift past the end, strictly from the start.
    idx = frame_indices(90, 29.97, 73, 24, auto_scale=True)
    assert len(idx) == 73 and idx[0] == 0 and idx[-1] <= 89 and idx == sorted(idx)


def test_frame_indices_auto_scale_stretches_short_clip():
    idx = frame_indices(20, 24.0, 89, 24, auto_scale=True)
    assert len(idx) == 89 and idx[0] == 0 and idx[-1] == 19
    assert set(np.diff(idx)) <= {0, 1}
    assert set(idx) == set(range(20))  # every source frame used
    sel = select_frames(20, 24.0, 89, 24, auto_scale=True)
    assert sel.duration_s == pytest.approx(20 / 24)
    # Too short at 24 fps but more frames than needed at source fps (120 fps, 50 frames) → spread evenly.
    idx = frame_indices(50, 120.0, 17, 24, auto_scale=True)
    assert len(idx) == 17 and idx[0] == 0 and idx[-1] == 49
    assert frame_indices(1, 24.0, 9, 24, auto_scale=True) == [0] * 9


def test_peak_normalize():
    x = np.array([[0.1, -0.25], [0.05, 0.2]], np.float32)
    y = peak_normalize(x)
    assert y.dtype == np.float32 and np.abs(y).max() == pytest.approx(0.99)
    np.testing.assert_allclose(y / y.max(), x / x.max(), rtol=1e-6)
    assert peak_normalize(x, peak=0.5).min() == pytest.approx(-0.5)
    silent = np.zeros((2, 100), np.float32)
    np.testing.assert_array_equal(peak_normalize(silent), silent)
    assert not np.isnan(peak_normalize(np.full((1, 10), 1e-9, np.float32))).any()


def _tone(freq: float, seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels)


def _dominant_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


def test_fit_audio_trim_pad_keeps_samples():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3 * SR)).astype(np.float32)
    y = fit_audio(x, SR, 2.0, preserve_pitch=False)
    assert y.shape == (2, 2 * SR)
    np.testing.assert_array_equal(y, x[:, : 2 * SR])
    z = fit_audio(x, SR, 3.5, preserve_pitch=False)
    assert z.shape == (2, round(3.5 * SR))
    np.testing.assert_array_equal(z[:, : 3 * SR], x)
    assert not z[:, 3 * SR :].any()
    # Within 1 %: a pitch-preserving fit also only trims/pads, leaving samples untouched.
    w = fit_audio(x, SR, 3.02, preserve_pitch=True)
    assert w.shape == (2, round(3.02 * SR))
    np.testing.assert_array_equal(w[:, : 3 * SR], x)


@pytest.mark.parametrize(("src_s", "dst_s"), [(3.0, 2.0), (2.0, 3.0)])
def test_fit_audio_preserves_pitch(src_s, dst_s):
    x = _tone(440, src_s)
    y = fit_audio(x, SR, dst_s, preserve_pitch=True)
    assert y.shape == (2, round(dst_s * SR)) and y.dtype == np.float32
    mid = y[0, SR // 4 : -SR // 4]  # skip edges
    assert _dominant_hz(mid) == pytest.approx(440, abs=6)
    assert np.abs(mid).max() == pytest.approx(0.5, abs=0.1)
    # Naive resampling would have shifted the pitch by the stretch factor.
    assert abs(_dominant_hz(mid) - 440 * src_s / dst_s) > 100


def test_fit_audio_extreme_factors_and_channel_counts():
    y = fit_audio(_tone(440, 0.6, channels=1), SR, 2.0, preserve_pitch=True)  # 0.3× needs chained atempo
    assert y.shape == (1, 2 * SR)
    assert _dominant_hz(y[0, SR // 4 : -SR // 4]) == pytest.approx(440, abs=6)
    y = fit_audio(_tone(440, 2.0, channels=3), SR, 1.0, preserve_pitch=True)
    assert y.shape == (3, SR)
    for stages in (_atempo_chain(0.3), _atempo_chain(0.1), _atempo_chain(250.0), _atempo_chain(1.5)):
        assert all(0.5 <= s <= 100 for s in stages)
    assert np.prod(_atempo_chain(0.1)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        fit_audio(np.zeros(10, np.float32), SR, 1.0, preserve_pitch=False)
