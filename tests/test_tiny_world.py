"""The shipped tiny world (``model=tiny``): behaviour measured on decoded frames and audio of held-out clips.

Every metric is also computed on random weights of the same classes and sizes, which must fail it, so each
threshold separates a trained model from an untrained one. tools/pretrain_tiny.py measures the codec metrics with the
same functions and writes them into the manifest. Skipped while no weights ship (issue 13).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxlab.data.media_write import write_image
from ltxlab.generate import GenerateInputs, generate_clip
from ltxlab.models import tiny
from ltxlab.models.pretrained import BUILTIN, BUILTIN_DIR, PretrainedTiny
from ltxlab.models.spec import ModelConfig
from ltxlab.pretrain import codec_stages as codec
from ltxlab.pretrain import world
from ltxlab.sample.settings import SamplingSettings

if not (BUILTIN_DIR / "manifest.json").is_file():
    pytest.skip("no pretrained tiny weights ship yet (ltxlab/assets/tiny; issue 13)", allow_module_level=True)

# Provisional until weights ship: the bar is 25 dB; the audio stage alone measured 0.962 (README).
VAE_PSNR_DB = 20.0  # the random VAE gives ~11 dB
ENVELOPE_CORRELATION = 0.8  # the random audio VAE gives ~0
FIRST_FRAME_PSNR_DB = 20.0  # frame 0 vs the start image (after its CRF 33 re-encode); random family ~11 dB


@pytest.fixture(scope="module")
def shipped() -> PretrainedTiny:
    return PretrainedTiny.open(BUILTIN)


def _random_twin(shipped: PretrainedTiny, component: str) -> torch.nn.Module:
    """The same class and sizes as the shipped component, with random weights."""
    module = tiny.build_from_config(component, shipped.manifest()["configs"][component], seed=1)
    return module.eval().requires_grad_(False)


def test_video_vae_reconstructs_held_out_clips_at_the_demo_size(shipped: PretrainedTiny) -> None:
    trained = codec.heldout_video_psnr(shipped.build("video_vae").eval(), shipped.seed, clips=2)
    untrained = codec.heldout_video_psnr(_random_twin(shipped, "video_vae"), shipped.seed, clips=1)
    print(f"video VAE held-out PSNR: {trained:.2f} dB (random: {untrained:.2f} dB)")
    assert trained >= VAE_PSNR_DB > untrained


def test_audio_round_trip_keeps_the_loudness_envelope(shipped: PretrainedTiny) -> None:
    audio_vae, vocoder = shipped.build("audio_vae").eval(), shipped.build("vocoder").eval()
    trained = codec.heldout_envelope_correlation(audio_vae, vocoder, shipped.seed)
    untrained = codec.heldout_envelope_correlation(_random_twin(shipped, "audio_vae"), vocoder, shipped.seed)
    print(f"audio envelope correlation: {trained:.3f} (random audio VAE: {untrained:.3f})")
    assert trained >= ENVELOPE_CORRELATION > untrained


def _i2v_clip(tmp_path, weights: str) -> tuple[np.ndarray, np.ndarray, world.ClipSpec]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = world.random_spec(np.random.default_rng([7, 0]), ("left", "right"))
    start = world.render_frames(spec, 1, 24, codec.VIDEO_SIZE)[0]
    write_image(tmp_path / "start.png", start)
    settings = SamplingSettings(number_of_frames=codec.VIDEO_FRAMES, resolution="low", aspect_ratio="1:1",
                                inference_steps=8, stg_blocks=[1], seed=0)
    model = ModelConfig(tiny_weights=weights)
    inputs = GenerateInputs(prompt=spec.caption(), image=str(tmp_path / "start.png"), audio=None)
    clip = generate_clip(model, None, inputs, settings, tmp_path, torch.device("cpu"))
    return clip.frames, start, spec


def test_i2v_preview_starts_on_the_given_image_and_continues_it(tmp_path) -> None:
    frames, start, spec = _i2v_clip(tmp_path, BUILTIN)
    first = world.psnr(frames[0], start)
    _, _, radius = world.measure_shape(frames, spec.colour)
    print(f"frame 0 vs start image: {first:.2f} dB; shape radius per frame: {np.round(radius, 1).tolist()}")
    assert first >= FIRST_FRAME_PSNR_DB
    # Later frames continue the image: the captioned shape is still there, at about its size.
    expected = spec.radius * min(codec.VIDEO_SIZE)
    assert np.all(radius[1:] > 0.5 * expected)
    random_frames, _, _ = _i2v_clip(tmp_path / "random", "")
    assert world.psnr(random_frames[0], start) < FIRST_FRAME_PSNR_DB
