"""The latent cache: a fingerprint of everything that shapes the encoded data, and atomic builds.

Reusing latents made by another model version, resolution or audio setting silently degrades a LoRA, so every
input that changes the bytes goes into the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltxlab.data.shards import INDEX_NAME, ShardIndex

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 5  # bump whenever prepare or encode changes the bytes they produce


def source_identity(source: str) -> dict[str, Any]:
    """What identifies a dataset source's content: file sizes and mtimes for folders, content hash for zips."""
    if source.startswith(("http://", "https://")) or source == "sample":
        return {"source": source}
    path = Path(source).expanduser().resolve()
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return {"zip_sha256": digest.hexdigest()}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return {"files": [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    return {"source": source}


def fingerprint(settings: dict[str, Any]) -> str:
    payload = json.dumps({"version": CACHE_FORMAT_VERSION, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def cached_or_build(cache_root: Path, key: str, build: Callable[[Path], ShardIndex]) -> tuple[Path, bool]:
    """Return the cache folder for ``key``, building it with ``build(tmp_dir)`` when absent.

    Builds go to a temporary sibling and are renamed into place only when complete, so an interrupted build is
    never mistaken for a cache hit. Returns (folder, reused).
    """
    final = cache_root / key
    if (final / INDEX_NAME).exists():
        return final, True
    tmp = cache_root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, False


def link_into(cache_dir: Path, target_dir: Path, names: list[str] | None = None) -> None:
    """Make the run directory self-contained: hard-link cached files (copy across file systems). Without
    ``names``, the shards and their index."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(cache_dir.iterdir()):
        wanted = item.name in names if names else item.name == INDEX_NAME or item.name.endswith(".tar")
        if not item.is_file() or not wanted:
            continue
        target = target_dir / item.name
        if target.exists():
            continue
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)
