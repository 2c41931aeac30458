"""Group a dataset folder's files into training examples, enforcing the seeds' layout rules per mode.

i2v: one example per video (or image), paired with the ``.txt`` of the same base name in the same folder.
a2v: one example per base name: ``<name>_start`` (image or video), ``<name>_audio``, ``<name>_end``,
``<name>.txt``.
Only file names are looked at here; media are opened (and may be skipped as unreadable) in ``prepare``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ltxlab.data.media import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS
from ltxlab.data.sources import SourceLimits, iter_files
from ltxlab.errors import DatasetError

log = logging.getLogger(__name__)

MIN_RECOMMENDED = 10  # the seeds: "Aim for at least 10 files"
MAX_CAPTION_BYTES = 16 * 1024  # far beyond any text-encoder context; bounds a hostile multi-GB .txt
CAPTION_EXT = ".txt"


@dataclass
class ClipSource:
    """One training example before decoding."""

    name: str  # unique id: relative path without extension ("sub/clip01" -> "sub__clip01")
    media: Path  # i2v: the video or image; a2v: the _end target video
    kind: str  # "video" | "image"
    caption: str | None  # caption text, whitespace-normalised (None when there is no usable .txt)
    start: Path | None = None  # a2v: _start image or video
    audio: Path | None = None  # a2v: _audio file (None when the _start video is to carry the track)


@dataclass
class Dataset:
    mode: str  # "i2v" | "a2v"
    kind: str  # "video" | "image"
    clips: list[ClipSource]
    warnings: list[str]
    root: Path | None = field(default=None)  # the dataset folder (for relative names in manifests)


def ingest(root: Path, mode: str, trigger_phrase: str = "", limits: SourceLimits | None = None) -> Dataset:
    """Scan ``root`` and return the examples for ``mode``; raises DatasetError on any layout violation.

    ``trigger_phrase`` only matters for a2v's rule that captions are required unless a trigger phrase is set;
    prepending it is ``prepare``'s job (``PrepareSettings.trigger_phrase``).
    """
    root = Path(root).resolve()
    if mode not in ("i2v", "a2v"):
        raise ValueError(f"unknown mode {mode!r}")
    files = list(iter_files(root, limits))
    ds = _ingest_i2v(root, files) if mode == "i2v" else _ingest_a2v(root, files, trigger_phrase.strip())
    ds.root = root
    if len(ds.clips) < MIN_RECOMMENDED:
        unit = "groups" if mode == "a2v" else "files"
        ds.warnings.append(
            f"Only {len(ds.clips)} training {unit} in the dataset; at least {MIN_RECOMMENDED} are recommended"
        )
    log.debug("ingest %s: %d %s example(s), %d warning(s)", mode, len(ds.clips), ds.kind, len(ds.warnings))
    return ds  # warnings are returned, not logged: plan() carries them on and the caller reports them once


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def read_caption(path: Path, root: Path, warnings: list[str]) -> str | None:
    """Caption text (whitespace collapsed), or None when empty; odd encodings are read with a warning."""
    rel = _rel(root, path)
    with open(path, "rb") as f:
        data = f.read(MAX_CAPTION_BYTES + 1)
    if len(data) > MAX_CAPTION_BYTES:
        warnings.append(f"Caption {rel} is longer than {MAX_CAPTION_BYTES} bytes; only the start is used")
        data = data[:MAX_CAPTION_BYTES]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            # A hard failure here would reject a whole dataset over one curly quote; read it as Windows-1252
            # (which maps every byte) and say so, so the user can fix the file.
            text = data.decode("cp1252", errors="replace")
            warnings.append(
                f"Caption {rel} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
                "read it as Windows-1252 — save captions as UTF-8 to be sure of the text"
            )
    text = " ".join("".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text).split())
    if not text:
        warnings.append(f"Caption {rel} is empty")
        return None
    return text


def unique_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3`` ... whichever is not in ``taken`` yet (then added to it)."""
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def _ingest_i2v(root: Path, files: list[Path]) -> Dataset:
    warnings: list[str] = []
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTS]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    captions = {p.with_suffix("").as_posix(): p for p in files if p.suffix.lower() == CAPTION_EXT}
    if videos and images:
        raise DatasetError(
            f"Dataset mixes videos and images ({len(videos)} videos, {len(images)} images): "
            "the archive must contain only videos or only images"
        )
    media = videos or images
    if not media:
        raise DatasetError(
            "No training media found: the archive must contain videos (.mp4 .mov .avi .mkv) "
            "or images (.png .jpg .jpeg)"
        )
    others = [p for p in files if p.suffix.lower() not in VIDEO_EXTS | IMAGE_EXTS | {CAPTION_EXT}]
    if others:
        shown = ", ".join(_rel(root, p) for p in others[:5]) + (" ..." if len(others) > 5 else "")
        warnings.append(f"Ignored {len(others)} file(s) that are not videos, images or captions: {shown}")
    kind = "video" if videos else "image"
    # Names are paths relative to the media's common folder: a zip of "my_dataset/" gives "clip01", not
    # "my_dataset__clip01"; same-named files in different subfolders stay distinct ("a__clip", "b__clip").
    base_dir = Path(os.path.commonpath([p.parent for p in media]))
    stems = defaultdict(list)
    for p in media:
        stems[p.with_suffix("").as_posix()].append(p)
    taken: set[str] = set()
    clips: list[ClipSource] = []
    used_captions: set[str] = set()
    for p in media:
        stem = p.with_suffix("").as_posix()
        base = p.with_suffix("").relative_to(base_dir).as_posix().replace("/", "__")
        if len(stems[stem]) > 1:
            # clip01.mp4 + clip01.mov: both are kept (and share clip01.txt), under distinct names.
            base = f"{base}_{p.suffix.lower()[1:]}"
            warnings.append(
                f"{_rel(root, p)} shares its base name with another file; both use the same caption"
            )
        cap_path = captions.get(stem)
        caption = None
        if cap_path is not None:
            used_captions.add(stem)
            caption = read_caption(cap_path, root, warnings)
        clips.append(ClipSource(name=unique_name(base, taken), media=p, kind=kind, caption=caption))
    orphans = [captions[s] for s in captions if s not in used_captions]
    if orphans:
        shown = ", ".join(_rel(root, p) for p in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        warnings.append(f"{len(orphans)} caption file(s) have no matching {kind}: {shown}")
    uncaptioned = sum(c.caption is None for c in clips)
    if uncaptioned:
        warnings.append(
            f"{uncaptioned} of {len(clips)} {kind}s have no caption (recommended: one .txt per file)"
        )
    return Dataset(mode="i2v", kind=kind, clips=clips, warnings=warnings)


_ROLES = {
    "_start": VIDEO_EXTS | IMAGE_EXTS,
    "_audio": AUDIO_EXTS,
    "_end": VIDEO_EXTS,
}


def _role_of(path: Path) -> tuple[str, str] | None:
    """(base name, role) for an a2v file, or None if it plays no part in a group."""
    stem, ext = path.stem, path.suffix.lower()
    if ext == CAPTION_EXT:
        return stem, "caption"
    for suffix, exts in _ROLES.items():
        if stem.lower().endswith(suffix) and ext in exts and len(stem) > len(suffix):
            return stem[: -len(suffix)], suffix[1:]
    return None


def _exts(exts: set[str]) -> str:
    order = [
        ".png",
        ".jpg",
        ".jpeg",
        ".mp4",
        ".mov",
        ".avi",
        ".mkv",
        ".wav",
        ".mp3",
        ".ogg",
        ".m4a",
        ".aac",
        ".flac",
    ]
    return "/".join(e for e in order if e in exts)


def _groups_msg(names: list[str], problem: str, expected: str) -> str:
    """One line naming the first group (and how many more) that break a rule."""
    first = names[0]
    more = f" (and {len(names) - 1} more group(s): {', '.join(names[1:4])}{' ...' if len(names) > 4 else ''})"
    return f"a2v group '{first}' {problem} (expected {expected.format(name=first)})" + (
        more if len(names) > 1 else ""
    )


def _ingest_a2v(root: Path, files: list[Path], trigger_phrase: str) -> Dataset:
    warnings: list[str] = []
    by_filename: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        by_filename[p.name].append(p)
    dupes = {n: ps for n, ps in by_filename.items() if len(ps) > 1}
    if dupes:
        n, ps = next(iter(sorted(dupes.items())))
        raise DatasetError(
            f"File name '{n}' appears {len(ps)} times ({', '.join(_rel(root, p) for p in ps[:3])}): "
            "a2v file names must be unique across the archive"
        )
    groups: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    ignored: list[Path] = []
    for p in files:
        role = _role_of(p)
        if role is None:
            ignored.append(p)
        else:
            groups[role[0]][role[1]].append(p)
    if ignored:
        shown = ", ".join(_rel(root, p) for p in ignored[:5]) + (" ..." if len(ignored) > 5 else "")
        warnings.append(
            f"Ignored {len(ignored)} file(s) that are not part of an a2v group "
            f"(<name>_start / <name>_audio / <name>_end / <name>.txt): {shown}"
        )
    media_groups = {b: g for b, g in sorted(groups.items()) if set(g) - {"caption"}}
    orphans = [g["caption"][0] for b, g in sorted(groups.items()) if b not in media_groups]
    if orphans:
        shown = ", ".join(_rel(root, p) for p in orphans[:5])
        warnings.append(f"{len(orphans)} caption file(s) match no a2v group: {shown}")
    if not media_groups:
        raise DatasetError(
            "No a2v groups found: each example needs <name>_start.(png|jpg|jpeg|mp4|mov|avi|mkv), "
            "<name>_audio.(wav|mp3|ogg|m4a|aac|flac) or an audio track in the _start video, "
            "and <name>_end.(mp4|mov|avi|mkv)"
        )
    for role in ("start", "audio", "end"):
        multi = [b for b, g in media_groups.items() if len(g.get(role, [])) > 1]
        if multi:
            ps = media_groups[multi[0]][role]
            raise DatasetError(
                f"a2v group '{multi[0]}' has {len(ps)} _{role} files "
                f"({', '.join(p.name for p in ps)}): keep exactly one"
            )
    missing_start = [b for b, g in media_groups.items() if "start" not in g]
    if missing_start:
        raise DatasetError(
            _groups_msg(
                missing_start,
                "has no _start image or video",
                "{name}_start" + "." + _exts(VIDEO_EXTS | IMAGE_EXTS)[1:],
            )
        )
    missing_end = [b for b, g in media_groups.items() if "end" not in g]
    if missing_end:
        raise DatasetError(
            _groups_msg(missing_end, "has no _end target video", "{name}_end" + "." + _exts(VIDEO_EXTS)[1:])
        )
    no_audio = [
        b for b, g in media_groups.items() if "audio" not in g and g["start"][0].suffix.lower() in IMAGE_EXTS
    ]
    if no_audio:
        raise DatasetError(
            _groups_msg(
                no_audio,
                "has no audio source",
                "{name}_audio." + _exts(AUDIO_EXTS)[1:] + ", or a {name}_start video with an audio track",
            )
        )
    clips: list[ClipSource] = []
    missing_caption: list[str] = []
    for base, g in media_groups.items():
        caption = read_caption(g["caption"][0], root, warnings) if "caption" in g else None
        if caption is None and not trigger_phrase:
            missing_caption.append(base)
        audio = g["audio"][0] if "audio" in g else None
        clips.append(
            ClipSource(
                name=base, media=g["end"][0], kind="video", caption=caption, start=g["start"][0], audio=audio
            )
        )
    if missing_caption:
        raise DatasetError(
            _groups_msg(missing_caption, "has no caption", "a non-empty {name}.txt, or set trigger_phrase")
        )
    return Dataset(mode="a2v", kind="video", clips=clips, warnings=warnings)
