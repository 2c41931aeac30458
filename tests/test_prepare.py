"""Prepare stage: length rule, fitting, audio rule, scenes, hostile media, debug archive (a2v: test_prepare_a2v)."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ltxlab.data.fit import resize_fill_center_crop
from ltxlab.data.ingest import ingest
from ltxlab.data.media import probe_video, read_image
from ltxlab.data.prepare import iter_prepared, plan, write_debug_archive
from ltxlab.data.sample import make_i2v_dataset
from ltxlab.errors import ConfigError, DatasetError
from tests.prepare_helpers import SR, H, W, fitted, prep, settings, video


@pytest.fixture(scope="module")
def i2v_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("i2v")
    make_i2v_dataset(root, num_clips=3, seconds=1.0, size=(160, 120))  # 24 frames each, AAC tone track
    return root


# ---------------------------------------- i2v


def test_i2v_fitted_clips_audio_and_captions(i2v_root: Path) -> None:
    p, clips = prep(i2v_root, settings(trigger_phrase="tr1gger"))
    assert p.with_audio and "all 3 clips have an audio track" in p.audio_reason
    assert [c.name for c in clips] == ["clip01", "clip02", "clip03"]
    for c in clips:
        assert c.frames.shape == (17, H, W, 3) and c.frames.dtype == np.uint8
        assert c.fps == 24.0
        assert c.audio is not None and c.audio.shape == (2, round(17 / 24 * SR)) and c.audio.dtype == np.float32
        assert np.isclose(np.abs(c.audio).max(), 0.99, atol=1e-3)  # peak-normalised
        assert c.caption.startswith(("tr1gger a ", "tr1gger zwx a "))  # the trigger, then the clip's own caption
    assert clips[0].source == "clip01.mp4"
    # Resize-to-fill then centre crop, frame for frame.
    decoded = fitted(i2v_root / "clip02.mp4")
    for k in range(17):
        np.testing.assert_array_equal(clips[1].frames[k], next(decoded))
    decoded.close()


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((120, 160), (288, 512)),
        ((360, 640), (512, 512)),
        ((1080, 1920), (768, 448)),
        ((600, 1100), (256, 256)),
    ],
)
def test_fit_frame_matches_the_fill_and_crop_rule(src: tuple[int, int], dst: tuple[int, int]) -> None:
    # A smooth image: the crop-first fast path may differ from a resize-first reference by sub-pixel rounding.
    yy, xx = np.mgrid[0 : src[0], 0 : src[1]]
    img = np.stack([xx * 255 // src[1], yy * 255 // src[0], (xx + yy) % 256], -1).astype(np.uint8)
    out = np.zeros((2, dst[1], dst[0], 3), np.uint8)
    got = resize_fill_center_crop(img, *dst, out=out[1])
    assert got.shape == (dst[1], dst[0], 3) and np.shares_memory(got, out)
    ref = _resize_first_reference(img, *dst)
    assert np.abs(got[..., :2].astype(int) - ref[..., :2]).mean() < 2.5


def _resize_first_reference(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """The textbook rule: scale the whole frame to fill, then cut the centre."""
    scale = max(width / img.shape[1], height / img.shape[0])
    new_w, new_h = max(width, round(img.shape[1] * scale)), max(height, round(img.shape[0] * scale))
    big = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    return big[y0 : y0 + height, x0 : x0 + width]


def test_worker_count_does_not_change_results(i2v_root: Path) -> None:
    _, one = prep(i2v_root, settings(num_workers=1))
    _, two = prep(i2v_root, settings(num_workers=2))
    assert [c.name for c in one] == [c.name for c in two]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.audio, b.audio)


def test_frame_buffers_are_reused_only_after_release(i2v_root: Path) -> None:
    p = plan(ingest(i2v_root, "i2v"), settings(num_workers=1, with_audio=False))
    _, reference = prep(i2v_root, settings(num_workers=1, with_audio=False))
    clips = iter_prepared(p)
    first = next(clips)
    first_buffer = first.frames.ctypes.data
    first.release()
    assert first.frames.size == 0
    second = next(clips)  # decoded after the release: it gets the same memory back
    assert second.frames.ctypes.data == first_buffer
    third = next(clips)  # the second is still held, so the third must not share its buffer
    assert not np.shares_memory(second.frames, third.frames)
    np.testing.assert_array_equal(second.frames, reference[1].frames)
    np.testing.assert_array_equal(third.frames, reference[2].frames)


def test_stopping_early_does_not_hang(i2v_root: Path) -> None:
    p = plan(ingest(i2v_root, "i2v"), settings(num_workers=2))
    gen = iter_prepared(p)
    next(gen)
    t = time.monotonic()
    gen.close()
    assert time.monotonic() - t < 10


def test_all_too_short_is_the_seeds_error(i2v_root: Path) -> None:
    with pytest.raises(DatasetError) as e:
        plan(ingest(i2v_root, "i2v"), settings(number_of_frames=33))
    assert str(e.value) == (
        "All training videos are too short to be trainable (need at least 33 frames; longest video has 24). "
        "Turn on auto_scale_input or lower number_of_frames."
    )


def test_short_clips_are_skipped_and_logged(tmp_path: Path) -> None:
    video(tmp_path / "long.mp4", 40)
    video(tmp_path / "short.mp4", 24)
    p, clips = prep(tmp_path, settings(number_of_frames=33))
    assert [c.name for c in clips] == ["long"] and clips[0].frames.shape[0] == 33
    assert p.skipped == [("short", "too short: video has 24 frames, needs 33 (auto_scale_input is off)")]


def test_auto_scale_resamples_rate_and_count(tmp_path: Path) -> None:
    video(tmp_path / "a.mp4", 60, fps=30)
    video(tmp_path / "b.mp4", 12, fps=24)
    p, clips = prep(tmp_path, settings(number_of_frames=25, auto_scale_input=True))
    a, b = p.items
    assert a.indices == [int(np.floor(i * 1.25 + 0.5)) for i in range(25)]  # 30 -> 24 fps
    assert b.indices[0] == 0 and b.indices[-1] == 11 and len(b.indices) == 25  # short clip stretched
    assert [c.frames.shape[0] for c in clips] == [25, 25]
    assert all(c.audio.shape == (2, round(25 / 24 * SR)) for c in clips)
    # Off: the first N source frames as they are; the short clip is skipped.
    p, _ = prep(tmp_path, settings(number_of_frames=25))
    assert [it.indices for it in p.items] == [list(range(25))]


def test_number_of_frames_snaps_down(i2v_root: Path) -> None:
    s = settings(number_of_frames=20)
    p = plan(ingest(i2v_root, "i2v"), s)
    assert p.settings.number_of_frames == 17 and s.number_of_frames == 20
    assert any("snapped down to 17" in w for w in p.warnings)
    with pytest.raises(ConfigError):
        plan(ingest(i2v_root, "i2v"), settings(number_of_frames=5))


# ---------------------------------------- audio rule


@pytest.fixture(scope="module")
def half_silent_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("half")
    video(root / "clip01.mp4", 24)
    video(root / "clip02.mp4", 24, audio=False)
    video(root / "clip03.mp4", 24)
    return root


def test_with_audio_null_is_all_or_nothing(half_silent_root: Path, i2v_root: Path) -> None:
    p, clips = prep(half_silent_root, settings(with_audio=None))
    assert not p.with_audio and "1 of 3 clips have no audio track (clip02.mp4)" in p.audio_reason
    assert all(c.audio is None for c in clips)


def test_with_audio_true_fails_on_a_silent_clip(half_silent_root: Path) -> None:
    with pytest.raises(DatasetError) as e:
        plan(ingest(half_silent_root, "i2v"), settings(with_audio=True))
    assert str(e.value) == (
        "with_audio=true but 1 clip has no audio track: clip02.mp4. Remove them or set with_audio to null/false."
    )


def _video_with_empty_audio_track(path: Path, n: int = 24) -> Path:
    """An mkv that declares an AAC stream but carries no audio packets (some screen recorders write these)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        out.add_stream("aac", rate=SR, layout="stereo")
        for i in range(n):
            frame = np.full((120, 160, 3), (i * 9) % 256, np.uint8)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(vs.encode(None))
    return path


