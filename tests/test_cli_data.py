"""The CLI's data stage end to end: a2v, the debug archive, and bad datasets failing before training."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from ltxlab.data.media import probe_video
from ltxlab.data.media_write import write_image
from ltxlab.data.sample import make_i2v_dataset
from tests.cli_runs import cli, losses


def test_a2v_trains_video_only_with_frozen_audio(a2v_run: Path) -> None:
    run_dir = a2v_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["training_type"] == "a2v" and config["audio_conditioning"] is True
    assert config["first_frame_conditioning_p"] == 1.0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("audio_loss" not in r for r in records)  # the conditioning audio is never in the loss
    got = losses(run_dir)
    # On the pretrained world the loss starts near its floor (no steady downward trend to assert); what must hold
    # is that every step was finite and the video's audio-reading attention trained from its zero init.
    assert len(got) == 400 and np.isfinite(got).all()
    lora = load_file(str(run_dir / "lora.safetensors"))
    a2v_ups = [t for k, t in lora.items() if ".audio_to_video_attn." in k and "lora_B" in k]
    assert a2v_ups and all(t.abs().sum() > 0 for t in a2v_ups)
    index = json.loads((run_dir / "shards" / "index.json").read_text())
    assert index["with_audio"] and index["audio_latent_shape"]
    reel = probe_video(run_dir / "video.mp4")  # the preview muxes the conditioning audio
    assert reel.has_audio and reel.num_frames == 17


def test_debug_archive_from_a_cached_dataset(random_run: Path, cache_dir: Path, tmp_path: Path) -> None:
    """The data stage writes the archive even when the latents come from the cache (the data stage alone here;
    result.json naming it is checked by test_request's a2v request, which trains)."""
    run_dir = tmp_path / "debug"
    proc = cli(run_dir, cache_dir, "data.debug_dataset=true", module="ltxlab.encode")
    assert "(reused)" in proc.stdout + proc.stderr
    with zipfile.ZipFile(run_dir / "debug_dataset.zip") as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
    assert sum(n.endswith(".mp4") for n in names) == 12 and sum(n.endswith(".txt") for n in names) == 12
    assert len(manifest["kept"]) == 12


def test_bad_dataset_fails_before_training_and_writes_nothing_outside(tmp_path: Path) -> None:
    source = tmp_path / "mixed"
    make_i2v_dataset(source, num_clips=3, seconds=1.0)
    write_image(source / "still.png", np.zeros((64, 64, 3), dtype=np.uint8))
    before = sorted(p.name for p in tmp_path.iterdir())
    source_files = sorted(p.name for p in source.iterdir())
    run_dir = tmp_path / "run"
    proc = cli(run_dir, tmp_path / "cache", f"data.source={source}", check=False)
    assert proc.returncode == 2
    assert "error: Dataset mixes videos and images" in proc.stderr
    error = json.loads((run_dir / "error.json").read_text())
    assert error["status"] == 422 and "mixes videos and images" in error["detail"]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "lora.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "run"])  # no cache written
    assert sorted(p.name for p in source.iterdir()) == source_files  # the source folder is untouched
