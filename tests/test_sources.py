"""Dataset sources: folders in place, safe zip extraction, https-only downloads, safe folder walking."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import os
import stat
import struct
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ltxlab.data import sources
from ltxlab.data.sources import SourceLimits, download, extract_zip, iter_files, resolve_source
from ltxlab.errors import DatasetError, InputError


def _zip(path: Path, entries: dict[str, bytes], **kw: object) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            for k, v in kw.items():
                setattr(info, k, v)
            zf.writestr(info, data)
    return path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_folder_is_used_in_place_and_untouched(tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("x")
    (src / "sub" / "b.txt").write_text("y")
    before = {p: p.stat().st_mtime_ns for p in src.rglob("*")}
    out = resolve_source(str(src), tmp_path / "work")
    assert out == src.resolve()
    assert {p: p.stat().st_mtime_ns for p in src.rglob("*")} == before


def test_zip_is_extracted_into_work_dir_and_macosx_ignored(tmp_path: Path) -> None:
    z = _zip(
        tmp_path / "d.zip",
        {"clips/a.mp4": b"1", "clips/a.txt": b"cap", "__MACOSX/clips/._a.mp4": b"junk", "top/": b""},
    )
    out = resolve_source(str(z), tmp_path / "work")
    assert out == tmp_path / "work" / "extracted"
    assert _files(out) == ["clips/a.mp4", "clips/a.txt"]
    # Re-resolving starts from a clean folder (no leftovers from a previous run).
    (out / "stale.txt").write_text("old")
    resolve_source(str(z), tmp_path / "work")
    assert not (out / "stale.txt").exists()


@pytest.mark.parametrize(
    "name",
    ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "..\\evil.txt", "C:/evil.txt", "C:\\evil.txt"],
)
def test_unsafe_entry_paths_are_refused(tmp_path: Path, name: str) -> None:
    z = _zip(tmp_path / "d.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(DatasetError, match="unsafe entry path"):
        resolve_source(str(z), tmp_path / "work" / "run")
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize(
    ("name", "mode", "payload", "message"),
    [
        ("link.mp4", stat.S_IFLNK | 0o777, "/etc/passwd", "symbolic link"),
        ("fifo", stat.S_IFIFO | 0o644, b"", "special file"),
    ],
)
def test_unix_special_entries_are_refused(tmp_path: Path, name: str, mode: int, payload: object, message: str) -> None:
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: the mode bits below are honoured
        info.external_attr = mode << 16
        zf.writestr(info, payload)
    with pytest.raises(DatasetError, match=message):
        resolve_source(str(z), tmp_path / "work")


def test_encrypted_entry_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "d.zip", {"a.txt": b"secret"})
    data = bytearray(z.read_bytes())
    # Set the "encrypted" general-purpose flag in the central directory record.
    cd = data.rfind(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, cd + 8)[0]
    struct.pack_into("<H", data, cd + 8, flags | 0x1)
    z.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="encrypted"):
        resolve_source(str(z), tmp_path / "work")


def test_zip_bomb_ratio_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "d.zip", {"bomb.wav": b"\0" * (4 << 20)})
    with pytest.raises(DatasetError, match="compression-ratio limit"):
        resolve_source(str(z), tmp_path / "work", SourceLimits(ratio_min_bytes=1 << 20))
    assert not list((tmp_path / "work").rglob("bomb.wav"))


def test_total_size_limit_is_enforced(tmp_path: Path) -> None:
    z = _zip(tmp_path / "d.zip", {"a.bin": os.urandom(3000), "b.bin": os.urandom(3000)})
    with pytest.raises(DatasetError, match="over the size limit"):
        resolve_source(str(z), tmp_path / "work", SourceLimits(max_total_bytes=5000))


def test_archive_wide_ratio_is_refused_before_extracting(tmp_path: Path) -> None:
    # The audit's case: 7 entries of 8 MiB zeros, each exactly at ratio_min_bytes (so no per-entry check), ~1000:1.
    z = _zip(tmp_path / "d.zip", {f"f{i}.wav": b"\0" * (8 << 20) for i in range(7)})
    with pytest.raises(DatasetError, match=r"overall .* compression-ratio limit"):
        resolve_source(str(z), tmp_path / "work")
    assert _files(tmp_path / "work" / "extracted") == []  # refused before anything was written
    # Inflated compressed-size headers cannot hide it: the archive's real size caps them.
    data = bytearray(z.read_bytes())
    cd = data.find(b"PK\x01\x02")
    while cd >= 0:
        struct.pack_into("<I", data, cd + 20, 1 << 30)
        cd = data.find(b"PK\x01\x02", cd + 4)
    z.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"overall .* compression-ratio limit"):
        extract_zip(z, tmp_path / "work" / "extracted")


def test_small_archives_may_compress_very_well(tmp_path: Path) -> None:
    # Under the ratio_min_bytes floor: highly compressible captions and silence are ordinary data.
    z = _zip(tmp_path / "d.zip", {f"c{i}.txt": b"a" * (1 << 20) for i in range(7)})
    assert len(_files(resolve_source(str(z), tmp_path / "work"))) == 7


def test_file_and_folder_with_the_same_name_is_refused(tmp_path: Path) -> None:
    z = _zip(tmp_path / "d.zip", {"a": b"file", "a/b.mp4": b"x"})
    with pytest.raises(DatasetError, match="both a file and a folder"):
        resolve_source(str(z), tmp_path / "work")


def test_entry_count_limit_is_enforced(tmp_path: Path) -> None:
    z = _zip(tmp_path / "d.zip", {f"f{i}.txt": b"x" for i in range(6)})
    with pytest.raises(DatasetError, match="6 files, over the limit of 5"):
        resolve_source(str(z), tmp_path / "work", SourceLimits(max_entries=5))


def test_lying_size_header_never_writes_more_than_declared(tmp_path: Path) -> None:
    z = tmp_path / "d.zip"
    payload = os.urandom(5000)
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("big.bin", payload)
        zf.writestr("ok.txt", b"fine")
    data = bytearray(z.read_bytes())
    cd = data.find(b"PK\x01\x02")  # first central record = big.bin; declare 100 bytes instead of 5000
    struct.pack_into("<I", data, cd + 24, 100)
    z.write_bytes(bytes(data))
    out = extract_zip(z, tmp_path / "work" / "extracted")
    # The lie is caught (CRC mismatch after the declared bytes); the entry is dropped, the rest extracted.
    assert _files(out) == ["ok.txt"]


def test_not_a_zip_and_missing_source(tmp_path: Path) -> None:
    f = tmp_path / "data.zip"
    f.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a zip archive"):
        resolve_source(str(f), tmp_path / "work")
    with pytest.raises(DatasetError, match="not found"):
        resolve_source(str(tmp_path / "nope.zip"), tmp_path / "work")
    with pytest.raises(DatasetError, match="No dataset source"):
        resolve_source("  ", tmp_path / "work")


@pytest.mark.parametrize(
    "url", ["http://example.com/d.zip", "file:///etc/passwd", "ftp://h/d.zip", "s3://b/k"]
)
def test_non_https_urls_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(DatasetError, match="only https:// URLs") as e:
        resolve_source(url, tmp_path / "work")
    assert isinstance(e.value, InputError) and e.value.code == 422
    assert not (tmp_path / "work").exists()


def test_download_failure_is_a_dataset_error(tmp_path: Path) -> None:
    # Port 1 on loopback: connection refused at once (no network needed).
    with pytest.raises(DatasetError, match=r"Could not download the dataset from https://127\.0\.0\.1:1/d\.zip"):
        resolve_source("https://127.0.0.1:1/d.zip?sig=secret", tmp_path / "work")


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, length: int | None) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(length)} if length is not None else {}


class _FakeOpener:
    def __init__(self, data: bytes, length: int | None) -> None:
        self.data, self.length = data, length
        self.timeout: float | None = None

    def open(self, req: object, timeout: float) -> _FakeResponse:
        self.timeout = timeout
        return _FakeResponse(self.data, self.length)


def test_download_size_cap_declared_and_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = SourceLimits(max_download_bytes=1000, connect_timeout_s=7.0)
    opener = _FakeOpener(b"x" * 10, length=5000)
    monkeypatch.setattr(sources, "_https_opener", lambda: opener)
    with pytest.raises(DatasetError, match="5000 bytes, over the 1000-byte limit"):
        download("https://h/d.zip", tmp_path / "dl" / "d.zip", limits)
    assert opener.timeout == 7.0
    monkeypatch.setattr(sources, "_https_opener", lambda: _FakeOpener(b"x" * 3 * (1 << 20), length=None))
    with pytest.raises(DatasetError, match="exceeds the 1000-byte limit"):
        download("https://h/d.zip", tmp_path / "dl" / "d.zip", limits)
    assert not list((tmp_path / "dl").iterdir())  # partial download removed


def test_download_then_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = _zip(tmp_path / "src.zip", {"a.mp4": b"1", "a.txt": b"cap"})
    monkeypatch.setattr(sources, "_https_opener", lambda: _FakeOpener(z.read_bytes(), length=None))
    out = resolve_source("https://example.com/dataset.zip?token=abc", tmp_path / "work")
    assert _files(out) == ["a.mp4", "a.txt"]
    assert (tmp_path / "work" / "download" / "dataset.zip").is_file()
    monkeypatch.setattr(sources, "_https_opener", lambda: _FakeOpener(b"<html>nope</html>", length=None))
    with pytest.raises(DatasetError, match="not a zip archive"):
        resolve_source("https://example.com/dataset.zip", tmp_path / "work2")


def test_failed_download_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    download_dir = tmp_path / "work" / "download"
    download_dir.mkdir(parents=True)
    (download_dir / "dataset.zip").write_bytes(b"stale from an earlier run")
    monkeypatch.setattr(sources, "_https_opener", lambda: _FakeOpener(b"<html>nope</html>", length=None))
    with pytest.raises(DatasetError, match="not a zip archive"):
        resolve_source("https://example.com/dataset.zip", tmp_path / "work")
    assert list(download_dir.iterdir()) == []


class _PlainHttpsHandler(urllib.request.HTTPHandler):
    """Serves ``https://`` URLs over plain HTTP, so real sockets and http.client run without a certificate."""

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(http.client.HTTPConnection, req)


