"""Validation previews: prompts cached without the text encoder, mp4s and reel with audio, conditioning kept."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from ltxlab.config.schema import ValidationConfig, ValidationSample
from ltxlab.data.media import probe_video, read_audio
from ltxlab.data.media_write import write_image, write_wav
from ltxlab.errors import DatasetError, InputError
from ltxlab.models import loader
from ltxlab.models.codecs import encode_video
from ltxlab.models.spec import ModelConfig
from ltxlab.sample import media_inputs
from ltxlab.sample import runner as clip_runner
from ltxlab.sample.media_inputs import load_conditioning_audio, load_start_image, reencode_h264
from ltxlab.sample.preview import (
    PreviewPrompts,
    PreviewRunner,
    encode_preview_prompts,
    load_preview_prompts,
    save_preview_prompts,
)
from ltxlab.sample.runner import image_to_pixels

MODEL = ModelConfig()
FRAMES, FPS = 9, 24


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(2):
        paths[f"image{i}"] = d / f"start{i}.png"
        write_image(paths[f"image{i}"], (rng.random((90, 120, 3)) * 255).astype(np.uint8))
    t = np.arange(int(0.5 * 16000)) / 16000  # 0.5 s of two tones: stretched to the 0.375 s clip
    envelope = np.linspace(0.2, 1.0, t.size)
    paths["audio"] = d / "speech.wav"
    write_wav(paths["audio"], 0.4 * envelope * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]),
              16000)
    return paths


@pytest.fixture(scope="module")
def text_stack():
    return loader.load_text_stack(MODEL)


def validation(media: dict[str, Path], n: int = 2, **overrides) -> ValidationConfig:
    samples = [ValidationSample(prompt=f"a robot dances, take {i}", image_url=str(media[f"image{i}"]),
                                audio_url=str(media["audio"])) for i in range(n)]
    cfg = ValidationConfig(samples=samples, number_of_frames=FRAMES, frame_rate=FPS, resolution="low",
                           aspect_ratio="16:9", inference_steps=2, stg_blocks=[1])
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


SMALL = {"width": 64, "height": 64}  # previews at 64x64 instead of the table's smallest 512x288: a fast suite


def runner(media, text_stack, tmp_path, mode: str, with_audio: bool, n: int = 2, **overrides) -> PreviewRunner:
    cfg = validation(media, n, **overrides)
    prompts = encode_preview_prompts(text_stack, cfg)
    return PreviewRunner(MODEL, cfg, mode, with_audio, prompts, tmp_path / "previews", tmp_path / "work", "cpu")


def audio_stream_info(path: Path) -> tuple[str, int]:
    with av.open(str(path)) as c:
        assert len(c.streams.audio) == 1, "every preview must carry an audio track"
        s = c.streams.audio[0]
        return s.codec_context.name, s.codec_context.sample_rate


def check_video(path: Path, frames: int, size: tuple[int, int]) -> None:
    info = probe_video(path)
    assert (info.width, info.height) == size
    assert info.num_frames == frames and info.fps == FPS and info.has_audio


def test_prompts_round_trip_through_safetensors(media, text_stack, tmp_path) -> None:
    prompts = encode_preview_prompts(text_stack, validation(media))
    assert len(prompts.samples) == 2 and prompts.samples[0].video.shape[0] == 1
    save_preview_prompts(prompts, tmp_path / "p.safetensors")
    back = load_preview_prompts(tmp_path / "p.safetensors")
    for a, b in zip([*prompts.samples, prompts.negative], [*back.samples, back.negative], strict=True):
        assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio) and torch.equal(a.mask, b.mask)


def test_i2v_with_audio_at_the_configured_size(media, text_stack, tmp_path) -> None:
    run = runner(media, text_stack, tmp_path, "i2v", with_audio=True)
    reel = run.run(loader.load_transformer(MODEL), step=250)
    assert reel == tmp_path / "previews" / "reel_step_000250.mp4"
    assert [p.name for p in run.last_previews] == ["step_000250_0.mp4", "step_000250_1.mp4"]
    for p in run.last_previews:
        check_video(p, FRAMES, (512, 288))
        assert audio_stream_info(p) == ("aac", 48000)  # generated audio through the vocoder
    check_video(reel, 2 * FRAMES, (512, 288))  # previews one after another
    assert abs(read_audio(reel, 48000).shape[1] / 48000 - 2 * FRAMES / FPS) < 0.03


def test_video_only_previews_have_a_silent_track(media, text_stack, tmp_path) -> None:
    run = runner(media, text_stack, tmp_path, "i2v", with_audio=False, n=1, **SMALL)
    assert run.runner.audio_vae is None and run.runner.vocoder is None  # nothing audio is loaded
    reel = run.run(loader.load_transformer(MODEL), step=3)
    for p in (*run.last_previews, reel):
        check_video(p, FRAMES, (64, 64))
        assert not read_audio(p, 48000).any()


def test_a2v_preview_plays_the_fitted_conditioning_audio(media, text_stack, tmp_path) -> None:
    run = runner(media, text_stack, tmp_path, "a2v", with_audio=True, n=1, **SMALL)
    assert run.runner.vocoder is None  # a2v never decodes audio
    # encoded audio trimmed to ltx-core's length for the clip: round(9 / 24 · 25) = 9 (encoding gives 10)
    assert run.clips[0].request.audio.shape[1] == 9
    transformer = loader.load_transformer(MODEL)
    seen = []  # what reaches the transformer: the frozen audio must be at timestep 0 and σ 0 on every call
    hook = transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw["audio_timestep"], kw["audio_sigma"], kw["sigma"])), with_kwargs=True)
    try:
        reel = run.run(transformer, step=1)
    finally:
        hook.remove()
    assert len(seen) == 2 * 3  # 2 steps x (cond+uncond, STG, audio-isolation) as the reference a2v guidance
    assert all(not t.any() and not s.any() and (v > 0).all() for t, s, v in seen)
    fitted = load_conditioning_audio(media["audio"], FRAMES / FPS, tmp_path / "w2")
    assert fitted.shape == (2, round(FRAMES / FPS * 16000))
    for p in (run.last_previews[0], reel):
        check_video(p, FRAMES, (64, 64))
        assert audio_stream_info(p) == ("aac", 16000)
        played = read_audio(p, 16000)
        # AAC is lossy: the decoded track matches the fitted waveform sample by sample within codec error.
        n = min(played.shape[1], fitted.shape[1])
        assert abs(played.shape[1] - fitted.shape[1]) < 0.01 * fitted.shape[1]
        for ch in range(2):
            corr = np.corrcoef(played[ch, :n], fitted[ch, :n])[0, 1]
            assert corr > 0.99, corr


def test_held_first_frame_is_the_encoded_crf_start_image(media, text_stack, tmp_path, monkeypatch) -> None:
    """p=1-style previews keep the supplied image as the first frame. With random tiny VAE weights decoded pixels
    say nothing about the input, so this is checked on latents: the sampled first latent frame equals the
    encoding of the start image re-encoded at CRF 33 (the default) then resized/cropped, bit for bit."""
    returned = []
    real_sample = clip_runner.sample

    def spy(*args, **kwargs):
        out = real_sample(*args, **kwargs)
        returned.append(out[0])
        return out

    monkeypatch.setattr(clip_runner, "sample", spy)
    run = runner(media, text_stack, tmp_path, "i2v", with_audio=False, n=2, **SMALL)
    run.run(loader.load_transformer(MODEL), step=0)
    vae = loader.load_video_vae(MODEL)
    for i, latents in enumerate(returned):
        image = load_start_image(media[f"image{i}"], 64, 64, tmp_path / "w3", crf=33)
        assert torch.equal(latents[:, :, :1], encode_video(vae, image_to_pixels(image)))
        plain = load_start_image(media[f"image{i}"], 64, 64, tmp_path / "w3", crf=0)
        assert not torch.equal(latents[:, :, :1], encode_video(vae, image_to_pixels(plain)))


def test_settings_come_from_the_validation_config(media, text_stack, tmp_path) -> None:
    run = runner(media, text_stack, tmp_path, "i2v", with_audio=True, n=1, guidance_scale=0.0, stg_scale=0.0,
                 inference_steps=4, seed=9, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=2.0,
                 **SMALL)
    r = run.clips[0].request
    assert r.settings is run.runner.settings and isinstance(r.settings, ValidationConfig)
    s = r.settings
    assert (s.guidance_scale, s.stg_scale, s.inference_steps, s.seed, s.modality_scale, s.guidance_rescale) == \
        (0.0, 0.0, 4, 9, 1.0, 0.0)
    assert (s.audio_guidance_scale, s.number_of_frames, s.frame_rate, s.size()) == (2.0, FRAMES, FPS, (64, 64))
    assert r.generate_audio and r.audio is None and r.first_frame.shape == (1, 8, 1, 2, 2)


def test_no_samples_means_no_reel(text_stack, tmp_path) -> None:
    cfg = ValidationConfig()
    run = PreviewRunner(MODEL, cfg, "i2v", True, encode_preview_prompts(text_stack, cfg), tmp_path, tmp_path, "cpu")
    assert run.runner is None and run.run(loader.load_transformer(MODEL), step=10) is None
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("override", "message"), [
    ("validation.image_crf=60", "validation.image_crf: must be an H.264 CRF within 0–51"),
    ("validation.inference_steps=1", "validation.inference_steps: must be at least 2"),
    ("validation.audio_stg_scale=-1", "validation.audio_stg_scale: must be ≥ 0"),
    ("validation.stg_blocks=[-1]", "validation.stg_blocks: must be non-negative"),
])
def test_sampling_settings_are_checked_by_the_config_validator(compose_cfg, override, message) -> None:
    """The rules generate applies to its flags (`sampling_problems`) reject the same values in the config."""
    from ltxlab.config.validate import validate
    from ltxlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(override))


def test_audio_guidance_in_a2v_is_warned_about_not_dropped_silently(compose_cfg, caplog) -> None:
    from ltxlab.config.validate import validate

    cfg = validate(compose_cfg("mode=a2v", "validation.audio_guidance_scale=5"))
    assert cfg.validation.audio_guidance_scale == 5  # kept as written ...
    assert "validation.audio_guidance_scale=5.0 has no effect in a2v" in caplog.text  # ... and reported
    caplog.clear()
    validate(compose_cfg("validation.audio_guidance_scale=5"))  # i2v: it is used
    assert "no effect" not in caplog.text


def test_mismatched_prompts_are_refused(media, tmp_path) -> None:
    empty = PreviewPrompts(samples=[], negative=None)
    with pytest.raises(ValueError, match="re-encode"):
        PreviewRunner(MODEL, validation(media), "i2v", True, empty, tmp_path, tmp_path, "cpu")


# ----------------------------------------------------------------------------------------------- media inputs


def test_start_image_is_resized_to_fill_and_centre_cropped(media, tmp_path) -> None:
    image = load_start_image(media["image0"], 64, 32, tmp_path)  # 120x90 source: scaled to 64x48, cropped
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8


def test_start_image_crf_reencode_is_one_h264_frame(media, tmp_path) -> None:
    source = media_inputs.read_image(media["image0"])
    once = reencode_h264(source, 33)
    assert once.shape == source.shape and once.dtype == np.uint8
    assert 0 < np.abs(once.astype(int) - source).mean() < 60  # lossy, not garbage
    assert np.array_equal(reencode_h264(source, 0), source)  # 0 = off
    assert np.abs(reencode_h264(source, 18).astype(int) - source).mean() < np.abs(once.astype(int) - source).mean()
    odd = reencode_h264(source[:89, :119], 33)
    assert odd.shape == (88, 118, 3)  # 4:2:0 needs even sizes, as in ltx-pipelines


def test_conditioning_audio_is_fitted_then_peak_normalised(media, tmp_path) -> None:
    audio = load_conditioning_audio(media["audio"], 0.25, tmp_path)
    assert audio.shape == (2, 4000) and audio.dtype == np.float32
    assert abs(np.abs(audio).max() - 0.99) < 1e-4
    trimmed = load_conditioning_audio(media["audio"], 0.25, tmp_path, normalize=False, preserve_pitch=False)
    source = read_audio(media["audio"], 16000)
    assert np.allclose(trimmed, source[:, :4000], atol=1e-6)  # no stretch: the first 0.25 s as is


def test_inputs_refuse_non_https_urls_and_missing_files(tmp_path) -> None:
    with pytest.raises(InputError, match="https"):
        load_start_image("http://example.com/a.png", 64, 64, tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_start_image(tmp_path / "missing.png", 64, 64, tmp_path)
    with pytest.raises(InputError, match="must end in"):
        load_conditioning_audio("https://example.com/stream", 1.0, tmp_path)


def test_https_inputs_go_through_the_capped_downloader(media, tmp_path, monkeypatch) -> None:
    seen = []

    def fake_download(url, dest, limits, expect_zip=True):  # sources.download's contract for a media file
        assert expect_zip is False  # media files are checked by the media readers, not as zips
        seen.append((url, limits.max_download_bytes))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(media["image0"]).read_bytes())
        return dest

    monkeypatch.setattr(media_inputs, "download", fake_download)
    image = load_start_image("https://example.com/start.png?sig=secret", 64, 64, tmp_path)
    assert image.shape == (64, 64, 3) and seen[0][1] == media_inputs.INPUT_LIMITS.max_download_bytes
    assert not any("secret" in p.name for p in (tmp_path / "inputs").iterdir())

    def failing(url, dest, limits, expect_zip=True):
        raise DatasetError("Could not download the dataset from https://example.com/x.png: HTTP 404 Not Found")

    monkeypatch.setattr(media_inputs, "download", failing)
    with pytest.raises(InputError, match="404"):
        load_start_image("https://example.com/x.png", 64, 64, tmp_path)


def test_with_a_lora_each_preview_shows_the_base_model_beside_it(media, text_stack, tmp_path) -> None:
    """The left half is the base model on the same inputs and seeds (adapter off), rendered once per run."""
    from ltxlab.config.schema import LoraConfig
    from ltxlab.sample.preview import side_by_side
    from ltxlab.train.lora import attach_lora

    run = runner(media, text_stack, tmp_path, "i2v", with_audio=False, n=1, **SMALL)
    base = run.runner.render(loader.load_transformer(MODEL), run.clips[0]).frames
    transformer = loader.load_transformer(MODEL)
    attach_lora(transformer, LoraConfig(rank=8), seed=0)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))  # a LoRA that changes the output
    run.run(transformer, step=5)
    lora = run.runner.render(transformer, run.clips[0]).frames
    assert not np.array_equal(lora, base)
    assert np.array_equal(run.base_frames[0], base)  # adapter switched off for the base half, back on after
    check_video(run.last_previews[0], FRAMES, (2 * 64 + 8, 64))
    expected = side_by_side(base, lora, 5)
    assert expected.shape == (FRAMES, 64, 136, 3)
    run.run(transformer, step=6)
    assert np.array_equal(run.base_frames[0], base)  # not re-rendered: the base never changes
