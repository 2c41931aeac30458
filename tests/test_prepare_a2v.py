"""Prepare stage, a2v: the start image becomes frame 0, the conditioning audio is attached, the a2v audio rules."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ltxlab.data.fit import resize_fill_center_crop
from ltxlab.data.ingest import ingest
from ltxlab.data.media import probe_video, read_image
from ltxlab.data.media_write import write_image, write_wav
from ltxlab.data.prepare import iter_prepared, plan, write_debug_archive
from ltxlab.data.sample import make_a2v_dataset
from ltxlab.errors import DatasetError
from tests.prepare_helpers import SR, H, W, fitted, prep, settings, tone, video


@pytest.fixture(scope="module")
def a2v_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("a2v")
    make_a2v_dataset(root, num_groups=2, seconds=1.0, size=(160, 120), start_video_groups=1)
    # A start image that differs from the target's own frame 0, so the assembly is visible.
    write_image(root / "clip02_start.png", np.full((90, 200, 3), (10, 220, 10), np.uint8))
    return root


def test_a2v_start_image_is_frame_zero_and_audio_attached(a2v_root: Path) -> None:
    p, clips = prep(a2v_root, settings("a2v"))
    assert p.with_audio and [c.name for c in clips] == ["clip01", "clip02"]
    c1, c2 = clips
    # clip02: the _start.png, fitted, is frame 0; frame 1 is the target's own frame 1.
    start = read_image(a2v_root / "clip02_start.png")
    np.testing.assert_array_equal(c2.frames[0], resize_fill_center_crop(start, W, H))
    target = fitted(a2v_root / "clip02_end.mp4")
    next(target)
    np.testing.assert_array_equal(c2.frames[1], next(target))
    target.close()
    # clip01: the first frame of the _start video; its audio track is the conditioning audio.
    np.testing.assert_array_equal(c1.frames[0], next(fitted(a2v_root / "clip01_start.mp4")))
    for c in clips:
        assert c.frames.shape == (17, H, W, 3)
        assert c.audio.shape == (2, round(17 / 24 * SR)) and np.isclose(np.abs(c.audio).max(), 0.99, atol=1e-3)
        assert c.source.endswith("_end.mp4")


def test_a2v_start_video_without_audio_rejects_the_request(tmp_path: Path) -> None:
    video(tmp_path / "g_start.mp4", 24, audio=False)
    video(tmp_path / "g_end.mp4", 24, audio=False)
    (tmp_path / "g.txt").write_text("cap")
    with pytest.raises(DatasetError) as e:
        plan(ingest(tmp_path, "a2v"), settings("a2v"))
    assert str(e.value) == (
        "a2v group 'g' has no usable audio: g_start.mp4 has no audio track and there is no g_audio file "
        "(.wav/.mp3/.ogg/.m4a/.aac/.flac)"
    )


def test_a2v_corrupt_audio_file_rejects_the_request(tmp_path: Path) -> None:
    write_image(tmp_path / "g_start.png", np.zeros((64, 64, 3), np.uint8))
    video(tmp_path / "g_end.mp4", 24, audio=False)
    (tmp_path / "g_audio.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(DatasetError, match=r"a2v group 'g' has no usable audio: g_audio\.wav"):
        plan(ingest(tmp_path, "a2v", trigger_phrase="t"), settings("a2v"))


def test_a2v_too_short_and_audio_fitting(tmp_path: Path) -> None:
    write_image(tmp_path / "g_start.png", np.zeros((64, 64, 3), np.uint8))
    video(tmp_path / "g_end.mp4", 24, audio=False)
    write_wav(tmp_path / "g_audio.wav", tone(2.0, amp=0.3), SR)  # twice the target's length
    ds = ingest(tmp_path, "a2v", trigger_phrase="t")
    with pytest.raises(DatasetError, match="All training videos are too short to be trainable"):
        plan(ds, settings("a2v", number_of_frames=25))
    for preserve in (True, False):
        p = plan(ds, settings("a2v", audio_preserve_pitch=preserve, audio_normalize=False, trigger_phrase="t"))
        (c,) = list(iter_prepared(p))
        assert c.caption == "t" and c.audio.shape == (2, round(17 / 24 * SR))
        assert 0.2 < np.abs(c.audio).max() < 0.4


def test_a2v_scene_split_after_assembly(tmp_path: Path) -> None:
    write_image(tmp_path / "g_start.png", np.full((64, 64, 3), 255, np.uint8))
    video(tmp_path / "g_end.mp4", 48, audio=False, cut_at=24)
    write_wav(tmp_path / "g_audio.wav", tone(2.0), SR)
    (tmp_path / "g.txt").write_text("cap")
    p, clips = prep(tmp_path, settings("a2v", split_input_into_scenes=True, split_input_duration_threshold=1.0))
    assert [c.name for c in clips] == ["g_scene001", "g_scene002"]
    assert [it.use_start for it in p.items] == [True, False]
    assert (clips[0].frames[0] == 255).all()  # the start image opens the first scene only
    assert clips[1].frames[0, H // 2, 10, 2] > 150


def test_debug_archive_mp4s_carry_audio(a2v_root: Path, tmp_path: Path) -> None:
    p = plan(ingest(a2v_root, "a2v"), settings("a2v"))
    out = tmp_path / "debug.zip"
    write_debug_archive(p, iter_prepared(p), out)
    zf = zipfile.ZipFile(out)
    zf.extract("clips/clip02.mp4", tmp_path)
    info = probe_video(tmp_path / "clips" / "clip02.mp4")
    assert info.has_audio and info.num_frames == 17
    m = json.loads(zf.read("manifest.json"))
    assert m["kept"][1]["start"] == "clip02_start.png" and m["kept"][1]["audio_source"] == "clip02_audio.wav"
    assert m["kept"][0]["audio_source"] == "clip01_start.mp4"
