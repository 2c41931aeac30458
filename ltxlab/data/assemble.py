"""Decode → fit → attach audio, streamed: one job per source file, ``num_workers`` in flight, in plan order.

A job decodes its source once (even when it was split into several scenes), fits only the frames the plan
selected (``frame_fit``: no full-frame RGB conversion) into bucket-sized clip buffers from a :class:`FramePool`,
and hands each finished clip to the consumer through a small bounded queue, so memory holds only kept frames of
the few clips in flight, never a whole decoded video.
"""

from __future__ import annotations

import logging
import math
import mmap
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ltxlab.data.fit import fit_audio, peak_normalize, resize_fill_center_crop
from ltxlab.data.frame_fit import fit_video_frame, read_fitted_still
from ltxlab.data.media import MediaError, iter_decoded_frames, read_audio, read_image
from ltxlab.data.prepared import PlanItem, PreparedClip, PreparePlan, PrepareSettings, final_caption
from ltxlab.errors import DatasetError

log = logging.getLogger(__name__)

_DONE = object()
_QUEUE_DEPTH = 2  # finished clips a job may hold before it waits for the consumer
_TRAILING_SLACK = (
    2  # frames a stream may come up short (header estimates) before the clip counts as truncated
)


@dataclass
class _Skip:
    name: str
    reason: str


@dataclass
class _Failure:
    error: BaseException


class _Cancelled(Exception):
    pass


class FramePool:
    """Clip-sized frame buffers, reused once consumers hand them back (:meth:`PreparedClip.release`).

    A clip is tens to hundreds of MB; allocating it fresh means page faults and zeroing on every clip, which
    costs as much as fitting its frames. Buffers are plain anonymous mappings: numpy would advise huge pages
    for them, and a huge-page fault can stall on memory compaction (measured on a 2-core VM: the same prepare
    run took 0.45 s or up to 0.75 s).
    """

    def __init__(self, shape: tuple[int, ...], keep: int) -> None:
        self.shape, self.keep = shape, keep
        self._free: list[np.ndarray] = []
        self._issued: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def take(self) -> np.ndarray:
        with self._lock:
            if self._free:
                return self._free.pop()
        region = mmap.mmap(-1, math.prod(self.shape), flags=mmap.MAP_PRIVATE)
        buf = np.frombuffer(region, np.uint8).reshape(self.shape)
        with self._lock:
            self._issued[id(buf)] = buf
        return buf

    def give_back(self, buf: np.ndarray) -> None:
        with self._lock:
            if self._issued.get(id(buf)) is buf and len(self._free) < self.keep:
                self._free.append(buf)


def _put(q: queue.Queue, obj: object, cancel: threading.Event) -> None:
    while True:
        if cancel.is_set():
            raise _Cancelled
        try:
            q.put(obj, timeout=0.1)
            return
        except queue.Full:
            continue


def _jobs(items: list[PlanItem]) -> list[list[PlanItem]]:
    """Consecutive items from the same source file form one job (their scenes share one decode pass)."""
    jobs: list[list[PlanItem]] = []
    for it in items:
        if jobs and jobs[-1][0].clip is it.clip:
            jobs[-1].append(it)
        else:
            jobs.append([it])
    return jobs


def _start_frame(it: PlanItem, s: PrepareSettings) -> np.ndarray:
    """The a2v start image, fitted to the bucket (a _start image, or the first frame of a _start video)."""
    assert it.clip.start is not None
    return read_fitted_still(it.clip.start, s.width, s.height, s.limits, threaded=s.num_workers <= 1)


def clip_fps(it: PlanItem, s: PrepareSettings, num_frames: int) -> float:
    """The rate the clip is trained at: with auto_scale_input every clip is resampled to data.frame_rate (a
    too-short one is stretched to it); without, it keeps its own timing, its frames over the source seconds
    they cover (the source rate). Stills take data.frame_rate."""
    if s.auto_scale_input or it.duration_s <= 0 or num_frames <= 1:
        return float(s.frame_rate)
    return round(num_frames / it.duration_s, 6)


