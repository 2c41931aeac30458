"""The shared caches (latents, prompt embeddings, the sample dataset): fingerprinted, built once, verified.

Reusing latents made by another model version, resolution or audio setting silently degrades a LoRA, so every
input that changes the bytes goes into the fingerprint.

Several runs may share one cache folder. Each entry is built under a file lock into a temporary name of its own
(host and pid) and renamed into place only when complete: a second run waits for the first and reuses its result,
and a build killed half-way leaves only a temporary folder, which the next build of that entry (or any build once
its process is gone) removes. Latent shards carry their size and CRC-32 in ``index.json``; a cache that fails the
check is rebuilt (logged), or, if it cannot be, reported naming the bad shard.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ltxlab.data.shards import INDEX_NAME, ShardIndex
from ltxlab.errors import CacheCorrupt

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 4  # bump whenever prepare or encode changes the bytes they produce
CHECKSUMS = "checksums"  # ShardIndex.extra[CHECKSUMS] = {shard name: [size, crc32]}
_TMP_MARK = ".tmp-"


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


# ---------------------------------------------------------------------------------------------------- building


def temp_name(final: Path) -> Path:
    """This process's temporary sibling of ``final``: ``.<name>.tmp-<host>-<pid>``."""
    return final.with_name(f".{final.name}{_TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(cache_root: Path, entry: str) -> None:
    """Temporaries of ``entry`` (the caller holds its lock, so nobody builds it), and any left by a dead process
    of this host."""
    host = socket.gethostname()
    for path in cache_root.glob(f".*{_TMP_MARK}*"):
        name, _, owner = path.name.rpartition(_TMP_MARK)
        owner_host, _, pid = owner.rpartition("-")
        mine = name == f".{entry}"
        dead = owner_host == host and pid.isdigit() and not _pid_alive(int(pid))
        if mine or dead:
            log.info("removing stale temporary cache entry %s", path)
            _remove(path)


@contextlib.contextmanager
def build_lock(cache_root: Path, entry: str) -> Iterator[None]:
    """Exclusive lock on one cache entry across processes (``.<entry>.lock`` beside it); waits for the holder."""
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / f".{entry}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", cache_root / entry)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None], is_valid: Callable[[Path], str | None]) -> bool:
    """Make ``final`` (a file or folder) with ``build(tmp)`` unless a valid one exists; True when reused.

    ``is_valid(path)`` returns None for a usable entry, else the problem (then it is rebuilt, logged).
    """
    if final.exists() and is_valid(final) is None:
        return True
    with build_lock(final.parent, final.name):
        problem = is_valid(final) if final.exists() else None
        if final.exists() and problem is None:
            return True  # another process built it while this one waited
        remove_stale_temporaries(final.parent, final.name)
        if problem is not None:
            log.warning("cache %s failed verification (%s): rebuilding it", final, problem)
        tmp = temp_name(final)
        try:
            build(tmp)
            if problem is not None:
                _remove(final)
            os.replace(tmp, final) if tmp.is_file() else tmp.rename(final)
        except BaseException as err:
            _remove(tmp)
            if problem is not None and isinstance(err, Exception):
                raise CacheCorrupt(f"{final} failed verification ({problem}) and could not be rebuilt: "
                                   f"{err}") from err
            raise
    return False


def cached_or_build(cache_root: Path, key: str, build: Callable[[Path], ShardIndex]) -> tuple[Path, bool]:
    """The verified latent cache folder for ``key``, built with ``build(tmp_dir)`` when absent or corrupt.
    Returns (folder, reused)."""

    def build_and_seal(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        index = build(tmp)
        index.extra[CHECKSUMS] = {name: shard_checksum(tmp / name) for name in index.shards}
        index.save(tmp)

    final = cache_root / key
    reused = build_once(final, build_and_seal, verify_shards)
    return final, reused


# ---------------------------------------------------------------------------------------------------- verifying


def shard_checksum(path: Path) -> list[int]:
    """[size, CRC-32] of a file (CRC-32: corruption, not tampering, is what a cache must catch — and fast)."""
    crc, size = 0, 0
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return [size, crc]


def verify_shards(directory: Path) -> str | None:
    """None when every shard the index lists is present with its recorded size and CRC-32, else what is wrong
    (naming the shard)."""
    try:
        index = ShardIndex.load(directory)
    except FileNotFoundError:
        return f"{INDEX_NAME} is missing"
    except (ValueError, TypeError) as err:
        return f"{INDEX_NAME} is unreadable ({err})"
    recorded = index.extra.get(CHECKSUMS)
    if recorded is None:
        return "it has no checksums (built by an older ltxlab)"
    for name in index.shards:
        path = directory / name
        if name not in recorded:
            return f"{path} has no recorded checksum"
        if not path.is_file():
            return f"{path} is missing"
        size, crc = recorded[name]
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, {size} were written"
        if shard_checksum(path)[1] != crc:
            return f"{path} does not match its checksum"
    return None


def link_into(cache_dir: Path, target_dir: Path, names: list[str] | None = None) -> None:
    """Make the run directory self-contained: hard-link cached files (copy across file systems). Without
    ``names``, the shards and their index. A stale link (to an entry since rebuilt) is replaced."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(cache_dir.iterdir()):
        wanted = item.name in names if names else item.name == INDEX_NAME or item.name.endswith(".tar")
        if not item.is_file() or not wanted:
            continue
        target = target_dir / item.name
        if target.exists():
            if os.path.samefile(item, target) or shard_checksum(item) == shard_checksum(target):
                continue
            target.unlink()
        try:
            os.link(item, target)
        except OSError:
            shutil.copy2(item, target)
