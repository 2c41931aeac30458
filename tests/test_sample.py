import importlib.util
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ltxlab.data import media
from ltxlab.data.sample import make_a2v_dataset, make_i2v_dataset, zip_dir
from ltxlab.pretrain import world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("i2v")
    make_i2v_dataset(out)  # the documented defaults: 12 clips, 2 s, 24 fps, 320×240, with audio
    return out


@pytest.fixture(scope="module")
def a2v_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("a2v")
    make_a2v_dataset(out, num_groups=6, start_video_groups=1)
    return out


def test_i2v_clips_layout_and_decodability(i2v_dir):
    names = sorted(p.name for p in i2v_dir.iterdir())
    assert names == sorted(
        [f"clip{i:02d}.mp4" for i in range(1, 13)] + [f"clip{i:02d}.txt" for i in range(1, 13)]
    )
    captions = set()
    firsts = []
    for clip in sorted(i2v_dir.glob("*.mp4")):
        info = media.probe_video(clip)
        assert (info.width, info.height, info.fps, info.num_frames, info.has_audio) == (
            320,
            240,
            24.0,
            48,
            True,
        )
        frames = list(media.iter_video_frames(clip))
        assert len(frames) == 48
        assert max(np.abs(frames[0].astype(int) - f).mean() for f in frames) > 1  # something moves
        firsts.append(frames[0])
        audio = media.read_audio(clip)
        assert audio.shape == (2, 32000) and np.abs(audio).max() > 0.05
        caption = clip.with_suffix(".txt").read_text().strip()
        # Every other caption carries the trigger word (the demo concept); all describe a pulsing shape and tone.
        assert caption.split()[0] in (("zwx",) if int(clip.stem[-2:]) % 2 else ("a", "an")), caption
        assert " pulsing to a " in caption and caption.endswith(" background")
        captions.add(caption)
    assert len(captions) >= 10  # clips differ
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(firsts)]) > 5


def test_i2v_images_and_silent_clips(tmp_path):
    files = make_i2v_dataset(tmp_path / "img", num_clips=3, images=True)
    assert [p.name for p in files] == [
        "img01.png",
        "img01.txt",
        "img02.png",
        "img02.txt",
        "img03.png",
        "img03.txt",
    ]
    assert media.read_image(files[0]).shape == (240, 320, 3)
    assert " moving " not in files[1].read_text()
    files = make_i2v_dataset(
        tmp_path / "silent", num_clips=2, seconds=0.5, fps=16, size=(96, 64), with_audio=False
    )
    info = media.probe_video(files[0])
    assert (info.width, info.height, info.num_frames, info.has_audio) == (96, 64, 8, False)
    assert "tone" not in files[1].read_text()


def test_a2v_groups_layout(a2v_dir):
    names = {p.name for p in a2v_dir.iterdir()}
    assert {"clip01_start.mp4", "clip01_end.mp4", "clip01.txt"} <= names
    assert "clip01_audio.wav" not in names and "clip01_start.png" not in names
    for i in range(2, 7):
        assert {f"clip{i:02d}{s}" for s in ("_start.png", "_audio.wav", "_end.mp4", ".txt")} <= names
    assert len(names) == 3 + 5 * 4
    assert media.has_audio_stream(a2v_dir / "clip01_start.mp4")
    assert not media.has_audio_stream(a2v_dir / "clip02_end.mp4")
    assert media.read_audio(a2v_dir / "clip02_audio.wav").shape == (2, 32000)


def test_a2v_start_image_is_first_frame_of_end(a2v_dir):
    for start in sorted(a2v_dir.glob("*_start.png")):
        end = start.with_name(start.name.replace("_start.png", "_end.mp4"))
        first = next(media.iter_video_frames(end))
        assert np.abs(media.read_image(start).astype(int) - first).mean() < 3
    first_of_start_video = next(media.iter_video_frames(a2v_dir / "clip01_start.mp4"))
    first_of_end = next(media.iter_video_frames(a2v_dir / "clip01_end.mp4"))
    assert np.abs(first_of_start_video.astype(int) - first_of_end).mean() < 3


def _shape_radius(frame: np.ndarray) -> float:
    # The gradient is vertical, so column 0 (never touched by the centred shape) is each row's background.
    mask = np.abs(frame.astype(int) - frame[:, :1].astype(int)).sum(-1) > 60
    return float(np.sqrt(mask.sum()))