def _clip_audio(plan: PreparePlan, it: PlanItem, track: np.ndarray, num_frames: int) -> np.ndarray:
    """Cut the item's span out of the track and fit it to the clip's real duration (num_frames / clip_fps)."""
    s = plan.settings
    sr = s.sample_rate
    scale = 1.0
    if s.mode == "a2v" and s.audio_preserve_pitch and it.src_duration_s > 0:
        # The conditioning audio is fitted (stretched) to the target video's duration: map the span onto it.
        scale = (track.shape[1] / sr) / it.src_duration_s
    a = round(it.start_s * scale * sr)
    b = round((it.start_s + it.duration_s) * scale * sr)
    piece = track[:, a:b]
    if (
        piece.shape[1] < b - a
    ):  # the track ends before the span does: that is silence, not a reason to stretch
        piece = np.pad(piece, ((0, 0), (0, b - a - piece.shape[1])))
    out = fit_audio(piece, sr, num_frames / clip_fps(it, s, num_frames), s.audio_preserve_pitch)
    if s.audio_normalize:
        out = peak_normalize(out)
    return out.astype(np.float32, copy=False)


def _run_job(
    plan: PreparePlan, job: list[PlanItem], q: queue.Queue, cancel: threading.Event, pool: FramePool
) -> None:
    try:
        for obj in _job_outputs(plan, job, pool, cancel):
            _put(q, obj, cancel)
        _put(q, _DONE, cancel)
    except _Cancelled:
        return
    except BaseException as e:  # an internal failure: surfaced to the consumer, which re-raises it
        try:
            _put(q, _Failure(e), cancel)
        except _Cancelled:
            return


def _job_outputs(
    plan: PreparePlan, job: list[PlanItem], pool: FramePool, cancel: threading.Event | None = None
) -> Iterator[PreparedClip | _Skip]:
    s = plan.settings
    clip = job[0].clip
    caption = final_caption(clip.caption, s.trigger_phrase)

    def made(it: PlanItem, frames: np.ndarray, audio: np.ndarray | None) -> PreparedClip:
        fps = clip_fps(it, s, frames.shape[0])
        return PreparedClip(it.name, caption, frames, fps, audio, it.source, pool.give_back)

    if plan.is_image:
        it = job[0]
        try:
            img = resize_fill_center_crop(read_image(clip.media, s.limits), s.width, s.height)
        except MediaError as e:
            yield _Skip(it.name, f"unreadable: {e}")
            return
        yield made(it, img[None], None)
        return

    track = None
    start_img = None
    try:
        if plan.with_audio:
            src = clip.media if s.mode == "i2v" else (clip.audio or clip.start)
            assert src is not None
            track = read_audio(src, s.sample_rate, 2, s.limits)
        if any(it.use_start for it in job):
            start_img = _start_frame(job[0], s)
    except MediaError as e:
        for it in job:
            yield _Skip(it.name, f"unreadable: {e}")
        return

    # Where each needed source frame goes: source index -> [(item number, output position)].
    wanted: dict[int, list[tuple[int, int]]] = {}
    for k, it in enumerate(job):
        for pos, idx in enumerate(it.indices):
            wanted.setdefault(idx, []).append((k, pos))
    last_needed = [max(it.indices) for it in job]
    bufs: list[np.ndarray | None] = [None] * len(job)
    filled = [0] * len(job)
    emitted = 0
    stop = max(last_needed)
    seen = -1
    error: MediaError | None = None
    frames = iter_decoded_frames(clip.media, s.limits, threaded=s.num_workers <= 1)
    try:
        for i, frame in enumerate(frames):
            seen = i
            targets = wanted.get(i)
            if targets:
                first: np.ndarray | None = None
                for k, pos in targets:
                    if bufs[k] is None:
                        bufs[k] = pool.take()
                    if first is None:  # fit straight into the clip's buffer; repeats (auto-scale) copy it
                        first = fit_video_frame(frame, s.width, s.height, out=bufs[k][pos])
                    else:
                        bufs[k][pos] = first
                    filled[k] += 1
            # Hand over every item whose frames are complete, in order, as soon as possible.
            while emitted < len(job) and last_needed[emitted] <= i:
                yield _finish(plan, job[emitted], bufs[emitted], track, start_img, made)
                bufs[emitted] = None
                emitted += 1
            if i >= stop:
                break
            if cancel is not None and cancel.is_set():
                raise _Cancelled  # the consumer went away: stop decoding now, not at the next clip
    except MediaError as e:
        error = e
    finally:
        frames.close()
    for k in range(emitted, len(job)):
        it = job[k]
        buf = bufs[k]
        short = last_needed[k] - seen
        if error is None and buf is not None and 0 < short <= _TRAILING_SLACK and filled[k] > 0:
            # The header promised a frame or two more than the stream holds: repeat the last real frame.
            last_pos = max(p for p, idx in enumerate(it.indices) if idx <= seen)
            for p, idx in enumerate(it.indices):
                if idx > seen:
                    buf[p] = buf[last_pos]
            yield _finish(plan, it, buf, track, start_img, made)
        else:
            why = str(error) if error else f"{clip.media.name}: stream ended after {seen + 1} frames"
            if buf is not None:
                pool.give_back(buf)
            yield _Skip(it.name, f"truncated or corrupt: {why}")
        bufs[k] = None


