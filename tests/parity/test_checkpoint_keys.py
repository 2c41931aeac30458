"""ltx-core's LTX-2.3 models, built on the meta device, define the keys and shapes of a real single-file
checkpoint; ltxlab's converter maps every one of them, for every component, with nothing missing or mis-shaped."""

from __future__ import annotations

import pytest
import torch
from ltx_core.model.audio_vae.audio_vae import AudioDecoder, AudioEncoder
from ltx_core.model.audio_vae.vocoder import MelSTFT, VocoderWithBWE
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.video_vae.enums import LogVarianceType, NormLayerType, PaddingModeType
from ltx_core.model.video_vae.video_vae import VideoDecoder, VideoEncoder
from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EmbeddingsProcessorConfigurator

from ltxlab.models import ltx23
from tests.parity.conftest import core_transformer_kwargs
from tests.parity.test_codecs import _audio_core_kwargs, _core_stage

# The LTX-2.3 video VAE as its checkpoint metadata spells it (ltx-core's block grammar).
ENCODER_BLOCKS = [("res_x", {"num_layers": 4}), ("compress_space_res", {"multiplier": 2}), ("res_x", {"num_layers": 6}),
                  ("compress_time_res", {"multiplier": 2}), ("res_x", {"num_layers": 4}),
                  ("compress_all_res", {"multiplier": 2}), ("res_x", {"num_layers": 2}),
                  ("compress_all_res", {"multiplier": 1}), ("res_x", {"num_layers": 2})]
DECODER_BLOCKS = [("res_x", {"num_layers": 4}), ("compress_space", {"multiplier": 2}), ("res_x", {"num_layers": 6}),
                  ("compress_time", {"multiplier": 2}), ("res_x", {"num_layers": 4}),
                  ("compress_all", {"multiplier": 1}), ("res_x", {"num_layers": 2}),
                  ("compress_all", {"multiplier": 2}), ("res_x", {"num_layers": 2})]
# Statistics a real file stores beside the two ltx-core reads.
EXTRA_STATISTICS = ("channel", "mean-of-stds", "mean-of-stds_over_std-of-means")