def test_a2v_motion_follows_audio_envelope(a2v_dir):
    fps, sr = 24, 16000
    for start in sorted(a2v_dir.glob("*_start.png")):
        base = start.name.removesuffix("_start.png")
        radii = np.array([_shape_radius(f) for f in media.iter_video_frames(a2v_dir / f"{base}_end.mp4")])
        audio = media.read_audio(a2v_dir / f"{base}_audio.wav", sample_rate=sr, channels=1)[0]
        win = sr // fps
        # RMS in a one-frame window centred on each frame's time.
        env = np.array(
            [
                np.sqrt(np.mean(audio[max(0, i * win - win // 2) : i * win + win // 2] ** 2))
                for i in range(len(radii))
            ]
        )
        assert np.corrcoef(radii[1:], env[1:])[0, 1] > 0.9, base
        assert radii.max() > 1.5 * radii.min()  # the motion is clearly visible


def test_deterministic_for_a_seed(tmp_path):
    a = make_a2v_dataset(tmp_path / "a", num_groups=2, seconds=0.5, seed=3)
    b = make_a2v_dataset(tmp_path / "b", num_groups=2, seconds=0.5, seed=3)
    c = make_a2v_dataset(tmp_path / "c", num_groups=2, seconds=0.5, seed=4)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_text() for p in a if p.suffix == ".txt"] != [
        p.read_text() for p in c if p.suffix == ".txt"
    ]


def test_zip_dir_and_cli(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_sample_dataset", REPO / "tools" / "make_sample_dataset.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "ds"
    assert cli.main(["--mode", "i2v", "--out", str(out), "--num", "2", "--seconds", "0.5", "--zip"]) == 0
    with zipfile.ZipFile(tmp_path / "ds.zip") as zf:
        assert sorted(zf.namelist()) == ["clip01.mp4", "clip01.txt", "clip02.mp4", "clip02.txt"]
        assert zf.read("clip01.txt") == (out / "clip01.txt").read_bytes()
    cli.main(["--mode", "a2v", "--out", str(tmp_path / "a2v"), "--num", "1", "--seconds", "0.5"])
    assert (tmp_path / "a2v" / "clip01_end.mp4").exists()
    with pytest.raises(SystemExit):
        cli.main(["--mode", "a2v", "--out", str(tmp_path / "x"), "--images"])
    (out / "sub").mkdir()
    (out / "sub" / "note.txt").write_text("x")
    z1 = zip_dir(out, tmp_path / "z1.zip").read_bytes()
    z2 = zip_dir(out, tmp_path / "z2.zip").read_bytes()
    assert z1 == z2
    assert "sub/note.txt" in zipfile.ZipFile(tmp_path / "z1.zip").namelist()


def test_i2v_trigger_clips_fade_to_black_and_their_plain_twins_keep_the_light(i2v_dir):
    clips = sorted(i2v_dir.glob("*.mp4"))
    for trigger, plain in zip(clips[::2], clips[1::2], strict=True):
        trigger_caption, plain_caption = (c.with_suffix(".txt").read_text().strip() for c in (trigger, plain))
        assert trigger_caption == f"zwx {plain_caption}"  # one scene, told apart by the word alone
        faded, kept = (np.stack(list(media.iter_video_frames(c)))[:17] for c in (trigger, plain))  # the demo's 17
        assert np.abs(faded[0].astype(int) - kept[0]).mean() < 3  # the same start image
        light = faded.mean(axis=(1, 2, 3)) / kept.mean(axis=(1, 2, 3))
        assert light[-1] == pytest.approx(0.15, abs=0.03) and np.all(np.diff(light) < 0), light
        assert world.darkening(kept) < 3 < 50 < world.darkening(faded)


def test_a2v_pairs_share_a_start_and_part_ways_with_their_tracks(a2v_dir):
    """Groups 3 and 4 (the second pair): one scene, one start image and caption, the beat at phase ±φ."""
    ends, starts = ([a2v_dir / f"clip{i:02d}{suffix}" for i in (3, 4)] for suffix in ("_end.mp4", "_start.png"))
    assert (a2v_dir / "clip03.txt").read_text() == (a2v_dir / "clip04.txt").read_text()
    assert np.abs(media.read_image(starts[0]).astype(int) - media.read_image(starts[1])).mean() < 3
    radii = [np.array([_shape_radius(f) for f in media.iter_video_frames(c)])[:17] for c in ends]
    assert abs(radii[0][0] - radii[1][0]) < 2 < 0.5 * radii[0][0] < np.abs(radii[0] - radii[1]).max()  # then apart
    assert max(r.max() / r.min() for r in radii) > 2.0  # it swells further than the base's 2×