def _finish(
    plan: PreparePlan,
    it: PlanItem,
    buf: np.ndarray,
    track: np.ndarray | None,
    start_img: np.ndarray | None,
    made: Callable[[PlanItem, np.ndarray, np.ndarray | None], PreparedClip],
) -> PreparedClip:
    if it.use_start and start_img is not None:
        buf[0] = start_img  # the a2v assembly: the start image is the clip's first frame
    audio = _clip_audio(plan, it, track, buf.shape[0]) if track is not None else None
    return made(it, buf, audio)


def run_items(plan: PreparePlan) -> Iterator[PreparedClip]:
    """Yield a PreparedClip per plan item (skipping, and recording in ``plan.skipped``, those that fail)."""
    jobs = _jobs(plan.items)
    workers = max(1, plan.settings.num_workers)
    cancel = threading.Event()
    s = plan.settings
    # Buffers in use at once: one filling per worker, finished ones queued, and the consumer's.
    pool = FramePool((s.number_of_frames, s.height, s.width, 3), keep=workers + _QUEUE_DEPTH + 1)
    queues: list[queue.Queue] = [queue.Queue(maxsize=_QUEUE_DEPTH) for _ in jobs]
    produced = 0
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")
    submitted = 0
    # The workers already fill the cores: OpenCV's own resize threads would only oversubscribe them.
    cv_threads = cv2.getNumThreads()
    if workers > 1:
        cv2.setNumThreads(1)
    try:
        for k in range(len(jobs)):
            while submitted < len(jobs) and submitted < k + workers:
                executor.submit(_run_job, plan, jobs[submitted], queues[submitted], cancel, pool)
                submitted += 1
            while (msg := queues[k].get()) is not _DONE:
                if isinstance(msg, _Failure):
                    raise msg.error
                if isinstance(msg, _Skip):
                    plan.skipped.append((msg.name, msg.reason))
                    log.warning("Skipping %s: %s", msg.name, msg.reason)
                    continue
                produced += 1
                yield msg
    finally:
        cv2.setNumThreads(cv_threads)
        cancel.set()  # unblocks workers waiting on a full queue if the consumer stopped early
        executor.shutdown(wait=True, cancel_futures=True)
    if produced == 0:
        reasons = "; ".join(f"{n}: {r}" for n, r in plan.skipped[-3:])
        raise DatasetError(f"No usable training clips: every planned clip failed to decode ({reasons})")
