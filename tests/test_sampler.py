"""The sampler: call counts per guidance combination, conditioning kept exact, determinism, parity with diffusers."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from ltxlab.models import codecs, loader
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts
from ltxlab.sample.sampler import SampleRequest, calls_per_step, guide, sample

MODEL = ModelConfig()
FRAMES, SIZE = 9, 64  # -> 2 x 2 x 2 latent video tokens
FIRST_TOKENS = (SIZE // 32) ** 2


@pytest.fixture(scope="module")
def parts():
    text = loader.load_text_stack(MODEL)
    prompt, negative = encode_prompts(text, ["a robot dances in the rain"]), encode_prompts(text, ["blurry"])
    return loader.load_transformer(MODEL), loader.load_scheduler(MODEL), prompt, negative


class Calls:
    """Records every transformer call's conditioning-relevant kwargs."""

    def __init__(self, transformer):
        self.calls: list[dict] = []
        self.handle = transformer.register_forward_pre_hook(self._hook, with_kwargs=True)
        self.transformer = transformer

    def _hook(self, module, args, kwargs):
        self.calls.append({
            "batch": kwargs["hidden_states"].shape[0],
            "video": kwargs["hidden_states"].detach().clone(),
            "audio": kwargs["audio_hidden_states"].detach().clone(),
            "timestep": kwargs["timestep"].detach().clone(),
            "audio_timestep": kwargs["audio_timestep"].detach().clone(),
            "sigma": kwargs["sigma"].detach().clone(),
            "audio_sigma": kwargs["audio_sigma"].detach().clone(),
            "isolate": kwargs["isolate_modalities"],
            "stg": kwargs["spatio_temporal_guidance_blocks"],
            "training": module.training,
        })

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def make_request(parts, **overrides) -> SampleRequest:
    _, _, prompt, negative = parts
    base = SampleRequest(prompt=prompt, negative=negative, num_frames=FRAMES, height=SIZE, width=SIZE, fps=24.0,
                         first_frame=None, audio=None, generate_audio=True, steps=2, stg_blocks=[1], seed=7)
    return replace(base, **overrides)


def run(parts, request):
    transformer, scheduler = parts[0], parts[1]
    with Calls(transformer) as rec:
        out = sample(transformer, scheduler, request)
    return out, rec.calls


