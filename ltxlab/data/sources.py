"""Resolve a dataset source (folder, ``.zip``, ``https://`` URL to a zip) into a local folder, safely.

Folders are used in place and never written to. Archives are extracted into ``work_dir/extracted`` with every
entry checked (no absolute paths, ``..``, symlinks, devices or encrypted entries) and with limits on entry
count, declared size, per-entry and archive-wide compression ratio and the bytes actually written (headers can
lie). Downloads accept only ``https://`` (redirects too) and stream to ``work_dir/download`` under a size cap,
a per-read timeout and a deadline for the whole transfer; a failed download leaves no file behind.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import stat
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ltxlab.errors import DatasetError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Names never treated as data: macOS resource forks / Finder metadata, Windows thumbnails.
IGNORED_DIRS = frozenset({"__MACOSX"})
IGNORED_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class SourceLimits:
    max_entries: int = 20_000  # files in an archive or folder
    max_total_bytes: int = 50 * 1024**3  # uncompressed, declared and actually written
    max_entry_ratio: float = 200.0  # uncompressed/compressed, per entry and archive-wide; deflate tops near 1030:1
    ratio_min_bytes: int = 8 * 1024**2  # small entries/archives (captions, silent wavs) may compress very well
    max_download_bytes: int = 20 * 1024**3
    connect_timeout_s: float = 30.0  # per socket operation (connect, each read)
    download_timeout_s: float = 3600.0  # whole transfer


def resolve_source(source: str | os.PathLike, work_dir: Path, limits: SourceLimits | None = None) -> Path:
    """A local folder holding the dataset named by ``source``; anything written goes under ``work_dir``."""
    limits = limits or SourceLimits()
    text = str(source).strip()
    if not text:
        raise DatasetError("No dataset source given: pass a .zip file, a folder, or an https:// URL to a zip")
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    work_dir = Path(work_dir)
    if scheme == "https":
        archive = download(text, work_dir / "download" / "dataset.zip", limits)
        return extract_zip(archive, work_dir / "extracted", limits)
    if scheme:
        raise DatasetError(
            f"Unsupported dataset URL scheme '{scheme}://': only https:// URLs to a .zip are accepted"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise DatasetError(f"Dataset file {path.name} is not a zip archive: pass a .zip file or a folder")
        return extract_zip(path, work_dir / "extracted", limits)
    raise DatasetError(
        f"Dataset source not found: {text} (expected a .zip file, a folder or an https:// URL)"
    )


# ----------------------------------------------------------------------------------------------------
# Zip extraction


def _safe_member_path(raw: str) -> PurePosixPath | None:
    """Relative path for an archive entry name, or None if it is unsafe (absolute, drive, ``..``, NUL)."""
    name = raw.replace("\\", "/")  # Windows tools write backslashes; treat them as separators
    if "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if info.create_system == 3 and fmt:  # Unix type bits (many writers leave them 0: a plain file)
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISDIR(mode):
            return "dir"
        if not stat.S_ISREG(mode):
            return "special"
    return "dir" if info.filename.endswith(("/", "\\")) else "file"


def _check_entries(
    infos: list[zipfile.ZipInfo], label: str, limits: SourceLimits, archive_bytes: int
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    files = [i for i in infos if _entry_kind(i) != "dir"]
    if len(files) > limits.max_entries:
        raise DatasetError(f"Archive {label} has {len(files)} files, over the limit of {limits.max_entries}")
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[str] = set()
    total = packed = 0
    for info in infos:
        rel = _safe_member_path(info.filename)
        if rel is None:
            raise DatasetError(
                f"Archive {label} has an unsafe entry path {info.filename!r} (absolute or '..'): refused"
            )
        kind = _entry_kind(info)
        if kind == "symlink":
            raise DatasetError(
                f"Archive {label} contains a symbolic link {info.filename!r}: links are not allowed"
            )
        if kind == "special":
            raise DatasetError(f"Archive {label} contains a special file {info.filename!r}: refused")
        if kind == "dir" or not rel.parts or rel.parts[0] in IGNORED_DIRS:
            continue
        if info.flag_bits & 0x1:
            raise DatasetError(
                f"Archive {label} has an encrypted entry {info.filename!r}: encrypted zips are not supported"
            )
        if info.compress_type not in (
            zipfile.ZIP_STORED,
            zipfile.ZIP_DEFLATED,
            zipfile.ZIP_BZIP2,
            zipfile.ZIP_LZMA,
        ):
            raise DatasetError(
                f"Archive {label} entry {info.filename!r} uses an unsupported compression method "
                f"({info.compress_type}): re-zip with standard deflate"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_min_bytes and ratio > limits.max_entry_ratio:
            raise DatasetError(
                f"Archive {label} entry {info.filename!r} expands {ratio:.0f}:1, over the "
                f"{limits.max_entry_ratio:g}:1 compression-ratio limit (zip bomb?): refused"
            )
        total += info.file_size
        packed += info.compress_size
        if total > limits.max_total_bytes:
            raise DatasetError(
                f"Archive {label} unpacks to more than {limits.max_total_bytes} bytes, over the size limit"
            )
        key = rel.as_posix()
        if key in seen:
            raise DatasetError(f"Archive {label} lists {key!r} more than once: refused")
        seen.add(key)
        plan.append((info, rel))
    # Many entries each just under ratio_min_bytes add up to a bomb too. The compressed sizes are headers as
    # well, so the archive's real size caps them (a lie cannot lower the ratio); the bytes actually written
    # are held to the declared sizes during extraction.
    packed = max(min(packed, archive_bytes), 1)
    if total > limits.ratio_min_bytes and total / packed > limits.max_entry_ratio:
        raise DatasetError(
            f"Archive {label} expands {total / packed:.0f}:1 overall ({total} bytes from {packed}), over the "
            f"{limits.max_entry_ratio:g}:1 compression-ratio limit (zip bomb?): refused"
        )
    folders = {parent.as_posix() for _, rel in plan for parent in rel.parents}
    clash = sorted(seen & folders)
    if clash:
        raise DatasetError(f"Archive {label} has {clash[0]!r} as both a file and a folder: refused")
    return plan


def extract_zip(archive: Path, dest: Path, limits: SourceLimits | None = None) -> Path:
    """Safely extract ``archive`` into ``dest`` (emptied first: a directory we own); returns ``dest``."""
    limits = limits or SourceLimits()
    label = Path(archive).name
    if dest.is_symlink():
        raise DatasetError(f"Extraction folder {dest} is a symbolic link: refused")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"Dataset archive {label} is not a readable zip file ({e})") from None
    written = 0
    with zf:
        for info, rel in _check_entries(zf.infolist(), label, limits, os.path.getsize(archive)):
            target = root.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL|O_NOFOLLOW: never write through a pre-existing file or link (there should be none).
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            entry_bytes = 0
            try:
                with zf.open(info) as src, os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                    while chunk := src.read(_CHUNK):
                        entry_bytes += len(chunk)
                        written += len(chunk)
                        # The declared size may lie: enforce what actually comes out.
                        if entry_bytes > info.file_size or written > limits.max_total_bytes:
                            raise DatasetError(
                                f"Archive {label} entry {info.filename!r} unpacks to more bytes than "
                                "declared "
                                f"or over the {limits.max_total_bytes}-byte limit: refused"
                            )
                        out.write(chunk)
            except DatasetError:
                raise
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                # A corrupt entry (bad CRC, truncated data) is left out; later stages report what is missing.
                log.warning("Skipping corrupt archive entry %s: %s", info.filename, e)
                target.unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------------------------------
# Download


class _HttpsOnlyRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if not newurl.lower().startswith("https://"):
            raise DatasetError(
                f"Dataset URL redirected to a non-https location ({newurl.split(':', 1)[0]}): refused"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _https_opener() -> urllib.request.OpenerDirector:
    # Built by hand so no file://, ftp://, data: or plain-http handler is ever installed.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPSHandler(),
        _HttpsOnlyRedirect(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _socket_of(resp: object) -> socket.socket | None:
    """The socket under an http.client response (``fp`` is a BufferedReader over a SocketIO), if reachable."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _fetch(url: str, part: Path, limits: SourceLimits, shown: str) -> None:
    deadline = time.monotonic() + limits.download_timeout_s
    too_slow = f"Dataset download {shown} took longer than {limits.download_timeout_s:g} s"
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "ltxlab"})
        timeout = min(limits.connect_timeout_s, limits.download_timeout_s)
        with _https_opener().open(req, timeout=timeout) as resp:
            declared = resp.headers.get("Content-Length")
            size = int(declared) if declared and declared.isdigit() else None
            if size is not None and size > limits.max_download_bytes:
                raise DatasetError(
                    f"Dataset download {shown} is {size} bytes, over the {limits.max_download_bytes}-byte limit"
                )
            sock = _socket_of(resp)
            got = 0
            with open(part, "wb") as out:
                while True:
                    # read(n) would block until n bytes arrive, so a slow drip could outlast the deadline: read1
                    # returns what is there, and no single socket wait may run past the deadline either.
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DatasetError(too_slow)
                    if sock is not None:
                        sock.settimeout(min(limits.connect_timeout_s, left))
                    chunk = resp.read1(_CHUNK)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > limits.max_download_bytes:
                        raise DatasetError(
                            f"Dataset download {shown} exceeds the {limits.max_download_bytes}-byte limit"
                        )
                    out.write(chunk)
            if size is not None and got < size:  # read1 reports a dropped connection as a quiet end
                raise DatasetError(f"Dataset download {shown} was cut short ({got} of {size} bytes)")
    except DatasetError:
        raise
    except urllib.error.HTTPError as e:
        raise DatasetError(f"Could not download the dataset from {shown}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        if time.monotonic() >= deadline:  # the last socket wait was cut to the time left
            raise DatasetError(too_slow) from None
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"Could not download the dataset from {shown}: {reason}") from None


