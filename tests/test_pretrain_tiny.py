"""tools/pretrain_tiny.py and the procedural world it trains on: every stage runs, resumes, exports, and loads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ltxlab.errors import ConfigError
from ltxlab.models import codecs, loader, tiny
from ltxlab.models.spec import ModelConfig
from ltxlab.modes import ShiftedLogitNormal
from ltxlab.pretrain import world
from ltxlab.pretrain.codec_stages import calibrate_vocoder_level, init_vocoder_stft
from ltxlab.pretrain.flow_stage import WithPureNoise
from ltxlab.pretrain.stages import COMPONENTS, StagePlan, component_configs, train_stage
from tests.cli_runs import REPO

# One xdist worker for the module: its tests share one smoke pretraining run (conftest.py).
pytestmark = pytest.mark.xdist_group("test_pretrain_tiny")


def pretrain_main(args: list[str]) -> int:
    """The real tool, as a user runs it."""
    proc = subprocess.run([sys.executable, "tools/pretrain_tiny.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode


@pytest.fixture(scope="module")
def smoke_weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "tiny"
    assert pretrain_main(["--smoke", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_smoke_run_writes_every_component_and_a_manifest(smoke_weights: Path) -> None:
    manifest = json.loads((smoke_weights / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"video_vae", "audio", "transformer"}
    assert all(np.isfinite(s["final_loss"]) for s in manifest["stages"].values())
    for name in COMPONENTS:
        tensors = load_file(smoke_weights / f"{name}.safetensors")
        assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    assert manifest["configs"]["video_vae"]["latent_channels"] == 96
    assert {"heldout_psnr_db", "heldout_envelope_correlation"} <= {*manifest["stages"]["video_vae"],
                                                                   *manifest["stages"]["audio"]}


def test_model_tiny_weights_loads_the_pretrained_components(smoke_weights: Path) -> None:
    cfg = ModelConfig(name="tiny", tiny_weights=str(smoke_weights))
    vae, transformer = loader.load_video_vae(cfg), loader.load_transformer(cfg)
    saved = load_file(smoke_weights / "video_vae.safetensors")
    assert any(v.dtype == torch.float16 for v in saved.values())  # parameters ship in half precision
    assert all(torch.equal(vae.state_dict()[k], v.float()) for k, v in saved.items())
    assert transformer.config.in_channels == vae.config.latent_channels == 96
    pixels = torch.from_numpy(world.to_pixels(world.render_frames(world.random_spec(np.random.default_rng(1)), 9,
                                                                  24, (64, 64))))[None]
    latents = codecs.encode_video(vae, pixels)  # the exported latents_mean/std normalise without NaNs
    assert latents.shape[1] == 96 and torch.isfinite(latents).all()
    # The text stack is not pretrained: rebuilt from the manifest's seed, identical to the random family's.
    text = loader.load_text_stack(cfg)
    reference = tiny.build_text_encoder(0)
    assert all(torch.equal(a, b) for a, b in zip(text.text_encoder.parameters(), reference.parameters(),
                                                 strict=True))


def test_a_second_run_skips_finished_stages_and_writes_the_same_weights(smoke_weights: Path, tmp_path) -> None:
    before = {n: (smoke_weights / f"{n}.safetensors").read_bytes() for n in COMPONENTS}
    work = smoke_weights.parent / f".pretrain_work_{smoke_weights.name}"
    assert (work / "transformer" / "done.pt").exists()
    # The codec stages' measurements (and the buffers they set) are kept: the re-run loads, it does not re-measure.
    assert (work / "video_vae" / "finished.pt").exists() and (work / "audio" / "finished.pt").exists()
    assert pretrain_main(["--smoke", "--out", str(smoke_weights), "--threads", "1"]) == 0
    assert {n: (smoke_weights / f"{n}.safetensors").read_bytes() for n in COMPONENTS} == before


def test_an_interrupted_stage_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    """Data of each step is a pure function of the step, and the optimizer/scheduler state is checkpointed."""
    target = torch.linspace(-1, 1, 8)

    def run(work: Path, fail_at: int | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 8)

        def loss_at(step: int) -> torch.Tensor:
            if step == fail_at:
                raise KeyboardInterrupt
            x = torch.randn(4, 8, generator=torch.Generator().manual_seed(step))
            return (model(x) - target).pow(2).mean()

        train_stage("lin", {"m": model}, loss_at, StagePlan(steps=7, batch=4, learning_rate=1e-2), work,
                    checkpoint_every=2, progress=False)
        return model.weight.detach().clone()

    uninterrupted = run(tmp_path / "a", None)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", fail_at=5)
    assert torch.load(tmp_path / "b" / "lin" / "state.pt", weights_only=True)["step"] == 4
    assert torch.equal(run(tmp_path / "b", None), uninterrupted)


def test_tiny_weights_without_a_manifest_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model\.tiny_weights: .* lacks manifest\.json"):
        loader.load_video_vae(ModelConfig(name="tiny", tiny_weights=str(tmp_path)))


def test_vocoder_stft_buffers_are_filled_so_its_bandwidth_extension_can_train() -> None:
    """diffusers and ltx-core build the BWE stage's STFT/mel buffers as zeros (the checkpoint fills them): with
    zeros every gradient through the vocoder was NaN."""
    vocoder = tiny.build_vocoder(0)
    assert not vocoder.mel_stft.stft_fn.forward_basis.any()
    init_vocoder_stft(vocoder)
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 440.0 * t)[None]
    log_mel, *_ = vocoder.mel_stft(tone)
    assert int(log_mel[0].mean(dim=-1).argmax()) == int(codecs.mel_filterbank(257, 16).argmax(dim=0).sub(
        round(440 / 8000 * 256)).abs().argmin())  # the tone's energy lands in the mel bin centred nearest 440 Hz
    mel = codecs.log_mel(tone[None].expand(1, 2, -1).contiguous(), tiny.MEL_BINS).requires_grad_(True)
    vocoder(mel).pow(2).mean().backward()
    assert torch.isfinite(mel.grad).all()


def test_measured_shape_follows_the_rendered_one() -> None:
    spec = world.ClipSpec("circle", "red", "blue", "down right", (0.4, 0.4), 0.4, 0.08, "low", 2.0, 0.0)
    frames = world.render_frames(spec, 17, 24, (256, 256))
    cx, cy, radius = world.centres_and_radii(spec, 17, 24, (256, 256))
    got_x, got_y, got_r = world.measure_shape(frames, "red")
    assert np.abs(got_x - cx).max() < 1.0 and np.abs(got_y - cy).max() < 1.0
    assert np.abs(got_r - radius).max() < 1.5  # anti-aliased edge: about a pixel
    assert cx[-1] > cx[0] and cy[-1] > cy[0]  # "down right" in image coordinates
    assert np.corrcoef(got_r, world.loudness(np.arange(17) / 24, 2.0, 0.0))[0, 1] > 0.99


def test_measured_envelope_follows_the_loudness() -> None:
    spec = world.ClipSpec("square", "white", "green", "pulsing", (0.5, 0.5), 0.0, 0.08, "mid-pitched", 1.5, 1.0)
    wave = world.render_audio(spec, 2.0, 16000)
    times = np.linspace(0.05, 1.95, 40)
    envelope = world.envelope_of(wave, 16000, times)
    assert np.corrcoef(envelope, world.loudness(times, 1.5, 1.0))[0, 1] > 0.99


def test_designed_latent_holds_each_cells_thumbnails_per_time_bin() -> None:
    from ltxlab.pretrain.codec_stages import DESIGNED_CHANNELS, THUMB, TIME_BINS, designed_latent

    pixels = torch.zeros(1, 3, 17, 64, 64)
    pixels[:, 0, 0, :8, :8] = 1.0  # frame 0, top-left 8×8 block: red
    pixels[:, 1, 13:17, 56:, 56:] = 0.5  # the second half of the last 8-frame group, bottom-right block: green
    target = designed_latent(pixels)
    assert target.shape == (1, DESIGNED_CHANNELS, 3, 2, 2)
    thumbs = target.reshape(1, TIME_BINS, 3, THUMB, THUMB, 3, 2, 2)  # (bin, colour, row, column, F', H', W')
    assert (thumbs[0, :, 0, 0, 0, 0, 0, 0] == 1.0).all()  # frame 0 fills every time bin of its cell
    assert thumbs[0, 1, 1, -1, -1, 2, 1, 1] == 0.5 and thumbs[0, 0, 1, -1, -1, 2, 1, 1] == 0.0
    assert target.abs().sum() == TIME_BINS * 1.0 + 0.5


@torch.no_grad()
def test_vocoder_calibration_brings_held_out_tones_to_their_source_level() -> None:
    vocoder = tiny.build_from_config("vocoder", component_configs()["vocoder"], seed=0).eval()
    init_vocoder_stft(vocoder)
    spec = world.random_spec(np.random.default_rng(5))
    wave = torch.from_numpy(world.render_audio(spec, 1.0, codecs.SAMPLE_RATE))[None]
    mel = codecs.log_mel(wave, tiny.MEL_BINS)

    def level() -> float:
        return float(vocoder(mel).pow(2).mean().sqrt() / wave.pow(2).mean().sqrt())

    quiet = [*vocoder.vocoder.conv_out.parameters(), *vocoder.bwe_generator.conv_out.parameters()]
    for param in quiet:  # about as quiet as the trained vocoder comes out (~1/150)
        param.mul_(0.01)
    before = level()
    gain = calibrate_vocoder_level(vocoder, seed=0, clips=2)
    print(f"output/source RMS {before:.4f} -> {level():.3f} (gain {gain:.1f})")
    assert before < 0.05 and 0.5 < level() < 1.5
    stage1 = vocoder.vocoder(mel)  # the bandwidth extension adds nothing: the output is the resampled stage 1
    assert torch.equal(vocoder(mel), torch.clamp(vocoder.resampler(stage1), -1, 1)[..., : vocoder(mel).shape[-1]])


@pytest.fixture(scope="module")
def probe_tool():
    """tools/probe_conditioning.py as a module (run in-process: the tool's own ``main``, without a second
    interpreter's start-up)."""
    spec = importlib.util.spec_from_file_location("probe_conditioning", REPO / "tools" / "probe_conditioning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conditioning_probe_measures_caption_and_audio_use(smoke_weights: Path, probe_tool, capsys) -> None:
    """tools/probe_conditioning.py (the measurement behind the open tiny-world behaviours) runs on any export."""
    assert probe_tool.main(["--weights", str(smoke_weights), "--clips", "2"]) == 0
    out = capsys.readouterr().out
    values = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}
    names = ("t2v_loss_own_caption", "t2v_loss_rolled_captions", "a2v_loss_own_audio", "a2v_loss_rolled_audio",
             "prediction_change_without_text_attention", "a2v_prediction_change_with_rolled_audio",
             "audio_attention_output_share", "motion_cells_predicted", "motion_cells_drawn")
    assert set(values) == {f"{name}@{sigma}" for name in names for sigma in ("1", "0.97")}
    assert all(np.isfinite(v) for v in values.values())
    for sigma in ("1", "0.97"):  # rolling the captions changes what the text branch adds, and it is not empty
        assert values[f"t2v_loss_own_caption@{sigma}"] != values[f"t2v_loss_rolled_captions@{sigma}"]
        assert values[f"prediction_change_without_text_attention@{sigma}"] > 0
        assert values[f"a2v_prediction_change_with_rolled_audio@{sigma}"] > 0  # the smoke base's audio branch is open
        assert values[f"audio_attention_output_share@{sigma}"] > 0


def test_pure_noise_share_draws_sigma_one_and_keeps_the_rest_reference() -> None:
    """The flow stage's σ: a share of exact σ = 1 draws (the sampler's first step), the rest the reference's."""
    reference = ShiftedLogitNormal()
    sigmas = WithPureNoise(reference, 0.25).sample(20000, 768, torch.Generator().manual_seed(0))
    pure = sigmas == 1.0
    assert 0.23 < pure.float().mean() < 0.27
    baseline = reference.sample(20000, 768, torch.Generator().manual_seed(0))
    assert (baseline == 1.0).float().mean() < 0.01  # the reference alone almost never reaches σ = 1
    assert abs(sigmas[~pure].median() - baseline.median()) < 0.02


def test_probe_centroids_follow_the_shape_over_a_gradient(probe_tool) -> None:
    """The motion probe's latent centroid: a gradient background adds nothing, a bright cell is found where it is."""
    probe = probe_tool
    frames, height, width, channels = 3, 6, 8, 4
    latents = torch.linspace(-1, 1, height)[None, :, None, None].repeat(frames, 1, width, channels)
    for frame, x in enumerate((2, 3, 5)):  # a shape moving right, one row down from the top
        latents[frame, 1, x] += 2.0
    packed = latents.reshape(-1, channels)
    centroids = probe.foreground_centroids(packed, (frames, height, width))
    assert torch.allclose(centroids, torch.tensor([[2.0, 1.0], [3.0, 1.0], [5.0, 1.0]]))
    assert probe._travel(packed, (frames, height, width), "right") == pytest.approx(3.0)
    assert probe._travel(packed, (frames, height, width), "left") == pytest.approx(-3.0)
    assert probe._travel(packed, (frames, height, width), "down") == pytest.approx(0.0)
