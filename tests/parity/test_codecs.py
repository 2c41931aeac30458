"""VAEs, patchify order, audio packing, positions and the vocoder against ltx-core's own modules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers.pipelines.ltx2 import LTX2VocoderWithBWE
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.model.audio_vae.audio_vae import AudioDecoder, AudioEncoder
from ltx_core.model.audio_vae.causality_axis import CausalityAxis
from ltx_core.model.audio_vae.vocoder import MelSTFT, Vocoder, VocoderWithBWE
from ltx_core.model.common.normalization import NormType
from ltx_core.model.video_vae.enums import LogVarianceType, NormLayerType, PaddingModeType
from ltx_core.model.video_vae.video_vae import VideoDecoder, VideoEncoder
from ltx_core.types import AudioLatentShape

from ltxlab.models import codecs, ltx23, tiny
from tests.parity.conftest import core_audio_positions, core_state_from, core_video_positions

# The tiny video VAE in ltx-core's block grammar (what the 2.3 checkpoint metadata spells at full size).
VIDEO_ENCODER_BLOCKS = [("res_x", 1), ("compress_space_res", {"multiplier": 1}), ("res_x", 1),
                        ("compress_time_res", {"multiplier": 2}), ("res_x", 1), ("compress_all_res", {"multiplier": 2}),
                        ("res_x", 1), ("compress_all_res", {"multiplier": 1}), ("res_x", 1)]
VIDEO_DECODER_BLOCKS = list(reversed([  # ltx-core lists decoder blocks from the output end
    ("res_x", 1), ("compress_all", {"multiplier": 2}), ("res_x", 1), ("compress_all", {"multiplier": 1}),
    ("res_x", 1), ("compress_time", {"multiplier": 2}), ("res_x", 1), ("compress_space", {"multiplier": 2}),
    ("res_x", 1)]))


def _load(core: torch.nn.Module, side: str, ours: dict, convert) -> torch.nn.Module:
    """Fill an ltx-core encoder/decoder from ltxlab's weights: its keys are the single file's keys without
    the component prefix and side (statistics sit beside encoder/decoder)."""
    def full(key: str) -> str:
        return key if key.startswith("per_channel_statistics") else f"{side}.{key}"

    state = core_state_from(core, ours, lambda k: convert(full(k)), used=lambda k: ltx23._is_statistic_used(full(k)))
    core.load_state_dict(state, strict=True)
    return core.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def video_vaes():
    ours = tiny.build_video_vae(0).eval()
    config = tiny.video_vae_config()

    def convert(key):
        return ltx23._convert_video_vae(key, config)

    encoder = VideoEncoder(in_channels=3, out_channels=config["latent_channels"], encoder_blocks=VIDEO_ENCODER_BLOCKS,
                           patch_size=config["patch_size"], norm_layer=NormLayerType.PIXEL_NORM,
                           latent_log_var=LogVarianceType.UNIFORM, encoder_spatial_padding_mode=PaddingModeType.ZEROS)
    decoder = VideoDecoder(in_channels=config["latent_channels"], out_channels=3, decoder_blocks=VIDEO_DECODER_BLOCKS,
                           patch_size=config["patch_size"], causal=config["decoder_causal"],
                           timestep_conditioning=config["timestep_conditioning"],
                           decoder_spatial_padding_mode=PaddingModeType.ZEROS,
                           base_channels=config["decoder_block_out_channels"][-1] // 8)
    state = ours.state_dict()
    return ours, _load(encoder, "encoder", state, convert), _load(decoder, "decoder", state, convert)


def test_video_vae_encode_and_decode_equal_ltx_core(video_vaes) -> None:
    ours, encoder, decoder = video_vaes
    pixels = torch.rand(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = codecs.encode_video(ours, pixels)
    assert torch.equal(latents, encoder(pixels))  # ltx-core returns normalised means, as ltxlab does
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(codecs.decode_video(ours, noise), decoder(noise).clamp(-1, 1))


def test_patchify_order_and_audio_packing_equal_ltx_core() -> None:
    video = torch.randn(2, 8, 3, 4, 5)
    assert torch.equal(codecs.pack_video(video), VideoLatentPatchifier(patch_size=1).patchify(video))
    audio = torch.randn(2, 4, 7, 4)
    packed = AudioPatchifier(patch_size=1).patchify(audio)
    assert torch.equal(codecs.pack_audio(audio), packed)
    assert torch.equal(codecs.unpack_audio(packed, 4), audio)


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 60.0])
def test_positions_equal_ltx_core(fps: float) -> None:
    model = tiny.build_transformer(0)
    ours = codecs.video_coords(model, 2, 3, 2, 2, fps=fps)
    assert torch.allclose(ours, core_video_positions(2, fps), atol=1e-6, rtol=0)
    assert torch.allclose(codecs.audio_coords(model, 2, 7), core_audio_positions(2, 7), atol=1e-6, rtol=0)


def _audio_core_kwargs(config: dict) -> dict:
    return dict(ch=config["base_channels"], ch_mult=tuple(config["ch_mult"]), num_res_blocks=config["num_res_blocks"],
                attn_resolutions=set(), resolution=config["resolution"], z_channels=config["latent_channels"],
                norm_type=NormType.PIXEL, causality_axis=CausalityAxis.HEIGHT, dropout=0.0,
                mid_block_add_attention=config["mid_block_add_attention"], sample_rate=config["sample_rate"],
                mel_hop_length=config["mel_hop_length"], is_causal=config["is_causal"], mel_bins=config["mel_bins"])


class _MelOut(torch.nn.Module):
    """A 'vocoder' that returns its mel input, so decode_audio's mel can be compared with ltx-core's decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(output_sampling_rate=16000)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return mel