def _embeddings_processor() -> torch.nn.Module:
    c = ltx23.connectors_config()
    t = ltx23.transformer_config()
    transformer = {
        "rope_type": "split", "frequencies_precision": "float64", "connector_positional_embedding_max_pos": [4096],
        "connector_num_attention_heads": c["video_connector_num_attention_heads"],
        "connector_attention_head_dim": c["video_connector_attention_head_dim"],
        "connector_num_layers": c["video_connector_num_layers"],
        "audio_connector_num_attention_heads": c["audio_connector_num_attention_heads"],
        "audio_connector_attention_head_dim": c["audio_connector_attention_head_dim"],
        "audio_connector_num_layers": c["audio_connector_num_layers"], "connector_apply_gated_attention": True,
        "caption_proj_before_connector": True, "caption_projection_first_linear": False,
        "caption_proj_input_norm": False, "caption_projection_second_linear": False,
        "num_attention_heads": t["num_attention_heads"], "attention_head_dim": t["attention_head_dim"],
        "audio_num_attention_heads": t["audio_num_attention_heads"],
        "audio_attention_head_dim": t["audio_attention_head_dim"],
    }
    return EmbeddingsProcessorConfigurator.from_config({"transformer": transformer})


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, tuple]:
    """Key -> shape of an LTX-2.3 single file, as ltx-core's models (and its key maps) define it."""
    with torch.device("meta"):
        keys = _shapes(LTXModel(**core_transformer_kwargs(ltx23.transformer_config())), "model.diffusion_model.")
        for key, shape in _shapes(_embeddings_processor()).items():  # inverse of EMBEDDINGS_PROCESSOR_KEY_OPS
            key = key.replace("feature_extractor.", "text_embedding_projection.")
            for modality in ("video", "audio"):
                key = key.replace(f"{modality}_connector.", f"model.diffusion_model.{modality}_embeddings_connector.")
            keys[key] = shape
        vae = ltx23.video_vae_config()
        encoder = VideoEncoder(in_channels=3, out_channels=128, encoder_blocks=ENCODER_BLOCKS, patch_size=4,
                               norm_layer=NormLayerType.PIXEL_NORM, latent_log_var=LogVarianceType.UNIFORM,
                               encoder_spatial_padding_mode=PaddingModeType.ZEROS)
        decoder = VideoDecoder(in_channels=128, out_channels=3, decoder_blocks=DECODER_BLOCKS, patch_size=4,
                               causal=vae["decoder_causal"], timestep_conditioning=vae["timestep_conditioning"],
                               decoder_spatial_padding_mode=PaddingModeType.ZEROS, base_channels=128)
        audio = _audio_core_kwargs(ltx23.audio_vae_config())
        audio_modules = (AudioEncoder(**audio, double_z=True, in_channels=2), AudioDecoder(**audio, out_ch=2))
        for prefix, (enc, dec) in (("vae.", (encoder, decoder)), ("audio_vae.", audio_modules)):
            for side, module in (("encoder.", enc), ("decoder.", dec)):
                for key, shape in _shapes(module).items():
                    keys[prefix + (key if key.startswith("per_channel_statistics.") else side + key)] = shape
            for extra in EXTRA_STATISTICS:
                keys[f"{prefix}per_channel_statistics.{extra}"] = (128,)
        voc = ltx23.vocoder_config()
        vocoder = VocoderWithBWE(
            vocoder=_core_stage(voc, False), bwe_generator=_core_stage(voc, True),
            mel_stft=MelSTFT(filter_length=voc["filter_length"], hop_length=voc["hop_length"],
                             win_length=voc["window_length"], n_mel_channels=voc["num_mel_channels"]),
            input_sampling_rate=voc["input_sampling_rate"], output_sampling_rate=voc["output_sampling_rate"],
            hop_length=voc["hop_length"])
        keys |= _shapes(vocoder, "vocoder.")
    return keys


def test_ltx_core_defines_the_single_file_layout(checkpoint) -> None:
    prefixes = {k.split(".")[0] + "." for k in checkpoint}
    assert prefixes == {"model.", "text_embedding_projection.", "vae.", "audio_vae.", "vocoder."}
    assert checkpoint["model.diffusion_model.transformer_blocks.47.attn1.to_q.weight"] == (4096, 4096)
    assert len(checkpoint) == 5_947 + 2 * len(EXTRA_STATISTICS)


@pytest.mark.parametrize("component", ["transformer", "connectors", "video_vae", "audio_vae", "vocoder"])
def test_converter_maps_every_weight_of_every_component(checkpoint, component: str) -> None:
    part = ltx23._COMPONENTS[component]
    config = part.default_config()
    mapping = ltx23.component_keys(component, list(checkpoint), config)
    with torch.device("meta"):
        model = part.cls.from_config(config)
    expected = _shapes(model)
    missing = sorted(set(expected) - set(mapping))
    misshaped = [k for k in expected if k in mapping and checkpoint[mapping[k]] != expected[k]]
    assert not missing and not misshaped, (missing[:5], misshaped[:5])
    assert len(set(mapping.values())) == len(mapping)  # one file key per weight


def test_every_file_key_is_read_by_one_component_or_is_an_ignored_statistic(checkpoint) -> None:
    read: list[str] = []
    for name, part in ltx23._COMPONENTS.items():
        read += ltx23.component_keys(name, list(checkpoint), part.default_config()).values()
    assert len(read) == len(set(read))  # no key feeds two components
    unread = set(checkpoint) - set(read)
    assert unread == {f"{p}per_channel_statistics.{x}" for p in ("vae.", "audio_vae.") for x in EXTRA_STATISTICS}
