"""Prepare stage: decide what will be trained (plan), then decode → fit → attach audio as a stream.

:func:`plan` probes every file (headers only; videos longer than the scene threshold are also decoded once for
shot detection), applies the clip-length rule, the all-or-nothing audio rule and the a2v audio rule, and
raises a :class:`DatasetError` for any request-level problem: bad input fails before anything expensive.
:func:`iter_prepared` then yields fitted clips in plan order (see ``ltxlab.data.assemble``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ltxlab.data.assemble import run_items
from ltxlab.data.debug import write_debug_archive
from ltxlab.data.fit import MAX_FRAMES, MIN_FRAMES, select_frames, snap_frames
from ltxlab.data.ingest import ClipSource, Dataset, unique_name
from ltxlab.data.media import (
    IMAGE_EXTS,
    MediaError,
    VideoInfo,
    has_audio_stream,
    probe_video,
    read_audio,
    read_image,
)
from ltxlab.data.prepared import PlanItem, PreparedClip, PreparePlan, PrepareSettings, final_caption
from ltxlab.data.scenes import detect_scenes
from ltxlab.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = [
    "PlanItem",
    "PreparePlan",
    "PrepareSettings",
    "PreparedClip",
    "final_caption",
    "iter_prepared",
    "plan",
    "write_debug_archive",
]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rel(ds: Dataset, path: Path) -> str:
    # Not resolved: a (dataset-internal) symlinked clip is reported under its own name, not its target's.
    if ds.root is not None and path.is_relative_to(ds.root):
        return path.relative_to(ds.root).as_posix()
    return path.name


PROGRESS_EVERY_S = 10.0  # a progress line at most this often while probing (no silent minute on big datasets)


def _pmap(fn: Callable[[T], Any], clips: list[T], workers: int, what: str = "probing") -> list[Any]:
    """fn over clips in a thread pool (PyAV/OpenCV release the GIL); MediaErrors are returned, not raised.
    Logs ``probing 120/800 file(s)`` lines while it runs."""
    started = last = time.monotonic()

    def progress(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or (done == len(clips) and now - started >= PROGRESS_EVERY_S):
            last = now
            log.info("%s %d/%d file(s), %.0f s", what, done, len(clips), now - started)

    def safe(c: T) -> Any:
        try:
            return fn(c)
        except MediaError as e:
            return e

    if clips:
        log.info("%s %d file(s)", what, len(clips))
    if workers <= 1 or len(clips) <= 1:
        results = []
        for c in clips:
            results.append(safe(c))
            progress(len(results))
        return results
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = []
        for result in ex.map(safe, clips):
            results.append(result)
            progress(len(results))
        return results


def _check_settings(s: PrepareSettings, ds: Dataset) -> tuple[PrepareSettings, list[str]]:
    if s.mode != ds.mode:
        raise ValueError(f"settings are for mode {s.mode!r} but the dataset was ingested for {ds.mode!r}")
    if not MIN_FRAMES <= s.number_of_frames <= MAX_FRAMES:
        raise ConfigError(f"number_of_frames must be in {MIN_FRAMES}..{MAX_FRAMES}, got {s.number_of_frames}")
    if not 1.0 <= s.split_input_duration_threshold <= 60.0:
        raise ConfigError(
            f"split_input_duration_threshold must be in 1.0..60.0, got {s.split_input_duration_threshold}"
        )
    snapped = snap_frames(s.number_of_frames)
    if snapped == s.number_of_frames:
        return s, []
    msg = f"number_of_frames {s.number_of_frames} snapped down to {snapped} (must be 8k+1)"
    return dataclasses.replace(s, number_of_frames=snapped), [msg]


def plan(dataset: Dataset, settings: PrepareSettings) -> PreparePlan:
    """Decide every kept/skipped clip and the audio mode before heavy decoding; raises DatasetError."""
    s, warnings = _check_settings(settings, dataset)
    warnings += dataset.warnings
    skipped: list[tuple[str, str]] = []
    clips = dataset.clips
    if dataset.kind == "image":
        return _plan_images(dataset, s, warnings)

    probes = _pmap(lambda c: probe_video(c.media, s.limits), clips, s.num_workers)
    usable: list[tuple[ClipSource, VideoInfo]] = []
    for clip, info in zip(clips, probes, strict=True):
        if isinstance(info, MediaError):
            skipped.append((clip.name, f"unreadable: {info}"))
        else:
            usable.append((clip, info))
    if dataset.mode == "a2v":
        usable = _check_a2v_sources(dataset, usable, s, skipped)

    # Scene splitting: only videos over the threshold (a2v: the assembled clip has the _end target's length).
    def scenes_of(pair: tuple[ClipSource, VideoInfo]) -> list[tuple[int, int]] | None:
        clip, info = pair
        if not s.split_input_into_scenes or info.duration_s <= s.split_input_duration_threshold:
            return None
        return detect_scenes(clip.media, info.fps, s.limits, threshold=s.scene_threshold)

    scene_lists = _pmap(scenes_of, usable, s.num_workers, what="checking for scenes in")
    items: list[PlanItem] = []
    taken = {clip.name for clip in clips}
    too_short: list[int] = []  # lengths of clips/scenes rejected by the clip-length rule
    n = s.number_of_frames
    for (clip, info), scenes in zip(usable, scene_lists, strict=True):
        if isinstance(scenes, MediaError):
            skipped.append((clip.name, f"unreadable: {scenes}"))
            continue
        segments = scenes if scenes else [(0, info.num_frames)]
        if scenes:
            log.info("%s: %d scene(s) detected", clip.name, len(scenes))
        for k, (a, b) in enumerate(segments):
            # Scene names must not collide with another clip's name (a file may be called long_scene001.mp4).
            name = unique_name(f"{clip.name}_scene{k + 1:03d}", taken) if len(segments) > 1 else clip.name
            sel = select_frames(b - a, info.fps, n, s.frame_rate, s.auto_scale_input)
            if sel is None:
                too_short.append(b - a)
                what = "scene" if len(segments) > 1 else "video"
                skipped.append(
                    (name, f"too short: {what} has {b - a} frames, needs {n} (auto_scale_input is off)")
                )
                log.debug("Skipping %s: %s", name, skipped[-1][1])
                continue
            items.append(
                PlanItem(
                    name=name,
                    clip=clip,
                    source=_rel(dataset, clip.media),
                    indices=[a + i for i in sel.indices],
                    start_s=a / info.fps + sel.start_s,
                    duration_s=sel.duration_s,
                    src_duration_s=info.duration_s,
                    use_start=dataset.mode == "a2v" and a == 0,
                    scene=(a, b) if len(segments) > 1 else None,
                )
            )
    if not items:
        _raise_nothing_left(dataset, skipped, too_short, n)
    p = PreparePlan(s, False, False, items, skipped, warnings, root=dataset.root)
    if dataset.mode == "a2v":
        p.with_audio, p.audio_reason = True, "a2v: the conditioning audio is always used"
    else:
        p.with_audio, p.audio_reason = _decide_audio(dataset, s, items, {c.name: i for c, i in usable})
    log.info("Audio: %s", p.audio_reason)
    return p


def _plan_images(dataset: Dataset, s: PrepareSettings, warnings: list[str]) -> PreparePlan:
    if s.with_audio is True:
        raise DatasetError("with_audio=true but the dataset is images, which have no audio track: use videos")
    results = _pmap(lambda c: read_image(c.media, s.limits).shape, dataset.clips, s.num_workers)
    items, skipped = [], []
    for clip, res in zip(dataset.clips, results, strict=True):
        if isinstance(res, MediaError):
            skipped.append((clip.name, f"unreadable: {res}"))
        else:
            items.append(PlanItem(clip.name, clip, _rel(dataset, clip.media), [0], 0.0, 0.0, 0.0))
    if not items:
        _raise_nothing_left(dataset, skipped, [], 1)
    reason = "images have no audio" + (" (with_audio=false)" if s.with_audio is False else "")
    return PreparePlan(s, False, True, items, skipped, warnings, audio_reason=reason, root=dataset.root)


def _check_a2v_sources(
    ds: Dataset,
    usable: list[tuple[ClipSource, VideoInfo]],
    s: PrepareSettings,
    skipped: list[tuple[str, str]],
) -> list[tuple[ClipSource, VideoInfo]]:
    """Every group needs usable audio (else the request is rejected); an unreadable start skips the group."""

    def check(pair: tuple[ClipSource, VideoInfo]) -> str | None:
        clip = pair[0]
        assert clip.start is not None
        try:
            if clip.start.suffix.lower() in IMAGE_EXTS:
                read_image(clip.start, s.limits)
            else:
                probe_video(clip.start, s.limits)
        except MediaError as e:
            return f"start unreadable: {e}"
        src = clip.audio or clip.start
        try:
            if clip.audio is None and not has_audio_stream(clip.start, s.limits):
                raise DatasetError(
                    f"a2v group '{clip.name}' has no usable audio: {clip.start.name} has no audio track "
                    f"and there is no {clip.name}_audio file (.wav/.mp3/.ogg/.m4a/.aac/.flac)"
                )
            audio = read_audio(src, s.sample_rate, 2, s.limits)
        except MediaError as e:
            raise DatasetError(f"a2v group '{clip.name}' has no usable audio: {e}") from None
        if audio.shape[1] < s.sample_rate // 100:
            raise DatasetError(f"a2v group '{clip.name}' has no usable audio: {src.name} is empty")
        return None

    results = _pmap(check, usable, s.num_workers)
    kept = []
    for pair, res in zip(usable, results, strict=True):
        if isinstance(res, Exception):
            raise res
        if res:
            skipped.append((pair[0].name, res))
        else:
            kept.append(pair)
    return kept


def _raise_nothing_left(ds: Dataset, skipped: list[tuple[str, str]], too_short: list[int], n: int) -> None:
    unreadable = [f"{name} ({why})" for name, why in skipped if not why.startswith("too short")]
    if too_short:
        extra = f"; {len(unreadable)} more could not be read" if unreadable else ""
        split = any(why.startswith("too short: scene") for _, why in skipped)
        fixes = "auto_scale_input, set split_input_into_scenes=false" if split else "auto_scale_input"
        raise DatasetError(
            f"All training videos are too short to be trainable (need at least {n} frames; longest "
            f"{'scene' if split else 'video'} has {max(too_short)}{extra}). Turn on {fixes} or lower number_of_frames."
        )
    kind = "images" if ds.kind == "image" else "videos"
    shown = "; ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else "")
    raise DatasetError(f"No usable training {kind}: all {len(skipped)} could not be read: {shown}")


def _decide_audio(
    ds: Dataset, s: PrepareSettings, items: list[PlanItem], infos: dict[str, VideoInfo]
) -> tuple[bool, str]:
    """The seeds' all-or-nothing rule over the clips that will be trained."""
    kept = list({id(it.clip): it.clip for it in items}.values())
    silent = [_rel(ds, c.media) for c in kept if not infos[c.name].has_audio]
    shown = ", ".join(silent[:10]) + (" ..." if len(silent) > 10 else "")
    if s.with_audio is False:
        return False, "with_audio=false: audio ignored"
    if s.with_audio is True:
        if silent:
            raise DatasetError(
                f"with_audio=true but {_count(len(silent), 'clip')} {'has' if len(silent) == 1 else 'have'} "
                f"no audio track: {shown}. "
                "Remove them or set with_audio to null/false."
            )
        return True, "with_audio=true: every clip has an audio track"
    if silent:
        return (
            False,
            f"with_audio=null: {len(silent)} of {len(kept)} clips have no audio track ({shown}): video-only",
        )
    return True, f"with_audio=null: all {len(kept)} clips have an audio track: joint audio training"


def iter_prepared(plan: PreparePlan) -> Iterator[PreparedClip]:
    """Decode, fit and attach audio to every planned item, in plan order, using ``num_workers`` threads."""
    yield from run_items(plan)