def start_latent(seed: int = 3) -> torch.Tensor:
    return torch.randn(1, 8, 1, SIZE // 32, SIZE // 32, generator=torch.Generator().manual_seed(seed))


def audio_latents(length: int = 10) -> torch.Tensor:
    return torch.randn(1, length, 16, generator=torch.Generator().manual_seed(11))


# (request overrides, expected per-step [(batch, stg blocks, isolate)])
CASES = {
    "joint: cfg+stg+modality": (dict(), [(2, None, False), (1, [1], False), (1, None, True)]),
    "joint: stg 0": (dict(stg_scale=0.0), [(2, None, False), (1, None, True)]),
    "joint: no guidance at all": (dict(guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0,
                                       modality_scale=1.0), [(1, None, False)]),
    "joint: audio cfg only keeps the batched cfg pass": (dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0),
                                                         [(2, None, False)]),
    "video only: no modality pass, all isolated": (dict(generate_audio=False), [(2, None, True), (1, [1], True)]),
    "a2v: no modality pass": (dict(generate_audio=False, audio=audio_latents()),
                              [(2, None, False), (1, [1], False)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_calls_per_step(parts, case) -> None:
    overrides, per_step = CASES[case]
    request = make_request(parts, **overrides)
    assert calls_per_step(parts[0], request) == len(per_step)
    _, calls = run(parts, request)
    got = [(c["batch"], c["stg"], c["isolate"]) for c in calls]
    assert got == per_step * 2  # 2 steps


def test_stg_blocks_out_of_range_are_clipped_with_a_warning(parts) -> None:
    with pytest.warns(UserWarning, match="clipped to \\[1\\]"):
        _, calls = run(parts, make_request(parts, stg_blocks=[28]))
    assert [c["stg"] for c in calls if c["stg"]] == [[1], [1]]


def test_zero_scales_mean_zero() -> None:
    g = torch.Generator().manual_seed(0)
    cond, uncond, pert, iso = (torch.randn(1, 6, 4, generator=g) for _ in range(4))
    # cfg 0 is the unconditional prediction (no `or default` substitution), stg 0 and modality 1 add nothing.
    assert torch.allclose(guide(cond, uncond, pert, iso, cfg=0.0, stg=0.0, modality=1.0, rescale=0.0), uncond)
    rescaled = guide(cond, uncond, None, None, cfg=3.0, stg=0.0, modality=1.0, rescale=1.0)
    assert torch.allclose(rescaled.std(), cond.std())


def test_deterministic_under_seed_and_global_rng_untouched(parts) -> None:
    request = make_request(parts, first_frame=start_latent())
    state = torch.get_rng_state()
    (v1, a1), _ = run(parts, request)
    assert torch.equal(torch.get_rng_state(), state)
    (v2, a2), _ = run(parts, request)
    assert torch.equal(v1, v2) and torch.equal(a1, a2)
    (v3, _), _ = run(parts, replace(request, seed=8))
    assert not torch.equal(v1, v3)


def test_first_frame_is_the_clean_start_latent_at_every_step(parts) -> None:
    first = start_latent()
    (video, audio), calls = run(parts, make_request(parts, first_frame=first))
    assert torch.equal(video[:, :, :1], first)  # bit-exact, never stepped
    assert video.shape == (1, 8, 2, 2, 2) and audio.shape == (1, 10, 16)
    packed_first = codecs.pack_video(first)
    for c in calls:
        assert torch.equal(c["video"][:, :FIRST_TOKENS], packed_first.expand(c["batch"], -1, -1))
        assert torch.all(c["timestep"][:, :FIRST_TOKENS] == 0)
        assert torch.all(c["timestep"][:, FIRST_TOKENS:] > 0)
        assert torch.all(c["sigma"] > 0) and torch.all(c["audio_sigma"] > 0)  # joint audio is generated


def test_a2v_audio_stays_the_supplied_clean_latents(parts) -> None:
    supplied = audio_latents()
    request = make_request(parts, first_frame=start_latent(), audio=supplied, generate_audio=False, stg_scale=1.0)
    (video, audio), calls = run(parts, request)
    assert torch.equal(audio, supplied)
    assert torch.equal(video[:, :, :1], request.first_frame)
    assert len(calls) == 4
    for c in calls:
        assert torch.equal(c["audio"], supplied.expand(c["batch"], -1, -1))
        assert torch.all(c["audio_timestep"] == 0) and torch.all(c["audio_sigma"] == 0)
        assert not c["isolate"]  # the audio drives the video through a2v attention


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
        sample(parts[0], parts[1], make_request(parts, steps=1))
    with pytest.raises(ValueError, match="8k\\+1"):
        sample(parts[0], parts[1], make_request(parts, num_frames=10))
    with pytest.raises(ValueError, match="exclusive"):
        sample(parts[0], parts[1], make_request(parts, audio=audio_latents(), generate_audio=True))


def test_matches_the_diffusers_pipeline(parts) -> None:
    """Same noise, prompts and settings as LTX2Pipeline (text-to-video + audio, every guidance term on):
    same latents. 17 frames at 24 fps make the pipeline's audio length equal the codec's (18 latents)."""
    pipe = loader.load_pipeline(MODEL)
    frames, fps, steps, seed = 17, 24, 3, 5
    text = loader.load_text_stack(MODEL)
    request = make_request(parts, prompt=encode_prompts(text, ["a cat"]), negative=encode_prompts(text, ["blurry"]),
                           num_frames=frames, steps=steps, seed=seed)
    video, audio = sample(pipe.transformer, pipe.scheduler, request)

    g = torch.Generator().manual_seed(seed)  # the sampler's draw order: video noise, then audio noise
    video_noise = codecs.pack_video(torch.randn(1, 8, 3, 2, 2, generator=g))
    audio_noise = torch.randn(1, 18, 16, generator=g)
    avae, vae = pipe.audio_vae, pipe.vae
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_video, ref_audio = pipe(
            prompt="a cat", negative_prompt="blurry", height=SIZE, width=SIZE, num_frames=frames, frame_rate=fps,
            num_inference_steps=steps, guidance_scale=3.0, audio_guidance_scale=7.0, stg_scale=1.0,
            audio_stg_scale=1.0, modality_scale=3.0, audio_modality_scale=3.0, guidance_rescale=0.7,
            audio_guidance_rescale=0.7, spatio_temporal_guidance_blocks=[1], max_sequence_length=32,
            latents=video_noise, audio_latents=audio_noise * avae.latents_std + avae.latents_mean,  # it normalises
            output_type="latent", return_dict=False)
    ref_video = (ref_video - vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.latents_std.view(1, -1, 1, 1, 1)
    ref_audio = (codecs.pack_audio(ref_audio) - avae.latents_mean) / avae.latents_std
    assert (video - ref_video).abs().max() < 1e-4
    assert (audio - ref_audio).abs().max() < 1e-4
