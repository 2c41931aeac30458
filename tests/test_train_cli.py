"""The real CLI: the default demo's outputs, golden losses and reel (pretrained tiny world), and the cache reuse and
preempt-then-resume mechanics (on random weights, 100 steps: cheaper, and independent of the pretrained weights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ltxlab.data.media import probe_video
from tests.cli_runs import REPO, SHORT_RANDOM, cli, losses

GOLDEN = Path(__file__).parent / "golden" / "i2v_demo_losses.json"


DEMO_STEPS = 400  # preset=demo: checkpoints every 100, previews every 200


def test_demo_leaves_lora_config_and_shards(demo_run: Path) -> None:
    result = json.loads((demo_run / "result.json").read_text())
    assert result["billable_units"] == DEMO_STEPS
    assert Path(result["lora_file"]).exists() and Path(result["lora_file_diffusers"]).exists()
    config = json.loads((demo_run / "config.json").read_text())
    assert config["training_type"] == "i2v" and config["trigger_phrase"] == ""  # the sample captions carry "zwx"
    assert config["with_audio"] is True  # every sample clip has a track: auto-detect turns audio on
    index = json.loads((demo_run / "shards" / "index.json").read_text())
    assert sum(index["counts"]) == 12
    assert index["video_latent_shape"] == [96, 3, 16, 16]  # 17 frames at 512×512 → 3×16×16 latents, 96 channels
    assert all((demo_run / "shards" / s).exists() for s in index["shards"])
    keys = load_file(result["lora_file"])
    assert keys and all(k.startswith("diffusion_model.") for k in keys)


def test_demo_logs_to_wandb_offline(demo_run: Path) -> None:
    runs = list((demo_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    last = json.loads((demo_run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss", "video_loss", "audio_loss", "lr", "grad_norm", "step_time", "samples_per_s"):
        assert key in last, key
    assert any(k.startswith("video_loss_sigma_") for k in last)  # per-σ-bucket loss


def test_demo_losses_match_golden_and_converge(demo_run: Path) -> None:
    got = losses(demo_run)
    assert len(got) == DEMO_STEPS
    if os.environ.get("LTXLAB_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1))
    golden = json.loads(GOLDEN.read_text())
    # Bit-exact on the machine that recorded it; other CPUs may differ in the last bits, which compounds slowly.
    assert got[:10] == pytest.approx(golden[:10], rel=1e-3)
    assert sum(got[-20:]) / 20 == pytest.approx(sum(golden[-20:]) / 20, rel=0.03)
    assert sum(got[-20:]) < 0.9 * sum(got[:20])  # it learns


def test_lora_matches_the_checkpoint(demo_run: Path) -> None:
    module = torch.load(demo_run / "checkpoints" / f"step_{DEMO_STEPS:06d}" / "mp_rank_00_model_states.pt",
                        weights_only=False)["module"]
    exported = load_file(str(demo_run / "lora.safetensors"))
    assert len(exported) == len(module)
    for key, value in module.items():
        name = "diffusion_model." + key.replace(".default.", ".")
        assert torch.equal(exported[name], value.float()), name  # alpha = rank here: nothing scaled


def test_demo_reel_is_the_video_output(demo_run: Path) -> None:
    result = json.loads((demo_run / "result.json").read_text())
    assert result["video"] == str(demo_run / "video.mp4")
    info = probe_video(demo_run / "video.mp4")
    # validation settings; each preview shows the base model beside the LoRA (8 px apart)
    assert (info.width, info.height, info.num_frames, info.fps) == (2 * 512 + 8, 512, 17, 24.0)
    assert info.has_audio
    previews = sorted(p.name for p in (demo_run / "previews").glob("*.mp4"))
    steps = [f"step_{step:06d}" for step in range(200, DEMO_STEPS + 1, 200)]
    assert previews == sorted([f"reel_{s}.mp4" for s in steps] + [f"{s}_0.mp4" for s in steps])


def test_rerun_reuses_the_latent_cache(random_run: Path, cache_dir: Path, tmp_path: Path) -> None:
    proc = cli(tmp_path / "again", cache_dir, "validation=none")
    assert "reused cache" in proc.stdout + proc.stderr
    # Validation never touches the training RNG stream: without it the losses are identical.
    assert losses(tmp_path / "again") == losses(random_run)
    assert not (tmp_path / "again" / "video.mp4").exists()
    # A setting that changes the latents rebuilds them (the data stage alone: no second training run needed).
    changed = cli(tmp_path / "changed", cache_dir, "audio=off", module="ltxlab.encode")
    assert "(built)" in changed.stdout + changed.stderr
    assert json.loads((tmp_path / "changed" / "shards" / "index.json").read_text())["with_audio"] is False


def test_preempted_run_resumes_where_it_stopped(random_run: Path, cache_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "ltxlab", *SHORT_RANDOM, "logger=none", "logger.progress_bar=false",
            f"hydra.run.dir={run_dir}", f"data.cache_dir={cache_dir}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # a preempted job: checkpoint after this step and exit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    stopped_at = len(losses(run_dir))
    assert 20 <= stopped_at < 100
    assert not (run_dir / "result.json").exists()

    resumed = cli(run_dir, cache_dir)  # the same command again
    assert f"step {stopped_at})" in resumed.stdout + resumed.stderr
    # The resumed trajectory is the uninterrupted one: same data order, RNG, optimizer and LR state.
    assert losses(run_dir) == pytest.approx(losses(random_run), rel=1e-5)


def test_generate_from_the_demo_lora(demo_run: Path, tmp_path: Path) -> None:
    """``python -m ltxlab.generate`` with the LoRA a real run exported (i2v: image + prompt)."""
    out = tmp_path / "clip.mp4"
    image = REPO / "ltxlab" / "assets" / "validation" / "i2v_start.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ltxlab.generate", "--lora", str(demo_run / "lora.safetensors"),
         "--image", str(image), "--prompt", (image.parent / "i2v_prompt.txt").read_text().strip(),
         "--frames", "9", "--resolution", "low",
         "--steps", "2", "--stg-blocks", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames, info.fps) == (512, 512, 9, 24.0) and info.has_audio
