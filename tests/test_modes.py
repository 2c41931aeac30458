"""Mode strategies on random tensors: which tokens are clean, their timesteps, σ and loss masks."""

from __future__ import annotations

import pytest
import torch

from ltxlab.errors import DatasetError
from ltxlab.modes import AudioToVideo, ImageToVideo, LatentBatch, ShiftedLogitNormal

F, H, W, C = 3, 2, 2, 8
L, D = 5, 16
TPF = H * W  # tokens per latent frame


def batch(b: int = 4, frames: int = F, audio: bool = True) -> LatentBatch:
    g = torch.Generator().manual_seed(0)
    return LatentBatch(video=torch.randn(b, frames * TPF, C, generator=g), video_shape=(frames, H, W),
                       audio=torch.randn(b, L, D, generator=g) if audio else None,
                       text_video=torch.randn(b, 8, 32), text_audio=torch.randn(b, 8, 16),
                       text_mask=torch.ones(b, 8), fps=24.0)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SIGMAS = ShiftedLogitNormal()


def test_i2v_p1_holds_every_first_frame_clean() -> None:
    b = batch()
    inputs = ImageToVideo(1.0, SIGMAS, D).prepare(b, gen())
    v = inputs.video
    assert torch.equal(v.noisy[:, :TPF], b.video[:, :TPF])  # clean, no noise
    assert torch.all(v.timesteps[:, :TPF] == 0)
    assert torch.all(v.loss_mask[:, :TPF] == 0)
    assert torch.all(v.loss_mask[:, TPF:] == 1)
    # the rest is noised at the sample's σ, and σ itself stays the sampled value (prompt AdaLN)
    assert torch.allclose(v.timesteps[:, TPF:], v.sigma[:, None].expand(-1, (F - 1) * TPF))
    assert torch.all(v.sigma > 0)
    assert not torch.allclose(v.noisy[:, TPF:], b.video[:, TPF:])


def test_i2v_p0_never_conditions() -> None:
    inputs = ImageToVideo(0.0, SIGMAS, D).prepare(batch(), gen())
    assert torch.all(inputs.video.loss_mask == 1)
    assert torch.all(inputs.video.timesteps > 0)


def test_i2v_p_half_is_a_per_sample_coin() -> None:
    held = []
    for seed in range(50):
        inputs = ImageToVideo(0.5, SIGMAS, D).prepare(batch(b=4), gen(seed))
        held.extend((inputs.video.loss_mask[:, 0] == 0).tolist())
    rate = sum(held) / len(held)
    assert 0.35 < rate < 0.65


def test_i2v_images_skip_first_frame_conditioning() -> None:
    inputs = ImageToVideo(1.0, SIGMAS, D).prepare(batch(frames=1), gen())
    assert torch.all(inputs.video.loss_mask == 1)
    assert torch.all(inputs.video.timesteps > 0)


def test_i2v_joint_audio_has_its_own_sigma_and_loss() -> None:
    inputs = ImageToVideo(0.5, SIGMAS, D).prepare(batch(b=8), gen())
    assert inputs.audio_in_loss and not inputs.isolate_modalities
    assert not torch.allclose(inputs.audio.sigma, inputs.video.sigma)
    assert torch.all(inputs.audio.loss_mask == 1)
    assert torch.allclose(inputs.audio.timesteps, inputs.audio.sigma[:, None].expand(-1, L))


def test_i2v_without_audio_isolates_a_silent_placeholder() -> None:
    inputs = ImageToVideo(0.5, SIGMAS, D).prepare(batch(audio=False), gen())
    assert not inputs.audio_in_loss and inputs.isolate_modalities
    assert inputs.audio.noisy.shape == (4, 1, D)
    assert torch.all(inputs.audio.sigma == 0) and torch.all(inputs.audio.loss_mask == 0)


def test_a2v_audio_is_never_noised_and_never_in_the_loss() -> None:
    b = batch()
    inputs = AudioToVideo(SIGMAS).prepare(b, gen())
    a = inputs.audio
    assert torch.equal(a.noisy, b.audio)
    assert torch.all(a.sigma == 0) and torch.all(a.timesteps == 0)
    assert torch.all(a.loss_mask == 0) and not inputs.audio_in_loss
    assert not inputs.isolate_modalities  # audio drives video through cross-attention
    v = inputs.video
    assert torch.equal(v.noisy[:, :TPF], b.video[:, :TPF])  # start image always clean
    assert torch.all(v.timesteps[:, :TPF] == 0) and torch.all(v.loss_mask[:, :TPF] == 0)
    assert torch.all(v.loss_mask[:, TPF:] == 1) and torch.all(v.sigma > 0)


def test_a2v_requires_audio() -> None:
    with pytest.raises(DatasetError, match="a2v needs conditioning audio"):
        AudioToVideo(SIGMAS).prepare(batch(audio=False), gen())


def test_same_seed_same_inputs() -> None:
    a = ImageToVideo(0.5, SIGMAS, D).prepare(batch(), gen(7))
    b = ImageToVideo(0.5, SIGMAS, D).prepare(batch(), gen(7))
    assert torch.equal(a.video.noisy, b.video.noisy) and torch.equal(a.audio.noisy, b.audio.noisy)


def test_sigma_sampler_shift_grows_with_tokens() -> None:
    s = ShiftedLogitNormal(uniform_fraction=0.0)
    small = s.sample(4000, 1024, gen()).mean()
    large = s.sample(4000, 6000, gen()).mean()
    assert large > small
    values = ShiftedLogitNormal().sample(4000, 2048, gen())
    assert values.min() >= 1e-3 and values.max() <= 1.0