def _local_opener() -> urllib.request.OpenerDirector:
    opener = urllib.request.OpenerDirector()
    for handler in (_PlainHttpsHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


Body = Callable[[http.server.BaseHTTPRequestHandler], None]
Serve = Callable[[Body], str]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    """Start a local server whose GET handler is the given function; returns the https:// URL to ask for."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: Body) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with contextlib.suppress(OSError):  # the client hung up: expected once it gives up
                    body(self)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://127.0.0.1:{srv.server_address[1]}/d.zip"

    monkeypatch.setattr(sources, "_https_opener", _local_opener)
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _headers(h: http.server.BaseHTTPRequestHandler, length: int) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(length))
    h.end_headers()
    h.wfile.flush()


def _drip(h: http.server.BaseHTTPRequestHandler) -> None:
    # One byte every 0.1 s: every read is well inside the per-read timeout, the whole is not.
    _headers(h, 10**6)
    for _ in range(60):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(0.1)


def _stall(h: http.server.BaseHTTPRequestHandler) -> None:
    _headers(h, 10**6)
    time.sleep(6)


@pytest.mark.parametrize("body", [_drip, _stall], ids=["slow-drip", "stalled"])
def test_download_deadline_stops_a_slow_server(tmp_path: Path, serve: Serve, body: Body) -> None:
    url = serve(body)
    limits = SourceLimits(connect_timeout_s=5.0, download_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"^Dataset download https://127\.0\.0\.1:\d+/d\.zip took longer than 1 s$"):
        resolve_source(url, tmp_path / "work", limits)
    assert time.monotonic() - start < 2.5
    assert list((tmp_path / "work" / "download").iterdir()) == []


def test_download_cut_short_is_refused(tmp_path: Path, serve: Serve) -> None:
    def short(h: http.server.BaseHTTPRequestHandler) -> None:
        _headers(h, 100)
        h.wfile.write(b"PK" + b"x" * 8)  # then the connection closes

    with pytest.raises(DatasetError, match="cut short \\(10 of 100 bytes\\)"):
        resolve_source(serve(short), tmp_path / "work")
    assert list((tmp_path / "work" / "download").iterdir()) == []


def test_download_over_a_real_socket(tmp_path: Path, serve: Serve) -> None:
    payload = _zip(tmp_path / "src.zip", {"a.mp4": os.urandom(3 << 20), "a.txt": b"cap"}).read_bytes()

    def whole(h: http.server.BaseHTTPRequestHandler) -> None:
        _headers(h, len(payload))
        h.wfile.write(payload)

    out = resolve_source(serve(whole), tmp_path / "work", SourceLimits(download_timeout_s=30.0))
    assert _files(out) == ["a.mp4", "a.txt"]
    assert (tmp_path / "work" / "download" / "dataset.zip").read_bytes() == payload


def test_redirect_to_plain_http_is_refused() -> None:
    handler = sources._HttpsOnlyRedirect()
    with pytest.raises(DatasetError, match="non-https"):
        handler.redirect_request(None, None, 302, "Found", {}, "http://evil/d.zip")


def test_opener_has_no_file_or_http_handlers() -> None:
    opener = sources._https_opener()
    schemes = {name.split("_")[0] for h in opener.handlers for name in dir(h) if name.endswith("_open")}
    assert "https" in schemes
    assert not schemes & {"http", "file", "ftp", "data"}


def test_iter_files_ignores_outside_links_and_metadata(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_text("s")
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "a.mp4").write_text("x")
    (root / "a.mp4").write_text("x")
    (root / ".DS_Store").write_text("x")
    (root / "._a.mp4").write_text("x")
    (root / "sub" / "b.mp4").write_text("x")
    (root / "leak.mp4").symlink_to(outside / "secret.mp4")
    (root / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "inside.mp4").symlink_to(root / "a.mp4")
    got = [p.relative_to(root.resolve()).as_posix() for p in iter_files(root)]
    assert got == ["a.mp4", "inside.mp4", "sub/b.mp4"]
    with pytest.raises(DatasetError, match="more than 2 files"):
        list(iter_files(root, SourceLimits(max_entries=2)))
