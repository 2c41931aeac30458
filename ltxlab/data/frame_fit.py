"""A decoded video frame → the bucket-sized RGB array training uses, converting only the pixels that survive.

Converting a whole frame to RGB with swscale and then resizing it costs about twice the decode itself. For 8-bit
4:2:0 frames (what nearly every H.264/HEVC/VP9/AV1 clip decodes to) the fill-and-crop box is cut out of the Y, U
and V planes first, each plane is resampled straight to the bucket size, and one colour-matrix pass (the frame's
BT.601/709/2020 matrix and limited/full range, as swscale would use) makes RGB. Other pixel formats go through
swscale's RGB and :func:`resize_fill_center_crop`. Both paths apply the same :func:`fill_crop_box` geometry to
the upright picture (a rotation tag, as phones write for portrait clips, is honoured).
"""

from __future__ import annotations

import functools
from pathlib import Path

import av
import cv2
import numpy as np

from ltxlab.data.fit import fill_crop_box, resample, resize_fill_center_crop
from ltxlab.data.media import (
    IMAGE_EXTS,
    MediaLimits,
    frame_to_rgb,
    iter_decoded_frames,
    quarter_turns,
    read_image,
    rotate_upright,
)

_FAST_FORMATS = {"yuv420p": False, "yuvj420p": True}  # pixel format -> full range implied by the format
_KR_KB = {601: (0.299, 0.114), 709: (0.2126, 0.0722), 2020: (0.2627, 0.0593)}
# AVColorSpace codes with their own matrix; unspecified and the rest use FFmpeg's default, BT.601.
_STANDARD_OF_COLORSPACE = {1: 709, 9: 2020, 10: 2020}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@functools.cache
def yuv_to_rgb_matrix(standard: int, full_range: bool) -> np.ndarray:
    """3×4 affine map from (Y, U, V, 1) to (R, G, B), 8-bit code values (for ``cv2.transform``)."""
    kr, kb = _KR_KB[standard]
    kg = 1.0 - kr - kb
    y_gain, c_gain, y_offset = (1.0, 1.0, 0.0) if full_range else (255 / 219, 255 / 224, 16.0)
    coeffs = np.array(
        [
            [y_gain, 0.0, c_gain * 2 * (1 - kr)],
            [y_gain, -c_gain * 2 * kb * (1 - kb) / kg, -c_gain * 2 * kr * (1 - kr) / kg],
            [y_gain, c_gain * 2 * (1 - kb), 0.0],
        ]
    )
    offset = -coeffs @ np.array([y_offset, 128.0, 128.0])
    return np.concatenate([coeffs, offset[:, None]], axis=1).astype(np.float32)


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    rows = np.frombuffer(plane, np.uint8, count=plane.line_size * plane.height)
    return rows.reshape(plane.height, plane.line_size)[:, : plane.width]


def fit_video_frame(frame: av.VideoFrame, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """``frame``, turned upright, resized to fill ``width``×``height`` and centre-cropped, as H×W×3 uint8 RGB."""
    implied_full = _FAST_FORMATS.get(frame.format.name)
    if implied_full is None or any(p.line_size <= 0 for p in frame.planes):
        return resize_fill_center_crop(frame_to_rgb(frame), width, height, out)
    turns = quarter_turns(frame)
    upright_w, upright_h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    box = fill_crop_box(upright_w, upright_h, width, height)
    x0, y0, box_w, box_h = box.x0, box.y0, box.width, box.height
    if turns % 2:  # the box is centred, so in coded (unrotated) coordinates it is the same box, axes swapped
        x0, y0, box_w, box_h = y0, x0, box_h, box_w
    # Chroma is half size: the same box at half resolution (rounded outwards so it is never empty).
    chroma = (slice(y0 // 2, (y0 + box_h + 1) // 2), slice(x0 // 2, (x0 + box_w + 1) // 2))
    cropped = [_plane(frame, 0)[y0 : y0 + box_h, x0 : x0 + box_w], _plane(frame, 1)[chroma], _plane(frame, 2)[chroma]]
    shrinks = [box.shrink, max(1, box.shrink // 2), max(1, box.shrink // 2)]
    planes = [resample(rotate_upright(p, turns), width, height, k) for p, k in zip(cropped, shrinks, strict=True)]
    standard = _STANDARD_OF_COLORSPACE.get(int(frame.colorspace or 0), 601)
    full_range = implied_full or int(frame.color_range or 0) == _FULL_RANGE
    if out is None:
        out = np.empty((height, width, 3), np.uint8)
    return cv2.transform(cv2.merge(planes), yuv_to_rgb_matrix(standard, full_range), dst=out)


def read_fitted_still(
    path: Path, width: int, height: int, limits: MediaLimits | None = None, threaded: bool = True
) -> np.ndarray:
    """An image, or a video's first frame (a2v ``_start.mp4``), fitted to ``width``×``height`` RGB."""
    limits = limits or MediaLimits()
    if path.suffix.lower() in IMAGE_EXTS:
        return resize_fill_center_crop(read_image(path, limits), width, height)
    frames = iter_decoded_frames(path, limits, threaded)
    try:
        return fit_video_frame(next(frames), width, height)
    finally:
        frames.close()
