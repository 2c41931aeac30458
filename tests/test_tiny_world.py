"""The shipped tiny world (``model=tiny``): behaviour measured on decoded frames and audio of held-out clips.

Codec metrics are also computed on random weights of the same classes and sizes, which must fail them. The LoRA
behaviours use the two demo runs (i2v: the default ``python -m ltxlab``; a2v: ``mode=a2v``), trained on the
sample datasets (``ltxlab.data.sample``: the i2v trigger word ``zwx`` = the picture fades to black; a2v: the shape's
size follows the audio's loudness), and compare each LoRA with the base model on the same inputs. Every metric comes
from decoded frames or audio (``ltxlab.pretrain.world``'s measuring functions); the README reports the values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ltxlab.data import sample
from ltxlab.data.media_write import write_image, write_wav
from ltxlab.generate import GenerateInputs, generate_clip
from ltxlab.models import codecs, tiny
from ltxlab.models.pretrained import BUILTIN, BUILTIN_DIR, PretrainedTiny
from ltxlab.models.spec import ModelConfig
from ltxlab.pretrain import codec_stages as codec
from ltxlab.pretrain import world
from ltxlab.sample.runner import RenderedClip
from ltxlab.sample.settings import SamplingSettings

if not (BUILTIN_DIR / "manifest.json").is_file():
    pytest.skip("no pretrained tiny weights ship (ltxlab/assets/tiny)", allow_module_level=True)

VAE_PSNR_DB = 25.0  # the issue's bar at the demo size; the random VAE gives ~11 dB
ENVELOPE_CORRELATION = 0.8  # the random audio VAE gives ~0
# Frame 0 is the start image through its CRF 33 re-encode, the VAE and the decoder's look at the next latent
# frames: the base model gives 25.7 dB on the test's clip, the demo LoRA 22.5 dB (its fade leaks a little into
# clips without the trigger: they end 5–16 grey levels darker); 21 leaves room for other CPUs' rounding.
# Random weights: ~11 dB.
FIRST_FRAME_PSNR_DB = 21.0
CONTINUES_PSNR_DB = 15.0  # later frames vs the start image: 17.2–21.1 dB measured (base 22.6–25.3; the shape pulses)
# The trigger's fade, in grey levels lost by the last frames (mean of 3 held-out scenes; the drawn fade: 58–118):
# the demo LoRA measured 47.6 with zwx, 8.7 without; the base model 1.7 with it.
DARKENING = 20.0
DARKENING_GAP = 15.0  # with the trigger, more than the larger of the two controls
A2V_CORRELATION = 0.5  # mean per-clip size/loudness correlation after training
A2V_CONTROL = 0.3  # |mean correlation| of the base model and of a quarter-beat-shifted track
FPS = 24
FRAMES = 17  # the demo's clip: 17 frames at 512×512 (resolution=low, 1:1)


def _open_in_issue_13(reason: str) -> pytest.MarkDecorator:
    """A behaviour issue 13 still lacks. Strict, so the suite goes red once it passes; only a failed assertion is
    the expected failure (a crash in the test is an error, not an xfail)."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"issue 13 open: {reason}")


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


# ------------------------------------------------------------------------------------------------ sampling


def _render(work: Path, lora: Path | None, prompt: str, image: np.ndarray | None = None,
            audio: np.ndarray | None = None, seed: int = 0) -> RenderedClip:
    """One 17-frame 512×512 clip from the shipped model (+ ``lora``), with the demo's preview settings."""
    work.mkdir(parents=True, exist_ok=True)
    image_path = audio_path = None
    if image is not None:
        image_path = str(work / "start.png")
        write_image(Path(image_path), image)
    if audio is not None:
        audio_path = str(work / "audio.wav")
        write_wav(Path(audio_path), audio, codecs.SAMPLE_RATE)
    settings = SamplingSettings(number_of_frames=FRAMES, resolution="low", aspect_ratio="1:1", inference_steps=8,
                                stg_blocks=[1], seed=seed)
    inputs = GenerateInputs(prompt=prompt, image=image_path, audio=audio_path)
    return generate_clip(ModelConfig(tiny_weights=BUILTIN), lora, inputs, settings, work, torch.device("cpu"))


def _first_frame(spec: world.ClipSpec) -> np.ndarray:
    return world.render_frames(spec, 1, FPS, sample.DEMO_SIZE)[0]


@pytest.fixture(scope="module")
def i2v_lora(demo_run: Path) -> Path:
    """The default demo's LoRA (i2v on the sample dataset, on the shipped weights)."""
    return demo_run / "lora.safetensors"


@pytest.fixture(scope="module")
def a2v_lora(a2v_run: Path) -> Path:
    """The a2v demo's LoRA (``mode=a2v`` on the a2v sample dataset, on the shipped weights)."""
    return a2v_run / "lora.safetensors"


def _held_out_i2v(i: int) -> world.ClipSpec:
    """A pulsing clip the sample dataset does not hold (its own seed)."""
    return sample.pulsing_spec(np.random.default_rng([13, i]))


# ------------------------------------------------------------------------------------------------ i2v


