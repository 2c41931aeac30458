"""Shot detection with PySceneDetect's ContentDetector, fed from our own (allow-listed, streaming) decoder.

PySceneDetect's own video backends would open the file themselves, bypassing the container allow-list in
``ltxlab.data.media``; so frames come from :func:`iter_decoded_frames` and are downscaled while converting to RGB
(``frame_fit``: only the small frame is converted). Cut detection compares HSV deltas, which need no detail.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import cv2
import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detectors import ContentDetector

from ltxlab.data.frame_fit import fit_video_frame
from ltxlab.data.media import MediaLimits, iter_decoded_frames

ANALYSIS_WIDTH = 256


def _small_bgr(frame: av.VideoFrame) -> np.ndarray:
    w, h = frame.width, frame.height
    if w > ANALYSIS_WIDTH:
        w, h = ANALYSIS_WIDTH, max(1, round(h * ANALYSIS_WIDTH / w))
    return cv2.cvtColor(fit_video_frame(frame, w, h), cv2.COLOR_RGB2BGR)  # the detector expects BGR order


def detect_scenes(
    path: Path,
    fps: float,
    limits: MediaLimits,
    threshold: float = 27.0,
    min_scene_len: int = 15,
) -> list[tuple[int, int]]:
    """Scenes of a video as ``[start, end)`` frame ranges covering every decoded frame, in order.

    Raises :class:`~ltxlab.data.media.MediaError` if the file cannot be decoded.
    """
    detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
    fps = float(fps)  # FrameTimecode refuses ints
    cuts: list[int] = []
    count = 0
    for i, frame in enumerate(iter_decoded_frames(path, limits)):
        cuts += [tc.frame_num for tc in detector.process_frame(FrameTimecode(i, fps), _small_bgr(frame))]
        count = i + 1
    if count:
        cuts += [tc.frame_num for tc in detector.post_process(FrameTimecode(count - 1, fps))]
    bounds = [0, *sorted({c for c in cuts if 0 < c < count}), count]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
