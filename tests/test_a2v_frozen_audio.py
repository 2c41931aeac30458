"""a2v training hands the transformer a frozen audio stream: σ = 0 and timesteps 0, as ltx-trainer trains a
conditioning modality and current ltx-pipelines samples it (the PyPI ltx-pipelines 1.0.0 passed the step σ)."""

from __future__ import annotations

import torch

from ltxlab.models import tiny
from ltxlab.models.forward import set_cross_modulation
from ltxlab.modes import AudioToVideo, LatentBatch, ShiftedLogitNormal
from ltxlab.train.step import predict


def test_a2v_training_call_passes_sigma_0_and_timesteps_0_for_the_audio() -> None:
    g = torch.Generator().manual_seed(0)
    batch = LatentBatch(video=torch.randn(2, 12, 8, generator=g), video_shape=(3, 2, 2),
                        audio=torch.randn(2, 7, 16, generator=g), text_video=torch.randn(2, 8, 32, generator=g),
                        text_audio=torch.randn(2, 8, 16, generator=g), text_mask=torch.ones(2, 8), fps=24.0)
    inputs = AudioToVideo(ShiftedLogitNormal()).prepare(batch, torch.Generator().manual_seed(1))
    model = tiny.build_transformer(0).eval()
    set_cross_modulation(model, "ltx_core")
    seen: dict[str, torch.Tensor] = {}

    def capture(name):
        def hook(module, args, kwargs, output):  # a forward hook sees the input after any pre-hook rewrote it
            seen[name] = args[0]
        return hook

    def capture_call(module, args, kwargs):
        seen.update({k: kwargs[k] for k in ("audio_timestep", "audio_sigma", "timestep", "sigma")})

    model.register_forward_pre_hook(capture_call, with_kwargs=True)
    for name in ("av_cross_attn_video_a2v_gate", "av_cross_attn_audio_scale_shift", "audio_prompt_adaln"):
        getattr(model, name).register_forward_hook(capture(name), with_kwargs=True)
    with torch.no_grad():
        predict(model, inputs, batch)
    assert torch.all(seen["audio_timestep"] == 0) and seen["audio_timestep"].shape == (2, 7)
    assert torch.all(seen["audio_sigma"] == 0)
    assert torch.all(seen["sigma"] > 0)  # the video is noised
    # What the model derives from them: the video's A→V gate, the audio's own scale/shift and prompt AdaLN
    # all read σ = 0 for the frozen audio.
    for name in ("av_cross_attn_video_a2v_gate", "av_cross_attn_audio_scale_shift", "audio_prompt_adaln"):
        assert torch.all(seen[name] == 0), name