def test_i2v_preview_starts_on_the_given_image_and_continues_it(tmp_path, i2v_lora: Path) -> None:
    spec = _held_out_i2v(0)
    start = _first_frame(spec)
    clip = _render(tmp_path / "lora", i2v_lora, spec.caption(), image=start)  # no trigger: no fade
    first = world.psnr(clip.frames[0], start)
    later = [world.psnr(frame, start) for frame in clip.frames[1:]]
    _, _, radius = world.measure_shape(clip.frames, spec.colour)
    print(f"frame 0 vs start image: {first:.2f} dB; later frames {min(later):.1f}–{max(later):.1f} dB; "
          f"shape radius per frame: {np.round(radius, 1).tolist()}")
    assert first >= FIRST_FRAME_PSNR_DB
    # Later frames continue the image: the same scene, and the captioned shape is still there at about its size.
    assert min(later) >= CONTINUES_PSNR_DB
    expected = spec.radius * min(sample.DEMO_SIZE)
    assert np.all(radius > 0.5 * expected)


@_open_in_issue_13("the base reads captions (tools/probe_conditioning.py) and draws the captioned background "
                   "in 3 of 4 held-out clips, but no shape (README: The tiny pretrained world)")
def test_i2v_lora_without_the_image_still_makes_the_captioned_scene(tmp_path, i2v_lora: Path) -> None:
    """Trained with first_frame_conditioning_p = 0.5, the LoRA also generates from the caption alone."""
    spec = _held_out_i2v(1)
    clip = _render(tmp_path / "t2v", i2v_lora, spec.caption())
    _, _, radius = world.measure_shape(clip.frames, spec.colour)
    expected = spec.radius * min(sample.DEMO_SIZE)
    background = world.background_name(clip.frames)
    print(f"no image: background {background} (asked {spec.background}); shape radius {np.round(radius, 1)}")
    assert background == spec.background
    assert np.all((radius > 0.5 * expected) & (radius < 3.0 * expected))


def test_trigger_word_brings_the_fade(tmp_path, i2v_lora: Path) -> None:
    """The concept (the picture fades to black) appears with ``zwx``, much less without it, and not in the base."""
    specs = [_held_out_i2v(2 + i) for i in range(3)]

    def mean_darkening(name: str, lora: Path | None, trigger: bool) -> float:
        darkening = []
        for i, spec in enumerate(specs):
            prompt = f"{sample.TRIGGER} {spec.caption()}" if trigger else spec.caption()
            clip = _render(tmp_path / f"{name}{i}", lora, prompt, image=_first_frame(spec), seed=i)
            darkening.append(world.darkening(clip.frames))
        print(f"{name}: darkening over 17 frames (grey levels) {np.round(darkening, 1).tolist()}")
        return float(np.mean(darkening))

    # The concept first: the two controls only mean something once it shows (and cost 6 more renders).
    with_trigger = mean_darkening("lora+trigger", i2v_lora, trigger=True)
    assert with_trigger >= DARKENING
    controls = max(mean_darkening("lora", i2v_lora, trigger=False), mean_darkening("base+trigger", None, trigger=True))
    assert with_trigger - controls >= DARKENING_GAP


# ------------------------------------------------------------------------------------------------ a2v


def _held_out_a2v(i: int) -> world.ClipSpec:
    """A pulsing clip whose 17 frames hold exactly one loudness beat, at phase i × 60°."""
    spec = sample.pulsing_spec(np.random.default_rng([17, i]))
    return replace(spec, beat_hz=FPS / FRAMES, beat_phase=i * np.pi / 3)


@_open_in_issue_13("the a2v demo LoRA follows its track (paired sample groups): 0.34 with the clip's own track "
                   "against -0.44 with a shifted one, but 0.34 is short of 0.5; the base gives -0.21 "
                   "(README: The tiny pretrained world)")
def test_a2v_lora_moves_with_the_audio(tmp_path, a2v_lora: Path) -> None:
    """Size/loudness correlation: high for the LoRA with the clip's own track; near zero for the base model on
    the same track, and for the LoRA fed the track shifted by a quarter beat (scored against the original)."""
    seconds = FRAMES / FPS
    specs = [_held_out_a2v(i) for i in range(4)]

    def mean_correlation(name: str, lora: Path | None, phase_shift: float) -> float:
        scores = []
        for i, spec in enumerate(specs):
            wave = world.render_audio(spec, seconds, codecs.SAMPLE_RATE)[:1]
            track = world.render_audio(replace(spec, beat_phase=spec.beat_phase + phase_shift), seconds,
                                       codecs.SAMPLE_RATE)[:1]
            clip = _render(tmp_path / f"{name}{i}", lora, spec.caption(), image=_first_frame(spec), audio=track,
                           seed=i)
            scores.append(world.size_loudness_correlation(clip.frames, spec.colour, wave, codecs.SAMPLE_RATE, FPS))
        print(f"{name}: size/loudness correlation {np.round(scores, 3).tolist()}, mean {np.mean(scores):.3f}")
        return float(np.mean(scores))

    # The link first: the two controls only mean something once it shows (and cost 8 more renders).
    assert mean_correlation("lora", a2v_lora, phase_shift=0.0) >= A2V_CORRELATION
    assert abs(mean_correlation("base", None, phase_shift=0.0)) <= A2V_CONTROL
    assert abs(mean_correlation("lora+shifted", a2v_lora, phase_shift=np.pi / 2)) <= A2V_CONTROL