def download(url: str, dest: Path, limits: SourceLimits | None = None, expect_zip: bool = True) -> Path:
    """Stream an ``https://`` URL to ``dest`` under the size cap and timeouts; returns ``dest``. With
    ``expect_zip`` (dataset archives) anything that is not a zip is refused; media files are checked by the
    media readers instead. On any failure neither ``dest`` nor the partial file is left behind."""
    limits = limits or SourceLimits()
    if not url.lower().startswith("https://"):
        raise DatasetError("Only https:// dataset URLs are accepted")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shown = url.split("?", 1)[0]  # signed URLs carry secrets in the query string: never log it
    try:
        _fetch(url, part, limits, shown)
        os.replace(part, dest)
        if expect_zip and not zipfile.is_zipfile(dest):
            raise DatasetError(f"The file downloaded from {shown} is not a zip archive")
    except BaseException:
        # Also drops a stale dest from an earlier run, so nothing downstream mistakes it for this download.
        part.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        raise
    return dest


# ----------------------------------------------------------------------------------------------------
# Walking a dataset folder


def iter_files(root: Path, limits: SourceLimits | None = None) -> Iterator[Path]:
    """Regular files under ``root``, sorted, skipping ignored names and links that lead outside ``root``.

    Directory links are never descended (no cycles, no escapes); a file link is kept only if it resolves to a
    regular file inside ``root``.
    """
    limits = limits or SourceLimits()
    root = Path(root).resolve()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in IGNORED_DIRS and not d.startswith(".") and not Path(dirpath, d).is_symlink()
        )
        for fname in sorted(filenames):
            if fname in IGNORED_FILES or fname.startswith("."):
                continue  # includes AppleDouble "._x" forks outside __MACOSX
            path = Path(dirpath, fname)
            if path.is_symlink():
                real = path.resolve()
                if not real.is_relative_to(root) or not real.is_file():
                    log.warning(
                        "Ignoring %s: symbolic link pointing outside the dataset", path.relative_to(root)
                    )
                    continue
            elif not path.is_file():
                continue
            count += 1
            if count > limits.max_entries:
                raise DatasetError(f"Dataset folder has more than {limits.max_entries} files, over the limit")
            yield path