def test_an_empty_audio_track_counts_as_silent(tmp_path: Path) -> None:
    video(tmp_path / "a.mp4", 24)
    _video_with_empty_audio_track(tmp_path / "b.mkv")
    p, clips = prep(tmp_path, settings(with_audio=None))
    assert [c.name for c in clips] == ["a", "b"] and not p.skipped  # b's video is trained, not dropped
    assert not p.with_audio and "(b.mkv)" in p.audio_reason
    with pytest.raises(DatasetError, match=r"with_audio=true but 1 clip has no audio track: b\.mkv"):
        plan(ingest(tmp_path, "i2v"), settings(with_audio=True))


def test_scene_names_never_collide_with_file_names(tmp_path: Path) -> None:
    video(tmp_path / "long.mp4", 48, cut_at=24)
    video(tmp_path / "long_scene001.mp4", 24)
    p = plan(ingest(tmp_path, "i2v"), settings(split_input_duration_threshold=1.0))
    names = [it.name for it in p.items]
    assert len(set(names)) == len(names) == 3 and "long_scene001" in names


def test_with_audio_false_ignores_tracks(i2v_root: Path) -> None:
    p, clips = prep(i2v_root, settings(with_audio=False))
    assert not p.with_audio and all(c.audio is None for c in clips)