def test_audio_vae_encode_and_decode_equal_ltx_core() -> None:
    ours = tiny.build_audio_vae(0).eval()
    config = tiny.audio_vae_config()

    def convert(key):
        return ltx23._convert_audio_vae(key, config)

    kwargs = _audio_core_kwargs(config)
    encoder = _load(AudioEncoder(**kwargs, double_z=True, in_channels=2), "encoder", ours.state_dict(), convert)
    decoder = _load(AudioDecoder(**kwargs, out_ch=2), "decoder", ours.state_dict(), convert)
    wave = torch.rand(1, 2, 16000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = codecs.encode_audio(ours, wave)
    # ltx-core's mel front-end needs torchaudio; ltxlab's torch-only mel feeds both encoders.
    assert torch.equal(tokens, codecs.pack_audio(encoder(codecs.log_mel(wave, config["mel_bins"]))))
    mel, _ = codecs.decode_audio(ours, _MelOut(), tokens)
    assert torch.equal(mel, decoder(codecs.unpack_audio(tokens, config["latent_channels"])))


# ltx-core's vocoder hard-codes 2 × 64 mel input channels and AMP blocks of three dilations: the tiny vocoder at
# the real mel width.
VOCODER = tiny.vocoder_config() | {"in_channels": 128, "bwe_in_channels": 128, "num_mel_channels": 64,
                                   "resnet_dilations": [[1, 3, 5]], "bwe_resnet_dilations": [[1, 3, 5]]}


def _core_stage(config: dict, bwe: bool) -> Vocoder:
    pre = "bwe_" if bwe else ""
    return Vocoder(
        resblock_kernel_sizes=config[pre + "resnet_kernel_sizes"], upsample_rates=config[pre + "upsample_factors"],
        upsample_kernel_sizes=config[pre + "upsample_kernel_sizes"],
        resblock_dilation_sizes=config[pre + "resnet_dilations"],
        upsample_initial_channel=config[pre + "hidden_channels"],
        resblock="AMP1", activation="snakebeta",
        output_sampling_rate=config["output_sampling_rate"] if bwe else config["input_sampling_rate"],
        use_tanh_at_final=False, apply_final_activation=not bwe, use_bias_at_final=False)  # the 2.3 metadata


def test_vocoder_equals_ltx_core_including_the_first_stage_clamp() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ours = LTX2VocoderWithBWE.from_config(VOCODER).eval()
    with torch.no_grad():  # a loud 16 kHz stage, so its ±1 clamp changes the waveform
        ours.vocoder.conv_out.weight.mul_(50.0)
    core = VocoderWithBWE(
        vocoder=_core_stage(VOCODER, False), bwe_generator=_core_stage(VOCODER, True),
        mel_stft=MelSTFT(filter_length=VOCODER["filter_length"], hop_length=VOCODER["hop_length"],
                         win_length=VOCODER["window_length"], n_mel_channels=VOCODER["num_mel_channels"]),
        input_sampling_rate=VOCODER["input_sampling_rate"], output_sampling_rate=VOCODER["output_sampling_rate"],
        hop_length=VOCODER["hop_length"])
    state = core_state_from(core, ours.state_dict(), lambda k: ltx23._convert_vocoder(k, VOCODER))
    core.load_state_dict(state, strict=True)
    mel = torch.randn(1, 2, 20, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(mel), core.eval()(mel)
        assert torch.equal(got, want)
        unclamped = LTX2VocoderWithBWE.from_config(VOCODER | {"final_act_fn": None}).eval()
        unclamped.load_state_dict(ours.state_dict())
        assert not torch.allclose(unclamped(mel), want, atol=1e-3)


def test_audio_latent_length_follows_ltx_core_from_duration() -> None:
    durations = [frames / fps for frames in (9, 17, 25, 49, 89, 97, 121) for fps in (8, 12, 24, 25, 30, 50, 60)]
    for duration in [*durations, 0.5, 1.0, 2.02, 4.1, 3.7]:
        expected = AudioLatentShape.from_duration(batch=1, duration=duration).frames
        assert codecs.audio_latent_frames_for_duration(duration) == expected, duration
    # Encoding a waveform of that duration yields one more latent in most settings (the old sampling length).
    longer = sum(codecs.audio_latent_length(round(d * 16000)) > codecs.audio_latent_frames_for_duration(d)
                 for d in durations)
    assert longer > len(durations) // 2
