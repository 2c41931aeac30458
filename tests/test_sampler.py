"""The sampler: the reference schedule, which passes run per guidance combination (and what each pass perturbs),
conditioning kept exact, a2v audio frozen at σ = 0, determinism. Step-for-step parity with Lightricks' own
denoising loop is in tests/parity/test_sampling_parity.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ltxlab.models import codecs, loader
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts
from ltxlab.sample.guidance import Guider
from ltxlab.sample.sampler import SampleRequest, calls_per_step, sample
from ltxlab.sample.schedule import ltx2_sigmas
from ltxlab.sample.settings import SamplingSettings

MODEL = ModelConfig()
FRAMES, SIZE = 9, 64  # -> 2 x 2 x 2 latent video tokens
FIRST_TOKENS = (SIZE // 32) ** 2


@pytest.fixture(scope="module")
def parts():
    text = loader.load_text_stack(MODEL)
    prompt, negative = encode_prompts(text, ["a robot dances in the rain"]), encode_prompts(text, ["blurry"])
    return loader.load_transformer(MODEL), prompt, negative


class Calls:
    """Records what reaches every transformer call, and which self-attentions the STG pass perturbs."""

    def __init__(self, transformer):
        self.calls: list[dict] = []
        self.transformer = transformer
        self.handles = [transformer.register_forward_pre_hook(self._hook, with_kwargs=True)]
        for b, block in enumerate(transformer.transformer_blocks):
            for name in ("attn1", "audio_attn1"):
                # a forward hook sees the kwargs the attention really ran with (after every pre-hook)
                self.handles.append(getattr(block, name).register_forward_hook(
                    lambda m, a, kw, out, name=name, b=b: self._attn(name, b, kw), with_kwargs=True))

    def _hook(self, module, args, kwargs):
        self.calls.append({
            "batch": kwargs["hidden_states"].shape[0],
            "video": kwargs["hidden_states"].detach().clone(),
            "audio": kwargs["audio_hidden_states"].detach().clone(),
            "audio_text": kwargs["audio_encoder_hidden_states"].detach().clone(),
            "timestep": kwargs["timestep"].detach().clone(),
            "audio_timestep": kwargs["audio_timestep"].detach().clone(),
            "sigma": kwargs["sigma"].detach().clone(),
            "audio_sigma": kwargs["audio_sigma"].detach().clone(),
            "isolate": kwargs["isolate_modalities"],
            "stg": kwargs["spatio_temporal_guidance_blocks"],
            "training": module.training,
            "perturbed": set(),
        })

    def _attn(self, name, block, kwargs):
        if kwargs.get("perturbation_mask") is not None:
            self.calls[-1]["perturbed"].add(("video" if name == "attn1" else "audio", block))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def make_request(parts, **overrides) -> SampleRequest:
    _, prompt, negative = parts
    request_fields = {k: overrides.pop(k) for k in ("first_frame", "audio", "generate_audio") if k in overrides}
    base = dict(number_of_frames=FRAMES, width=SIZE, height=SIZE, frame_rate=24, inference_steps=2, stg_blocks=[1],
                seed=7)
    settings = SamplingSettings(**{**base, **overrides})
    return SampleRequest(prompt=prompt, negative=negative, settings=settings, **request_fields)


def run(parts, request):
    with Calls(parts[0]) as rec:
        out = sample(parts[0], request)
    return out, rec.calls


def start_latent(seed: int = 3) -> torch.Tensor:
    return torch.randn(1, 8, 1, SIZE // 32, SIZE // 32, generator=torch.Generator().manual_seed(seed))


def audio_latents(length: int = 10) -> torch.Tensor:
    return torch.randn(1, length, 16, generator=torch.Generator().manual_seed(11))


def test_schedule_is_ltx_core_ltx2scheduler_without_a_latent() -> None:
    """Fixed 4096-token shift (μ = 2.05) stretched to a terminal σ of 0.1, then 0 — checked against the formula."""
    import math

    for steps in (2, 8, 30):
        sigmas = ltx2_sigmas(steps)
        t = torch.linspace(1, 0, steps + 1)[:-1].double()
        shifted = math.exp(2.05) / (math.exp(2.05) + 1 / t - 1)
        expected = 1 - (1 - shifted) * 0.9 / (1 - shifted[-1])
        assert sigmas.shape == (steps + 1,) and abs(sigmas[0] - 1) < 1e-6 and sigmas[-1] == 0
        assert torch.allclose(sigmas[:-1].double(), expected, atol=1e-6)
        assert abs(sigmas[-2] - 0.1) < 1e-6
    # the default preview: 13 of 30 steps above σ = 0.9 (a token-count shift at 960²×89 put 22 there)
    assert int((ltx2_sigmas(30)[:-1] > 0.9).sum()) == 13
    with pytest.raises(ValueError, match="at least 2"):
        ltx2_sigmas(1)


# (overrides, expected per step [(batch, stg blocks, isolate, perturbed self-attentions)])
V, A = ("video", 1), ("audio", 1)
CASES = {
    "joint: cfg+stg+modality": (dict(), [(2, None, False, set()), (1, [1], False, {V, A}), (1, None, True, set())]),
    "joint: video STG only": (dict(audio_stg_scale=0.0), [(2, None, False, set()), (1, [1], False, {V}),
                                                           (1, None, True, set())]),
    "joint: audio STG only": (dict(stg_scale=0.0, audio_stg_scale=1.0), [(2, None, False, set()),
                                                                          (1, [1], False, {A}),
                                                                          (1, None, True, set())]),
    "joint: stg 0": (dict(stg_scale=0.0), [(2, None, False, set()), (1, None, True, set())]),
    "joint: no guidance at all": (dict(guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0,
                                       modality_scale=1.0, audio_modality_scale=1.0), [(1, None, False, set())]),
    "joint: audio cfg only keeps the batched cfg pass": (
        dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0),
        [(2, None, False, set())]),
    "video only: no modality pass, all isolated": (dict(generate_audio=False),
                                                   [(2, None, True, set()), (1, [1], True, {V})]),
    # reference a2v: video modality guidance 3 (isolation pass), STG on the video self-attention only
    "a2v: video modality pass, video-only STG": (dict(generate_audio=False, audio=audio_latents()),
                                                 [(2, None, False, set()), (1, [1], False, {V}),
                                                  (1, None, True, set())]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_calls_per_step(parts, case) -> None:
    overrides, per_step = CASES[case]
    request = make_request(parts, **overrides)
    assert calls_per_step(parts[0], request) == len(per_step)
    _, calls = run(parts, request)
    got = [(c["batch"], c["stg"], c["isolate"], c["perturbed"]) for c in calls]
    assert got == per_step * 2  # 2 steps


def test_stg_blocks_out_of_range_are_clipped_with_a_warning(parts) -> None:
    with pytest.warns(UserWarning, match="clipped to \\[1\\]"):
        _, calls = run(parts, make_request(parts, stg_blocks=[28]))
    assert [c["stg"] for c in calls if c["stg"]] == [[1], [1]]


def test_guider_scales_are_literal() -> None:
    g = torch.Generator().manual_seed(0)
    cond, uncond, pert, iso = (torch.randn(1, 6, 4, generator=g) for _ in range(4))
    # cfg 0 is the unconditional prediction (no `or default` substitution), stg 0 and modality 1 add nothing.
    assert torch.allclose(Guider(cfg=0.0).combine(cond, uncond, pert, iso), uncond)
    rescaled = Guider(cfg=3.0, rescale=1.0).combine(cond, uncond, None, None)
    assert torch.allclose(rescaled.std(), cond.std())
    with pytest.raises(ValueError, match="did not run"):
        Guider(stg=1.0).combine(cond, None, None, None)


def test_deterministic_under_seed_and_global_rng_untouched(parts) -> None:
    request = make_request(parts, first_frame=start_latent())
    state = torch.get_rng_state()
    (v1, a1), _ = run(parts, request)
    assert torch.equal(torch.get_rng_state(), state)
    (v2, a2), _ = run(parts, request)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    (v3, _), _ = run(parts, replace(request, settings=replace(request.settings, seed=8)))
    assert not torch.equal(v1, v3)


def test_first_frame_is_the_clean_start_latent_at_every_step(parts) -> None:
    first = start_latent()
    (video, audio), calls = run(parts, make_request(parts, first_frame=first))
    assert torch.equal(video[:, :, :1], first)  # bit-exact, never stepped
    assert video.shape == (1, 8, 2, 2, 2) and audio.shape == (1, 9, 16)  # ltx-core: round(9 / 24 · 25)
    packed_first = codecs.pack_video(first)
    for c in calls:
        assert torch.equal(c["video"][:, :FIRST_TOKENS], packed_first.expand(c["batch"], -1, -1))
        assert torch.all(c["timestep"][:, :FIRST_TOKENS] == 0)
        assert torch.all(c["timestep"][:, FIRST_TOKENS:] > 0)
        assert torch.all(c["sigma"] > 0) and torch.all(c["audio_sigma"] > 0)  # joint audio is generated


def test_a2v_audio_is_frozen_at_sigma_zero_and_reads_the_positive_prompt(parts) -> None:
    supplied = audio_latents()
    request = make_request(parts, first_frame=start_latent(), audio=supplied, generate_audio=False)
    (video, audio), calls = run(parts, request)
    assert torch.equal(audio, supplied)
    assert torch.equal(video[:, :, :1], request.first_frame)
    assert len(calls) == 6
    for c in calls:
        assert torch.equal(c["audio"], supplied.expand(c["batch"], -1, -1))
        assert torch.all(c["audio_timestep"] == 0) and torch.all(c["audio_sigma"] == 0)
        assert torch.all(c["sigma"] > 0)
        # neutral audio guider: no negative audio context, even in the unconditional half of the CFG batch
        assert torch.equal(c["audio_text"], request.prompt.audio.expand(c["batch"], -1, -1))


def test_joint_audio_reads_the_negative_prompt_in_the_unconditional_half(parts) -> None:
    request = make_request(parts)
    _, calls = run(parts, request)
    cfg_call = calls[0]
    assert cfg_call["batch"] == 2
    assert torch.equal(cfg_call["audio_text"][1:], request.negative.audio)


def test_video_only_passes_one_silent_isolated_audio_token(parts) -> None:
    (video, audio), calls = run(parts, make_request(parts, first_frame=start_latent(), generate_audio=False))
    assert audio is None and video.shape == (1, 8, 2, 2, 2)
    for c in calls:
        assert c["isolate"] and c["audio"].shape[1:] == (1, 16) and not c["audio"].any()
        assert torch.all(c["audio_sigma"] == 0)


def test_eval_during_sampling_and_training_mode_restored(parts) -> None:
    transformer = parts[0]
    transformer.train()
    try:
        _, calls = run(parts, make_request(parts))
        assert transformer.training and not any(c["training"] for c in calls)
    finally:
        transformer.eval()


def test_refuses_fewer_than_two_steps_and_bad_shapes(parts) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        sample(parts[0], make_request(parts, inference_steps=1))
    with pytest.raises(ValueError, match="8k\\+1"):
        sample(parts[0], make_request(parts, number_of_frames=10))
    with pytest.raises(ValueError, match="audio must be"):
        sample(parts[0], make_request(parts, audio=torch.zeros(1, 4, 3)))
