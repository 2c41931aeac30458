"""The fast YUV fill-and-crop path against swscale's RGB conversion + the reference fill-and-crop."""

from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from ltxlab.data.fit import resize_fill_center_crop
from ltxlab.data.frame_fit import fit_video_frame, yuv_to_rgb_matrix
from ltxlab.data.media import frame_to_rgb, iter_decoded_frames, quarter_turns
from ltxlab.data.media_write import write_video


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, 255 - (xx + yy) * 255 // (w + h)], -1).astype(np.uint8)


def _yuv_frame(rgb: np.ndarray, fmt: str = "yuv420p", colorspace: int = 2, color_range: int = 1) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
    frame.colorspace = colorspace
    frame.color_range = color_range
    return frame


def _reference(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    return resize_fill_center_crop(frame_to_rgb(frame), width, height)


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    diff = np.abs(got.astype(int) - ref)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 4, (diff.mean(), diff.max())


@pytest.mark.parametrize(
    ("src_hw", "target_wh"),
    [
        ((360, 640), (512, 512)),  # upscale + crop
        ((1080, 1920), (768, 448)),  # whole-factor shrink (INTER_AREA) + crop
        ((1080, 1920), (256, 256)),  # big shrink: chroma shrinks too
        ((241, 333), (288, 512)),  # odd sizes: chroma planes round up
        ((544, 960), (960, 544)),  # exact size
    ],
)
def test_matches_swscale_then_fill_crop(src_hw: tuple[int, int], target_wh: tuple[int, int]) -> None:
    frame = _yuv_frame(_smooth_rgb(*src_hw))
    out = np.zeros((target_wh[1], target_wh[0], 3), np.uint8)
    got = fit_video_frame(frame, *target_wh, out=out)
    assert got is out and got.shape == (target_wh[1], target_wh[0], 3) and got.dtype == np.uint8
    _assert_close(got, _reference(frame, *target_wh))


@pytest.mark.parametrize(
    ("fmt", "colorspace", "color_range"),
    [
        ("yuv420p", 1, 1),  # BT.709 limited (HD phones and cameras)
        ("yuv420p", 1, 2),  # BT.709 full range
        ("yuv420p", 5, 1),  # BT.601 (BT470BG)
        ("yuv420p", 9, 1),  # BT.2020
        ("yuvj420p", 2, 2),  # JPEG-range pixel format (MJPEG, some phones)
    ],
)
def test_honours_the_frames_colour_matrix_and_range(fmt: str, colorspace: int, color_range: int) -> None:
    frame = _yuv_frame(_smooth_rgb(120, 160), fmt, colorspace, color_range)
    _assert_close(fit_video_frame(frame, 96, 64), _reference(frame, 96, 64))
    if colorspace != 2:  # a different tag really changes the colours, so the comparison above means something
        untagged = _yuv_frame(_smooth_rgb(120, 160), fmt, 2, color_range)
        assert np.abs(fit_video_frame(untagged, 96, 64).astype(int) - _reference(frame, 96, 64)).max() > 4


def test_other_pixel_formats_take_swscale_path_exactly() -> None:
    frame = _yuv_frame(_smooth_rgb(90, 200), "yuv444p")
    np.testing.assert_array_equal(fit_video_frame(frame, 64, 64), _reference(frame, 64, 64))


def test_matrix_maps_black_white_and_primaries() -> None:
    def rgb(y: float, u: float, v: float, standard: int = 601, full: bool = False) -> np.ndarray:
        return yuv_to_rgb_matrix(standard, full) @ np.array([y, u, v, 1.0])

    np.testing.assert_allclose(rgb(16, 128, 128), [0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb(235, 128, 128), [255, 255, 255], atol=1e-3)
    np.testing.assert_allclose(rgb(255, 128, 128, full=True), [255, 255, 255], atol=1e-3)
    # BT.601 limited-range red is (81, 90, 240); BT.709's is (63, 102, 240).
    np.testing.assert_allclose(rgb(81, 90, 240), [255, 0, 0], atol=1.5)
    np.testing.assert_allclose(rgb(63, 102, 240, 709), [255, 0, 0], atol=1.5)


def _tag_rotation(path: Path, quarter_turns_clockwise: int) -> None:
    """Patch the mp4 track header's display matrix, as phones do for portrait clips (90° clockwise = a=0, b=1,
    c=-1, d=0 in 16.16 fixed point)."""
    data = bytearray(path.read_bytes())
    tkhd = data.find(b"tkhd")
    version = data[tkhd + 4]
    matrix_at = tkhd + 8 + (32 if version == 1 else 20) + 16
    one, minus_one = 0x10000, -0x10000 & 0xFFFFFFFF
    a, b, c, d = {1: (0, one, minus_one, 0), 2: (minus_one, 0, 0, minus_one), 3: (0, minus_one, one, 0)}[
        quarter_turns_clockwise
    ]
    data[matrix_at : matrix_at + 36] = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotation_tag_is_honoured_on_both_paths(tmp_path: Path, turns: int) -> None:
    # Coded landscape 96x64: left half red, right half blue.
    coded = np.zeros((64, 96, 3), np.uint8)
    coded[:, :48], coded[:, 48:] = (250, 10, 10), (10, 10, 250)
    path = tmp_path / "phone.mp4"
    write_video(path, [coded] * 3, 24)
    _tag_rotation(path, turns)
    upright = np.rot90(coded, k=-turns)  # what a player shows
    frame = next(iter_decoded_frames(path))
    assert frame.width == 96 and quarter_turns(frame) == (4 - turns) % 4
    h, w = upright.shape[:2]
    fast = fit_video_frame(frame, w, h)
    swscale = frame_to_rgb(frame)
    for got in (fast, swscale):
        assert got.shape == upright.shape
        assert np.abs(got.astype(int) - upright).mean() < 12  # only the colour edge and chroma blur differ
