"""`python -m ltxlab.generate`: both exported LoRA formats load, change the output, and give an mp4 with audio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltxlab.config.schema import LoraConfig
from ltxlab.data.media import probe_video
from ltxlab.data.media_write import write_image, write_wav
from ltxlab.export import save_lora
from ltxlab.generate import GenerateInputs, _parser, generate_clip, main
from ltxlab.models.loader import load_transformer
from ltxlab.models.spec import ModelConfig
from ltxlab.sample.settings import SamplingSettings
from ltxlab.train.lora import attach_lora

MODEL = ModelConfig()
REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model", "tiny_random", "--width", "64", "--height", "64", "--frames", "9", "--steps", "2",
         "--stg-blocks", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run's outputs as training writes them: both LoRA formats (alpha != rank) and config.json, plus inputs."""
    d = tmp_path_factory.mktemp("run")
    transformer = load_transformer(MODEL)
    peft_config = attach_lora(transformer, LoraConfig(rank=4, alpha=8.0), seed=0)
    with torch.no_grad():  # stand-in for training: non-zero lora_B so the adapter has an effect
        g = torch.Generator().manual_seed(1)
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    save_lora(transformer, peft_config, d)
    (d / "config.json").write_text(json.dumps({"training_type": "i2v", "first_frame_conditioning_p": 1.0}))
    write_image(d / "start.png", (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8))
    t = np.arange(16000) / 16000
    write_wav(d / "voice.wav", 0.5 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]), 16000)
    return d


SETTINGS = SamplingSettings(negative_prompt="blurry", number_of_frames=9, width=64, height=64, inference_steps=2,
                            stg_blocks=[1], seed=3)


def inputs(run_dir: Path, audio: bool = False) -> GenerateInputs:
    return GenerateInputs(prompt="a robot dances", image=str(run_dir / "start.png"),
                          audio=str(run_dir / "voice.wav") if audio else None)


def test_both_formats_load_identically_and_the_lora_changes_the_output(run_dir) -> None:
    cpu = torch.device("cpu")
    comfy = generate_clip(MODEL, run_dir / "lora.safetensors", inputs(run_dir), SETTINGS, run_dir, cpu)
    diffusers = generate_clip(MODEL, run_dir / "lora_diffusers", inputs(run_dir), SETTINGS, run_dir, cpu)
    base = generate_clip(MODEL, None, inputs(run_dir), SETTINGS, run_dir, cpu)
    assert (comfy.video_latents - diffusers.video_latents).abs().max() < 1e-5
    assert (comfy.audio_latents - diffusers.audio_latents).abs().max() < 1e-5
    assert (comfy.video_latents - base.video_latents).abs().max() > 1e-2  # the adapter is really applied
    assert torch.equal(comfy.video_latents[:, :, :1], base.video_latents[:, :, :1])  # start image = first frame


def test_sampling_flags_and_defaults_are_the_shared_settings() -> None:
    """generate's sampling flags are the SamplingSettings fields with the same defaults (validation previews
    extend the same dataclass), and --model defaults to tiny like every other entry point."""
    from dataclasses import fields

    args = _parser().parse_args(["--lora", "x.safetensors", "--prompt", "p", "--out", "o.mp4"])
    defaults = SamplingSettings()
    assert {f.name: getattr(args, f.name) for f in fields(SamplingSettings)} == \
        {f.name: getattr(defaults, f.name) for f in fields(SamplingSettings)}
    assert args.model == "tiny" == ModelConfig().name
    args = _parser().parse_args(["--lora", "x", "--prompt", "p", "--out", "o.mp4", "--steps", "4", "--fps", "30",
                                 "--frames", "17", "--stg-blocks", "1", "2", "--audio-stg-scale", "0",
                                 "--image-crf", "0"])
    assert (args.inference_steps, args.frame_rate, args.number_of_frames, args.stg_blocks) == (4, 30, 17, [1, 2])
    assert (args.audio_stg_scale, args.image_crf) == (0.0, 0)


def test_a2v_generate_freezes_the_audio_at_sigma_zero(run_dir, monkeypatch) -> None:
    """What reaches the transformer in a2v generate: audio timesteps 0 and audio σ 0 on every call."""
    seen = []
    real = load_transformer

    def recording(cfg):
        t = real(cfg)
        t.register_forward_pre_hook(lambda m, a, kw: seen.append((kw["audio_timestep"], kw["audio_sigma"])),
                                    with_kwargs=True)
        return t

    import ltxlab.generate as generate_module

    monkeypatch.setattr(generate_module.loader, "load_transformer", recording)
    clip = generate_clip(MODEL, run_dir / "lora.safetensors", inputs(run_dir, audio=True), SETTINGS, run_dir,
                         torch.device("cpu"))
    assert clip.audio_latents is None and clip.sample_rate == 16000  # plays the conditioning audio
    assert len(seen) == 2 * 3 and all(not t.any() and not s.any() for t, s in seen)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltxlab.generate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("lora", "mode"), [("lora.safetensors", "i2v"), ("lora_diffusers/"
                                                                          "pytorch_lora_weights.safetensors", "a2v")])
def test_cli_writes_an_mp4_with_audio(run_dir, lora: str, mode: str) -> None:
    out = run_dir / f"out_{mode}.mp4"
    extra = ["--audio", str(run_dir / "voice.wav")] if mode == "a2v" else []
    proc = run_cli("--lora", str(run_dir / lora), "--image", str(run_dir / "start.png"), *extra,
                   "--prompt", "a robot dances", "--out", str(out), *SMALL, cwd=run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames, info.fps, info.has_audio) == (64, 64, 9, 24.0, True)


def test_text_only_warns_when_the_lora_always_held_the_first_frame(run_dir, caplog) -> None:
    out = run_dir / "t2v.mp4"
    assert main(["--lora", str(run_dir / "lora.safetensors"), "--prompt", "a robot", "--out", str(out),
                 "--no-audio", *SMALL]) == 0
    assert "first_frame_conditioning_p=1.0" in caplog.text
    assert probe_video(out).has_audio  # a silent track


@pytest.mark.parametrize(("args", "message"), [
    (["--lora", "missing.safetensors"], "LoRA file not found"),
    (["--image", "missing.png"], "--image not found"),
    (["--audio", "voice.wav"], "needs --image"),
    (["--frames", "10"], "8k+1"),
    (["--steps", "1"], "at least 2"),
    (["--image-crf", "60"], "--image-crf: must be an H.264 CRF within 0–51"),
    (["--guidance-rescale", "2"], "--guidance-rescale: must be within 0–1"),
    (["--width", "100"], "multiples of 32"),
])
def test_bad_input_exits_2_with_one_line(run_dir, capsys, args: list[str], message: str) -> None:
    base = {"--lora": str(run_dir / "lora.safetensors")}
    resolved = [str(run_dir / a) if a.endswith((".safetensors", ".png", ".wav")) else a for a in args]
    flags = dict(zip(resolved[::2], resolved[1::2], strict=True))
    argv = [x for k, v in {**base, **flags}.items() for x in (k, v)]
    assert main([*argv, "--prompt", "p", "--out", str(run_dir / "x.mp4"), "--model", "tiny_random"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
