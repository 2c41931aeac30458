"""Each clip's real frame rate reaches the shards and the RoPE positions; its audio covers its real duration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltxlab.data.shards import EncodedSample
from ltxlab.models import tiny
from ltxlab.models.forward import call_transformer, set_cross_modulation
from ltxlab.train.batches import collate
from tests.prepare_helpers import SR, prep, settings, video


def test_clips_keep_their_own_rate_and_audio_duration(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    video(root / "slow.mp4", 20, fps=24)
    video(root / "fast.mp4", 20, fps=60)
    _, clips = prep(root, settings(auto_scale_input=False, split_input_into_scenes=False))
    by_name = {c.name: c for c in clips}
    assert by_name["slow"].fps == pytest.approx(24.0) and by_name["fast"].fps == pytest.approx(60.0)
    for clip in clips:  # 17 frames: 17/24 s and 17/60 s of audio
        assert clip.audio.shape[1] == round(17 / clip.fps * SR)


def test_auto_scale_clips_run_at_the_target_rate(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    video(root / "fast.mp4", 60, fps=60)
    _, clips = prep(root, settings(auto_scale_input=True, frame_rate=24, split_input_into_scenes=False))
    assert clips[0].fps == 24.0 and clips[0].audio.shape[1] == round(17 / 24 * SR)


def _sample(name: str, fps: float, g: torch.Generator) -> EncodedSample:
    tensors = {"video": torch.randn(8, 2, 2, 2, generator=g), "text_video": torch.randn(8, 32, generator=g),
               "text_audio": torch.randn(8, 16, generator=g), "text_mask": torch.ones(8)}
    return EncodedSample(key=name, tensors=tensors, meta={"name": name, "fps": fps})


def test_per_sample_fps_reaches_the_positions() -> None:
    g = torch.Generator().manual_seed(0)
    samples = [_sample("a", 24.0, g), _sample("b", 60.0, g)]
    batch = collate(samples, torch.device("cpu"), fps=24.0)
    assert batch.fps.tolist() == [24.0, 60.0]
    model = tiny.build_transformer(0).eval()
    set_cross_modulation(model, "ltx_core")

    def run(b, fps, rows):
        n = b.video.shape[1]
        t = torch.full((len(rows), n), 0.6)
        audio = torch.zeros(len(rows), 1, 16)
        with torch.no_grad():
            return call_transformer(
                model, video=b.video[rows], audio=audio, text_video=b.text_video[rows],
                text_audio=b.text_audio[rows], text_mask=b.text_mask[rows], video_timesteps=t,
                audio_timesteps=torch.zeros(len(rows), 1), sigma=t[:, 0], audio_sigma=torch.zeros(len(rows)),
                video_shape=b.video_shape, fps=fps, isolate_modalities=True)[0]

    together = run(batch, batch.fps, [0, 1])
    assert torch.allclose(together[0], run(batch, 24.0, [0])[0], atol=1e-6)
    assert torch.allclose(together[1], run(batch, 60.0, [1])[0], atol=1e-6)
    assert not torch.allclose(together[1], run(batch, 24.0, [1])[0], atol=1e-5)


def test_clips_of_different_durations_cannot_share_a_batch() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = _sample("a", 24.0, g), _sample("b", 60.0, g)
    a.tensors["audio"], b.tensors["audio"] = torch.randn(18, 16), torch.randn(8, 16)
    with pytest.raises(ValueError, match=r"optim\.batch_size=1"):
        collate([a, b], torch.device("cpu"), fps=24.0)