def test_audio_normalize_off_and_trim_pad(tmp_path: Path) -> None:
    video(tmp_path / "a.mp4", 24)
    _, (c,) = prep(tmp_path, settings(audio_normalize=False, audio_preserve_pitch=False))
    assert c.audio.shape == (2, round(17 / 24 * SR))
    assert 0.4 < np.abs(c.audio).max() < 0.6  # the source's 0.5 amplitude, untouched


# ---------------------------------------- images


def test_images_are_single_frames_without_audio(tmp_path: Path) -> None:
    make_i2v_dataset(tmp_path, num_clips=2, size=(160, 120), images=True)
    p, clips = prep(tmp_path, settings(number_of_frames=121))  # the length rule does not apply to stills
    assert p.is_image and not p.with_audio
    assert [c.frames.shape for c in clips] == [(1, H, W, 3)] * 2 and all(c.audio is None for c in clips)
    np.testing.assert_array_equal(clips[0].frames[0], resize_fill_center_crop(read_image(tmp_path / "img01.png"), W, H))
    with pytest.raises(DatasetError, match="with_audio=true but the dataset is images"):
        plan(ingest(tmp_path, "i2v"), settings(with_audio=True))


# ---------------------------------------- hostile media


def test_corrupt_and_disguised_playlists_are_skipped(tmp_path: Path) -> None:
    video(tmp_path / "good.mp4", 24)
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "hls.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n")
    (tmp_path / "concat.mov").write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    (tmp_path / "empty.mkv").write_bytes(b"")
    p, clips = prep(tmp_path, settings())
    assert [c.name for c in clips] == ["good"]
    reasons = dict(p.skipped)
    assert set(reasons) == {"garbage", "hls", "concat", "empty"}
    assert all(r.startswith("unreadable: ") for r in reasons.values())
    assert "playlist" in reasons["hls"] and "playlist" in reasons["concat"]


def test_all_unreadable_fails(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"\0" * 1000)
    (tmp_path / "b.avi").write_text("#EXTM3U\nhttp://x/y.ts\n")
    with pytest.raises(DatasetError, match=r"No usable training videos: all 2 could not be read: a \(unreadable"):
        plan(ingest(tmp_path, "i2v"), settings())


def test_truncated_video_is_skipped_while_decoding(tmp_path: Path) -> None:
    video(tmp_path / "good.mp4", 24)
    full = video(tmp_path / "cut.mp4", 48, size=(320, 240)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 4])  # index up front (faststart), data cut short
    p = plan(ingest(tmp_path, "i2v"), settings(with_audio=False))
    assert [it.name for it in p.items] == ["cut", "good"]
    clips = list(iter_prepared(p))
    assert [c.name for c in clips] == ["good"]
    assert p.skipped and p.skipped[0][0] == "cut" and "truncated or corrupt" in p.skipped[0][1]
    # Nothing usable left after decoding: a DatasetError, not an internal failure.
    (tmp_path / "good.mp4").unlink()
    p = plan(ingest(tmp_path, "i2v"), settings(with_audio=False))
    with pytest.raises(DatasetError, match="No usable training clips"):
        list(iter_prepared(p))


# ---------------------------------------- scenes


