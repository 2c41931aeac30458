"""Layout rules of both modes (file names only: media contents are checked in prepare)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltxlab.data.ingest import ingest
from ltxlab.errors import DatasetError


def _touch(root: Path, *names: str, text: dict[str, bytes] | None = None) -> Path:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((text or {}).get(n, b"x"))
    return root


def _i2v(root: Path, n: int, ext: str = ".mp4") -> Path:
    for i in range(n):
        _touch(root, f"clip{i:02d}{ext}")
        (root / f"clip{i:02d}.txt").write_text(f"caption {i}\n")
    return root


# ---------------------------------------- i2v


def test_i2v_videos_with_captions(tmp_path: Path) -> None:
    _i2v(tmp_path, 10)
    _touch(tmp_path, "clip10.MOV")  # upper-case extension, no caption
    ds = ingest(tmp_path, "i2v")
    assert ds.mode == "i2v" and ds.kind == "video"
    assert [c.name for c in ds.clips][:2] == ["clip00", "clip01"]
    assert ds.clips[0].caption == "caption 0"
    assert ds.clips[-1].name == "clip10" and ds.clips[-1].caption is None
    assert any("1 of 11 videos have no caption" in w for w in ds.warnings)
    assert not any("at least 10" in w for w in ds.warnings)


def test_i2v_images(tmp_path: Path) -> None:
    _touch(tmp_path, "a.png", "b.jpg", "c.JPEG")
    ds = ingest(tmp_path, "i2v")
    assert ds.kind == "image" and [c.kind for c in ds.clips] == ["image"] * 3


def test_i2v_subfolders_keep_same_names_distinct(tmp_path: Path) -> None:
    _touch(tmp_path, "a/clip.mp4", "b/clip.mp4", "clip.mp4")
    (tmp_path / "a" / "clip.txt").write_text("from a")
    (tmp_path / "b" / "clip.txt").write_text("from b")
    ds = ingest(tmp_path, "i2v")
    by_name = {c.name: c for c in ds.clips}
    assert set(by_name) == {"a__clip", "b__clip", "clip"}
    assert by_name["a__clip"].caption == "from a" and by_name["b__clip"].caption == "from b"
    assert by_name["clip"].caption is None


def test_i2v_macosx_and_hidden_files_ignored(tmp_path: Path) -> None:
    _i2v(tmp_path, 2)
    _touch(tmp_path, "__MACOSX/._clip00.mp4", "__MACOSX/x.png", "._clip01.mp4", ".DS_Store")
    ds = ingest(tmp_path, "i2v")
    assert ds.kind == "video" and len(ds.clips) == 2


def test_i2v_mixed_videos_and_images_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4", "d.png", "sub/e.jpg")
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "i2v")
    assert str(e.value) == (
        "Dataset mixes videos and images (3 videos, 2 images): "
        "the archive must contain only videos or only images"
    )
    assert e.value.code == 422


def test_i2v_no_media_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path, "readme.txt", "song.wav")
    with pytest.raises(DatasetError, match="No training media found"):
        ingest(tmp_path, "i2v")


def test_i2v_few_files_warns_and_strays_are_reported(tmp_path: Path) -> None:
    _i2v(tmp_path, 3)
    _touch(tmp_path, "notes.pdf", "orphan.txt")
    ds = ingest(tmp_path, "i2v")
    text = " | ".join(ds.warnings)
    assert "Only 3 training files in the dataset; at least 10 are recommended" in text
    assert "notes.pdf" in text and "orphan.txt" in text


def test_i2v_same_base_name_different_extension(tmp_path: Path) -> None:
    _touch(tmp_path, "clip.mp4", "clip.mov")
    (tmp_path / "clip.txt").write_text("shared")
    ds = ingest(tmp_path, "i2v")
    assert sorted(c.name for c in ds.clips) == ["clip_mov", "clip_mp4"]
    assert {c.caption for c in ds.clips} == {"shared"}


# ---------------------------------------- captions


def test_caption_encodings_and_whitespace(tmp_path: Path) -> None:
    _touch(tmp_path, "a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4")
    (tmp_path / "a.txt").write_bytes("\ufeffa  caf\u00e9\n\nshot\t".encode())
    (tmp_path / "b.txt").write_bytes(b"the \x93quoted\x94 word")  # Windows-1252
    (tmp_path / "c.txt").write_bytes(b"  \n\t ")
    (tmp_path / "d.txt").write_bytes("utf16 text".encode("utf-16"))
    (tmp_path / "e.txt").write_bytes(b"x" * 20000)
    ds = ingest(tmp_path, "i2v")
    caps = {c.name: c.caption for c in ds.clips}
    assert caps["a"] == "a caf\u00e9 shot"
    assert caps["b"] == "the \u201cquoted\u201d word"
    assert caps["c"] is None
    assert caps["d"] == "utf16 text"
    assert len(caps["e"]) == 16 * 1024
    text = " | ".join(ds.warnings)
    assert "Caption b.txt is not valid UTF-8 (byte 0x93 at offset 4)" in text
    assert "Caption c.txt is empty" in text
    assert "Caption e.txt is longer than 16384 bytes" in text


# ---------------------------------------- a2v


def _a2v(
    root: Path, name: str, start: str = ".png", audio: str | None = ".wav", caption: bool = True
) -> None:
    _touch(root, f"{name}_start{start}", f"{name}_end.mp4")
    if audio:
        _touch(root, f"{name}_audio{audio}")
    if caption:
        (root / f"{name}.txt").write_text(f"caption of {name}")


def test_a2v_groups(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01")
    _a2v(tmp_path, "clip02", start=".mp4", audio=None)
    _a2v(tmp_path, "clip03", start=".jpg", audio=".mp3")
    ds = ingest(tmp_path, "a2v")
    assert ds.mode == "a2v" and ds.kind == "video"
    c1, c2, c3 = ds.clips
    assert (c1.name, c1.media.name, c1.start.name, c1.audio.name) == (
        "clip01",
        "clip01_end.mp4",
        "clip01_start.png",
        "clip01_audio.wav",
    )
    assert c1.caption == "caption of clip01"
    assert c2.start.name == "clip02_start.mp4" and c2.audio is None
    assert c3.audio.name == "clip03_audio.mp3"
    assert any("Only 3 training groups" in w for w in ds.warnings)


def test_a2v_groups_across_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "starts/g_start.png", "audio/g_audio.flac", "targets/g_end.mkv", "g.txt")
    (ds,) = [ingest(tmp_path, "a2v")]
    assert [c.name for c in ds.clips] == ["g"]


def test_a2v_missing_end(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01")
    _touch(tmp_path, "clip02_start.png", "clip02_audio.wav", "clip02.txt")
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "a2v")
    assert (
        str(e.value) == "a2v group 'clip02' has no _end target video (expected clip02_end.mp4/.mov/.avi/.mkv)"
    )


def test_a2v_missing_end_several_groups(tmp_path: Path) -> None:
    for n in ("a", "b", "c"):
        _touch(tmp_path, f"{n}_start.png", f"{n}_audio.wav")
    with pytest.raises(
        DatasetError, match=r"group 'a' has no _end target video .*\(and 2 more group\(s\): b, c\)"
    ):
        ingest(tmp_path, "a2v", trigger_phrase="t")


def test_a2v_missing_start(tmp_path: Path) -> None:
    _touch(tmp_path, "clip01_audio.wav", "clip01_end.mp4", "clip01.txt")
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "a2v")
    assert str(e.value) == (
        "a2v group 'clip01' has no _start image or video "
        "(expected clip01_start.png/.jpg/.jpeg/.mp4/.mov/.avi/.mkv)"
    )


def test_a2v_missing_audio_with_image_start(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01", audio=None)
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "a2v")
    assert str(e.value) == (
        "a2v group 'clip01' has no audio source (expected clip01_audio.wav/.mp3/.ogg/.m4a/.aac/.flac, "
        "or a clip01_start video with an audio track)"
    )


def test_a2v_caption_required_unless_trigger(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01", caption=False)
    _a2v(tmp_path, "clip02")
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "a2v")
    assert (
        str(e.value)
        == "a2v group 'clip01' has no caption (expected a non-empty clip01.txt, or set trigger_phrase)"
    )
    ds = ingest(tmp_path, "a2v", trigger_phrase="tr1gger")
    assert [c.caption for c in ds.clips] == [None, "caption of clip02"]


def test_a2v_empty_caption_counts_as_missing(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01")
    (tmp_path / "clip01.txt").write_text("   \n")
    with pytest.raises(DatasetError, match="'clip01' has no caption"):
        ingest(tmp_path, "a2v")


def test_a2v_file_names_must_be_unique(tmp_path: Path) -> None:
    _a2v(tmp_path / "x", "clip01")
    _touch(tmp_path, "y/clip01_end.mp4")
    with pytest.raises(DatasetError) as e:
        ingest(tmp_path, "a2v")
    assert str(e.value) == (
        "File name 'clip01_end.mp4' appears 2 times (x/clip01_end.mp4, y/clip01_end.mp4): "
        "a2v file names must be unique across the archive"
    )


def test_a2v_two_start_files(tmp_path: Path) -> None:
    _a2v(tmp_path, "clip01")
    _touch(tmp_path, "clip01_start.mp4")
    with pytest.raises(DatasetError, match=r"'clip01' has 2 _start files \(.*\): keep exactly one"):
        ingest(tmp_path, "a2v")


def test_a2v_no_groups_and_strays(tmp_path: Path) -> None:
    _touch(tmp_path, "clip01.mp4", "readme.txt")
    with pytest.raises(DatasetError, match="No a2v groups found"):
        ingest(tmp_path, "a2v")
    _a2v(tmp_path, "g")
    ds = ingest(tmp_path, "a2v")
    text = " | ".join(ds.warnings)
    assert "not part of an a2v group" in text and "clip01.mp4" in text
    assert "match no a2v group: readme.txt" in text


def test_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ingest(tmp_path, "t2v")
