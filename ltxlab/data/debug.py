"""The ``debug_dataset`` archive: what preprocessing produced, for a person to inspect.

Layout of the zip::

    manifest.json          mode, settings, audio decision, kept clips (source, frames, size, audio), skipped
    clips/<name>.mp4       the fitted clip (H.264) with its prepared audio track (AAC) when audio is on
    clips/<name>.png       image datasets: the fitted still instead of an mp4
    clips/<name>.txt       the final caption (trigger phrase prepended)

Clips are added one at a time while the stream is consumed (nothing is held back), the manifest last.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ltxlab.data.media_write import write_image, write_video
from ltxlab.data.prepared import PreparedClip, PreparePlan


class DebugArchiveWriter:
    """Streaming writer: ``add(clip)`` per prepared clip, then ``close()`` (or a ``with`` block)."""

    def __init__(self, plan: PreparePlan, zip_path: Path) -> None:
        self.plan = plan
        self.zip_path = Path(zip_path)
        self.zip_path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self.zip_path.with_name(self.zip_path.name + ".part")
        self._tmp = tempfile.TemporaryDirectory(dir=self.zip_path.parent, prefix=".debug-")
        self._zip = zipfile.ZipFile(self._part, "w", compression=zipfile.ZIP_DEFLATED)
        self._kept: list[dict[str, Any]] = []
        self._names: set[str] = set()

    def add(self, clip: PreparedClip) -> None:
        name = clip.name
        if name in self._names:
            raise ValueError(f"clip {name!r} added twice")
        self._names.add(name)
        tmp = Path(self._tmp.name)
        f, h, w = clip.frames.shape[:3]
        if f == 1 and clip.audio is None:
            media, arc = tmp / "clip.png", f"clips/{name}.png"
            write_image(media, clip.frames[0])
        else:
            media, arc = tmp / "clip.mp4", f"clips/{name}.mp4"
            write_video(
                media,
                clip.frames,
                round(clip.fps),
                audio=clip.audio,
                sample_rate=self.plan.settings.sample_rate,
            )
        self._zip.write(media, arc, compress_type=zipfile.ZIP_STORED)  # already compressed media
        media.unlink()
        self._zip.writestr(f"clips/{name}.txt", clip.caption + "\n")
        entry: dict[str, Any] = {
            "name": name,
            "source": clip.source,
            "file": arc,
            "caption": clip.caption,
            "frames": int(f),
            "width": int(w),
            "height": int(h),
            "fps": clip.fps,
            "audio_seconds": None
            if clip.audio is None
            else round(clip.audio.shape[1] / self.plan.settings.sample_rate, 4),
        }
        item = next((it for it in self.plan.items if it.name == name), None)
        if item is not None:
            if item.scene is not None:
                entry["scene_frames"] = list(item.scene)
            if item.clip.start is not None:
                entry["start"] = item.clip.start.name
                entry["start_used_as_frame_0"] = item.use_start
                entry["audio_source"] = (item.clip.audio or item.clip.start).name
            entry["source_span_s"] = [round(item.start_s, 4), round(item.duration_s, 4)]
        self._kept.append(entry)

    def close(self) -> None:
        if self._zip.fp is None:
            return
        settings = dataclasses.asdict(self.plan.settings)
        manifest = {
            "mode": self.plan.settings.mode,
            "kind": "image" if self.plan.is_image else "video",
            "settings": settings,
            "with_audio": self.plan.with_audio,
            "audio_decision": self.plan.audio_reason,
            "kept": self._kept,
            "skipped": [{"name": n, "reason": r} for n, r in self.plan.skipped],
            "warnings": list(self.plan.warnings),
        }
        self._zip.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
        self._zip.close()
        self._tmp.cleanup()
        self._part.replace(self.zip_path)

    def __enter__(self) -> DebugArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # never leave a half-written archive behind
            self._zip.close()
            self._tmp.cleanup()
            self._part.unlink(missing_ok=True)


def write_debug_archive(plan: PreparePlan, clips: Iterable[PreparedClip], zip_path: Path) -> None:
    """Write the debug archive for ``clips`` (an iterable, e.g. ``iter_prepared(plan)``) to ``zip_path``."""
    with DebugArchiveWriter(plan, zip_path) as writer:
        for clip in clips:
            writer.add(clip)
            clip.release()