def test_long_video_is_split_into_scenes_sharing_the_caption(tmp_path: Path) -> None:
    video(tmp_path / "cut.mp4", 48, cut_at=24)
    (tmp_path / "cut.txt").write_text("a bar sweeping")
    p, clips = prep(tmp_path, settings(split_input_duration_threshold=1.0, trigger_phrase="T"))
    assert [(it.name, it.scene) for it in p.items] == [("cut_scene001", (0, 24)), ("cut_scene002", (24, 48))]
    assert [c.caption for c in clips] == ["T a bar sweeping"] * 2
    assert clips[0].frames[0, H // 2, 10, 0] > 150 and clips[1].frames[0, H // 2, 10, 2] > 150  # red, then blue
    np.testing.assert_allclose(p.items[1].start_s, 1.0)
    assert all(c.audio.shape == (2, round(17 / 24 * SR)) for c in clips)
    # Off, or not longer than the threshold: one clip.
    p, _ = prep(tmp_path, settings(split_input_into_scenes=False))
    assert [it.name for it in p.items] == ["cut"]
    p, _ = prep(tmp_path, settings(split_input_duration_threshold=2.5))
    assert [it.name for it in p.items] == ["cut"]


def test_scene_length_rule_applies_per_scene(tmp_path: Path) -> None:
    video(tmp_path / "cut.mp4", 50, cut_at=20)
    p, clips = prep(tmp_path, settings(number_of_frames=25, split_input_duration_threshold=1.0))
    assert [c.name for c in clips] == ["cut_scene002"]
    assert p.skipped == [("cut_scene001", "too short: scene has 20 frames, needs 25 (auto_scale_input is off)")]
    # Every scene too short, though the whole video is not: the error says so and how to fix it.
    with pytest.raises(DatasetError, match=r"longest scene has 30.* set split_input_into_scenes=false"):
        plan(ingest(tmp_path, "i2v"), settings(number_of_frames=33, split_input_duration_threshold=1.0))


def test_scene_threshold_range_is_checked(i2v_root: Path) -> None:
    with pytest.raises(ConfigError, match="split_input_duration_threshold"):
        plan(ingest(i2v_root, "i2v"), settings(split_input_duration_threshold=0.5))


# ---------------------------------------- debug archive


def test_debug_archive_contents(half_silent_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(half_silent_root, root)
    video(root / "clip04.mp4", 10)  # too short
    (root / "clip05.mp4").write_text("#EXTM3U\n")
    (root / "clip01.txt").write_text("first clip")
    p = plan(ingest(root, "i2v"), settings(with_audio=False, trigger_phrase="T"))
    out = tmp_path / "run" / "debug_dataset.zip"
    write_debug_archive(p, iter_prepared(p), out)
    zf = zipfile.ZipFile(out)
    names = set(zf.namelist())
    assert names == {"manifest.json"} | {f"clips/clip0{i}.{e}" for i in (1, 2, 3) for e in ("mp4", "txt")}
    assert zf.read("clips/clip01.txt").decode() == "T first clip\n"
    m = json.loads(zf.read("manifest.json"))
    assert m["mode"] == "i2v" and m["with_audio"] is False and "with_audio=false" in m["audio_decision"]
    assert [k["name"] for k in m["kept"]] == ["clip01", "clip02", "clip03"]
    assert m["kept"][0]["frames"] == 17 and (m["kept"][0]["width"], m["kept"][0]["height"]) == (W, H)
    skipped = {s["name"]: s["reason"] for s in m["skipped"]}
    assert skipped["clip04"].startswith("too short") and "playlist" in skipped["clip05"]
    assert m["settings"]["number_of_frames"] == 17
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left behind
    zf.extract("clips/clip01.mp4", tmp_path / "x")
    info = probe_video(tmp_path / "x" / "clips" / "clip01.mp4")
    assert (info.width, info.height, info.num_frames, info.has_audio) == (W, H, 17, False)


def test_image_debug_archive_and_source_folder_untouched(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_i2v_dataset(src, num_clips=2, size=(160, 120), images=True)
    (src / "img02.txt").write_bytes(b"")  # empty caption: trigger phrase only
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in src.iterdir())
    p = plan(ingest(src, "i2v"), settings(trigger_phrase="T"))
    out = tmp_path / "run" / "debug.zip"
    write_debug_archive(p, iter_prepared(p), out)
    zf = zipfile.ZipFile(out)
    assert sorted(zf.namelist()) == [
        "clips/img01.png",
        "clips/img01.txt",
        "clips/img02.png",
        "clips/img02.txt",
        "manifest.json",
    ]
    assert zf.read("clips/img02.txt") == b"T\n"
    m = json.loads(zf.read("manifest.json"))
    assert m["kind"] == "image" and m["kept"][0]["frames"] == 1
    assert any("Caption img02.txt is empty" in w for w in m["warnings"])
    assert sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in src.iterdir()) == before
