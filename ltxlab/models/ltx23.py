"""The real LTX-2.3 (22B) model: architecture values and loading from local paths.

Two sources, per component: a diffusers-format folder (`model.checkpoint_dir`, loaded with `from_pretrained`)
or Lightricks' single-file checkpoints (`model.transformer_file` / `video_vae_file` / `audio_vae_file`; the
combined ltx-2.3 file may be given for all three). Single files are converted here, not with diffusers'
`from_single_file`: in diffusers 0.42.1 that path does not rename the 2.3 transformer's `prompt_adaln_single`
weights or the 2.3 video decoder's extra up-blocks, cannot load connectors or the vocoder, and leaves any
unmatched weight silently uninitialised. Here every model weight must be found, or `ModelPathError` says
which.
Architecture values come from diffusers' `scripts/convert_ltx2_to_diffusers.py` (version "2.3").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2VocoderWithBWE

from ltxlab.errors import ModelPathError
from ltxlab.models.spec import ModelConfig

_SUBFOLDERS = "transformer/, connectors/, vae/, audio_vae/, vocoder/, text_encoder/, tokenizer/"


def transformer_config() -> dict[str, Any]:
    """48 layers; video 32x128 (4096), audio 32x64 (2048); 18,988,838,144 parameters."""
    return {
        "in_channels": 128, "out_channels": 128, "patch_size": 1, "patch_size_t": 1,
        "num_attention_heads": 32, "attention_head_dim": 128, "cross_attention_dim": 4096,
        "vae_scale_factors": (8, 32, 32), "pos_embed_max_pos": 20, "base_height": 2048, "base_width": 2048,
        "gated_attn": True, "cross_attn_mod": True,
        "audio_in_channels": 128, "audio_out_channels": 128, "audio_patch_size": 1, "audio_patch_size_t": 1,
        "audio_num_attention_heads": 32, "audio_attention_head_dim": 64, "audio_cross_attention_dim": 2048,
        "audio_scale_factor": 4, "audio_pos_embed_max_pos": 20, "audio_sampling_rate": 16000,
        "audio_hop_length": 160, "audio_gated_attn": True, "audio_cross_attn_mod": True,
        "num_layers": 48, "activation_fn": "gelu-approximate", "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 3840,
        "attention_bias": True, "attention_out_bias": True, "rope_theta": 10000.0,
        "rope_double_precision": True, "causal_offset": 1,
        "timestep_scale_multiplier": 1000, "cross_attn_timestep_scale_multiplier": 1000,
        "rope_type": "split", "use_prompt_embeddings": False, "perturbed_attn": True,
    }


def connectors_config() -> dict[str, Any]:
    """Gemma 3 12B (3840 wide, 48+1 hidden states) -> 8-layer connectors, 128 registers; 3.17B parameters."""
    return {
        "caption_channels": 3840, "text_proj_in_factor": 49,
        "video_connector_num_attention_heads": 32, "video_connector_attention_head_dim": 128,
        "video_connector_num_layers": 8, "video_connector_num_learnable_registers": 128,
        "video_gated_attn": True,
        "audio_connector_num_attention_heads": 32, "audio_connector_attention_head_dim": 64,
        "audio_connector_num_layers": 8, "audio_connector_num_learnable_registers": 128,
        "audio_gated_attn": True,
        "connector_rope_base_seq_len": 4096, "rope_theta": 10000.0, "rope_double_precision": True,
        "causal_temporal_positioning": False, "rope_type": "split", "per_modality_projections": True,
        "video_hidden_dim": 4096, "audio_hidden_dim": 2048, "proj_bias": True,
    }


def video_vae_config() -> dict[str, Any]:
    """128 latent channels, 32x spatial / 8x temporal compression; 726M parameters."""
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 128,
        "block_out_channels": (256, 512, 1024, 1024), "decoder_block_out_channels": (256, 512, 512, 1024),
        "layers_per_block": (4, 6, 4, 2, 2), "decoder_layers_per_block": (4, 6, 4, 2, 2),
        "spatio_temporal_scaling": (True,) * 4, "decoder_spatio_temporal_scaling": (True,) * 4,
        "decoder_inject_noise": (False,) * 5,
        "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        "upsample_type": ("spatiotemporal", "spatiotemporal", "temporal", "spatial"),
        "upsample_residual": (False,) * 4, "upsample_factor": (2, 2, 1, 2), "timestep_conditioning": False,
        "patch_size": 4, "patch_size_t": 1, "resnet_norm_eps": 1e-6, "encoder_causal": True,
        "decoder_causal": False, "encoder_spatial_padding_mode": "zeros",
        "decoder_spatial_padding_mode": "zeros",
        "spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
    }


def audio_vae_config() -> dict[str, Any]:
    """16 kHz stereo, 64 mel bins, 8 latent channels -> 128-wide tokens at 25 per second; 53M parameters."""
    return {
        "base_channels": 128, "output_channels": 2, "ch_mult": (1, 2, 4), "num_res_blocks": 2,
        "attn_resolutions": None, "in_channels": 2, "resolution": 256, "latent_channels": 8,
        "norm_type": "pixel", "causality_axis": "height", "dropout": 0.0, "mid_block_add_attention": False,
        "sample_rate": 16000, "mel_hop_length": 160, "is_causal": True, "mel_bins": 64, "double_z": True,
    }


def vocoder_config() -> dict[str, Any]:
    """BigVGAN-style 16 kHz vocoder + bandwidth extension to 48 kHz; 128.5M parameters."""
    return {
        "in_channels": 128, "hidden_channels": 1536, "out_channels": 2,
        "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4], "upsample_factors": [5, 2, 2, 2, 2, 2],
        "resnet_kernel_sizes": [3, 7, 11], "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "act_fn": "snakebeta", "leaky_relu_negative_slope": 0.1, "antialias": True, "antialias_ratio": 2,
        "antialias_kernel_size": 12,
        # ltx-core clamps the 16 kHz stage to ±1 before bandwidth extension (its checkpoint sets
        # use_tanh_at_final=false); the BWE stage has no final activation.
        "final_act_fn": "clamp", "final_bias": False,
        "bwe_in_channels": 128, "bwe_hidden_channels": 512, "bwe_out_channels": 2,
        "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4], "bwe_upsample_factors": [6, 5, 2, 2, 2],
        "bwe_resnet_kernel_sizes": [3, 7, 11], "bwe_resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "bwe_act_fn": "snakebeta", "bwe_leaky_relu_negative_slope": 0.1, "bwe_antialias": True,
        "bwe_antialias_ratio": 2, "bwe_antialias_kernel_size": 12, "bwe_final_act_fn": None,
        "bwe_final_bias": False, "filter_length": 512, "hop_length": 80, "window_length": 512,
        "num_mel_channels": 64, "input_sampling_rate": 16000, "output_sampling_rate": 48000,
    }


def gemma3_12b_config() -> Any:
    """Gemma 3 12B (google/gemma-3-12b-it) as a transformers `Gemma3Config`; 12.19B parameters."""
    from transformers import Gemma3Config

    text = {
        "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "vocab_size": 262208, "sliding_window": 1024,
        "query_pre_attn_scalar": 256, "max_position_embeddings": 131072, "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }
    vision = {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
        "image_size": 896, "patch_size": 14, "vision_use_head": False,
    }
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=256,
        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
    )


def scheduler_config() -> dict[str, Any]:
    """Sampling schedule of the non-distilled LTX-2.3 model (token-count dependent shift)."""
    return {
        "use_dynamic_shifting": True, "base_shift": 0.95, "max_shift": 2.05, "base_image_seq_len": 1024,
        "max_image_seq_len": 4096, "shift_terminal": 0.1,
    }


def build_meta_transformer(config: dict[str, Any] | None = None) -> LTX2VideoTransformer3DModel:
    """The full-size 2.3 transformer on the meta device: no memory, no weights (counting, benchmarks)."""
    with torch.device("meta"):
        return LTX2VideoTransformer3DModel.from_config(config or transformer_config())


# ------------------------------------------------------------------ Lightricks single file -> diffusers keys

_CONNECTOR_KEYS = ("video_embeddings_connector", "audio_embeddings_connector", "text_embedding_projection")
_TRANSFORMER_RENAMES = (
    ("patchify_proj", "proj_in"),
    ("av_ca_video_scale_shift_adaln_single", "av_cross_attn_video_scale_shift"),
    ("av_ca_a2v_gate_adaln_single", "av_cross_attn_video_a2v_gate"),
    ("av_ca_audio_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift"),
    ("av_ca_v2a_gate_adaln_single", "av_cross_attn_audio_v2a_gate"),
    ("scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"),
    ("scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"),
    ("prompt_adaln_single", "prompt_adaln"),  # 2.3 (also audio_prompt_adaln_single)
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)
_CONNECTOR_RENAMES = (
    ("video_embeddings_connector", "video_connector"),
    ("audio_embeddings_connector", "audio_connector"),
    ("transformer_1d_blocks", "transformer_blocks"),
    ("text_embedding_projection.video_aggregate_embed", "video_text_proj_in"),
    ("text_embedding_projection.audio_aggregate_embed", "audio_text_proj_in"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)
_VAE_RENAMES = (
    ("res_blocks", "resnets"),
    ("per_channel_statistics.mean-of-means", "latents_mean"),
    ("per_channel_statistics.std-of-means", "latents_std"),
    ("last_time_embedder", "time_embedder"),
    ("last_scale_shift_table", "scale_shift_table"),
)
_VOCODER_RENAMES = (
    (".ups.", ".upsamplers."),
    ("resblocks", "resnets"),
    ("conv_pre", "conv_in"),
    ("conv_post", "conv_out"),
    ("act_post", "act_out"),
    ("downsample.lowpass", "downsample"),
)
_VAE_BLOCK = re.compile(r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.")


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def _is_statistic_used(key: str) -> bool:
    # VAE checkpoints also store `channel`, `mean-of-stds`, `mean-of-stds_over_std-of-means`, ...; diffusers
    # (like ltx-core) uses only these two, matched by their exact name.
    return "per_channel_statistics." not in key or key.rsplit(".", 1)[-1] in ("mean-of-means", "std-of-means")


def _is_connector(key: str) -> bool:
    return key.removeprefix("connectors.").startswith(_CONNECTOR_KEYS)


def _convert_transformer(key: str, config: dict) -> str:
    key = _rename(key, _TRANSFORMER_RENAMES)
    for old, new in (("adaln_single.", "time_embed."), ("audio_adaln_single.", "audio_time_embed.")):
        if key.startswith(old):
            key = new + key[len(old) :]
    return key


def _convert_connectors(key: str, config: dict) -> str:
    return _rename(key.removeprefix("connectors."), _CONNECTOR_RENAMES)


def _video_vae_block(match: re.Match, num_blocks: int) -> str:
    # Lightricks numbers resnet groups and resamplers in one flat list; diffusers nests resamplers in blocks.
    side, index = match.group(1), int(match.group(2))
    if side.startswith("encoder"):
        if index == 2 * num_blocks:
            return "encoder.mid_block."
        return f"encoder.down_blocks.{index // 2}." + ("downsamplers.0." if index % 2 else "")
    if index == 0:
        return "decoder.mid_block."
    if index % 2:
        return f"decoder.up_blocks.{(index - 1) // 2}.upsamplers.0."
    return f"decoder.up_blocks.{index // 2 - 1}."


def _convert_video_vae(key: str, config: dict) -> str:
    num_blocks = len(config["block_out_channels"])
    return _rename(_VAE_BLOCK.sub(lambda m: _video_vae_block(m, num_blocks), key), _VAE_RENAMES)


def _convert_audio_vae(key: str, config: dict) -> str:
    return _rename(key, _VAE_RENAMES[1:3])


def _convert_vocoder(key: str, config: dict) -> str:
    return _rename(key, _VOCODER_RENAMES)


class _Component(NamedTuple):
    cls: type
    subfolder: str  # in a diffusers-format folder
    file_key: str  # ModelConfig field of the single file that holds it
    prefix: str  # key prefix inside a Lightricks (combined) checkpoint
    default_config: Callable[[], dict[str, Any]]
    keep: Callable[[str], bool]  # which (prefix-stripped) keys belong to it
    convert: Callable[[str, dict], str]  # Lightricks key -> diffusers key


_COMPONENTS = {
    "transformer": _Component(LTX2VideoTransformer3DModel, "transformer", "transformer_file",
                              "model.diffusion_model.", transformer_config, lambda k: not _is_connector(k),
                              _convert_transformer),
    "connectors": _Component(LTX2TextConnectors, "connectors", "transformer_file", "model.diffusion_model.",
                             connectors_config, _is_connector, _convert_connectors),
    "video_vae": _Component(AutoencoderKLLTX2Video, "vae", "video_vae_file", "vae.", video_vae_config,
                            _is_statistic_used, _convert_video_vae),
    "audio_vae": _Component(AutoencoderKLLTX2Audio, "audio_vae", "audio_vae_file", "audio_vae.",
                            audio_vae_config, _is_statistic_used, _convert_audio_vae),
    "vocoder": _Component(LTX2VocoderWithBWE, "vocoder", "audio_vae_file", "vocoder.", vocoder_config,
                          lambda k: True, _convert_vocoder),
}


def existing_path(value: str | None, key: str, what: str) -> Path:
    """`value` as an existing path, or a `ModelPathError` naming the config key."""
    if not value:
        raise ModelPathError(f"{key}: not set; point it at {what}")
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelPathError(f"{key}: {value} does not exist; point it at {what}")
    return path


def component_keys(name: str, keys: list[str], config: dict) -> dict[str, str]:
    """diffusers key -> file key of the ``name`` weights among a (possibly combined) Lightricks file's keys.

    Keys no diffusers weight reads (extra VAE statistics) are left out; nothing is read from disk.
    """
    part = _COMPONENTS[name]
    if any(k.startswith(part.prefix) for k in keys):
        chosen = {k: k[len(part.prefix) :] for k in keys if k.startswith(part.prefix)}
    elif name == "vocoder":  # a split audio VAE file has no vocoder: never mistake its weights for one
        chosen = {}
    else:  # a split file: the whole file is this component
        chosen = {k: k for k in keys if not k.startswith(("vocoder.", "vae.", "audio_vae."))}
    if name == "connectors":  # some checkpoints keep the text projection outside the diffusion prefix
        chosen.update({k: k for k in keys if k.startswith("text_embedding_projection.")})
    return {part.convert(short, config): key for key, short in chosen.items() if part.keep(short)}


def _read_component(path: Path, name: str, part: _Component, config: dict, dtype: torch.dtype) -> dict:
    """This component's tensors from a (possibly combined) Lightricks file, renamed to diffusers keys."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        state = {}
        for target, key in component_keys(name, list(handle.keys()), config).items():
            tensor = handle.get_tensor(key)  # only this component's keys: a combined file holds ~46 GB
            state[target] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    if not state:
        raise ModelPathError(
            f"model.{part.file_key}: {path} holds no {name} weights (no '{part.prefix}*' keys); use the "
            f"combined LTX-2.3 checkpoint or a diffusers-format folder in model.checkpoint_dir"
        )
    return state


def _from_single_file(cfg: ModelConfig, name: str, dtype: torch.dtype) -> torch.nn.Module:
    from accelerate import init_empty_weights

    part = _COMPONENTS[name]
    path = existing_path(
        getattr(cfg, part.file_key), f"model.{part.file_key}", "a Lightricks LTX-2.3 .safetensors file"
    )
    config = part.default_config()
    if cfg.checkpoint_dir and (Path(cfg.checkpoint_dir) / part.subfolder / "config.json").is_file():
        config = part.cls.load_config(cfg.checkpoint_dir, subfolder=part.subfolder)  # explicit architecture
    state = _read_component(path, name, part, config, dtype)
    with init_empty_weights():  # parameters on meta; buffers computed in __init__ stay real
        model = part.cls.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    misshaped = [f"{k} {tuple(state[k].shape)} != {shape}" for k, shape in sorted(expected.items())
                 if k in state and tuple(state[k].shape) != shape]
    if missing or misshaped:
        raise ModelPathError(
            f"model.{part.file_key}: {path} does not match the LTX-2.3 {name} ({len(missing)} missing "
            f"weights, e.g. {missing[:3]}; {len(misshaped)} mis-shaped, e.g. {misshaped[:3]}); convert "
            f"it with diffusers' scripts/convert_ltx2_to_diffusers.py and set model.checkpoint_dir instead"
        )
    # Keys no model weight reads (extra statistics, training leftovers) are ignored, as ltx-core ignores them.
    model.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    return model  # buffers computed in __init__ are still float32: the loader casts the whole module


def load_component(cfg: ModelConfig, name: str, dtype: torch.dtype) -> torch.nn.Module:
    """Load one of transformer/connectors/video_vae/audio_vae/vocoder from the configured local paths.

    The component's single file wins when set; otherwise `checkpoint_dir/<subfolder>` is used.
    """
    part = _COMPONENTS[name]
    if getattr(cfg, part.file_key):
        return _from_single_file(cfg, name, dtype)
    what = f"a diffusers-format LTX-2.3 folder ({_SUBFOLDERS}) or set model.{part.file_key}"
    root = existing_path(cfg.checkpoint_dir, "model.checkpoint_dir", what)
    if not (root / part.subfolder).is_dir():
        raise ModelPathError(
            f"model.checkpoint_dir: {root} has no {part.subfolder}/ subfolder; point it at {what}"
        )
    return part.cls.from_pretrained(str(root), subfolder=part.subfolder, dtype=dtype)


def _text_encoder_folders(cfg: ModelConfig) -> tuple[Path, Path]:
    if cfg.text_encoder_dir:
        path = existing_path(cfg.text_encoder_dir, "model.text_encoder_dir", "a local Gemma 3 12B folder")
        return path, path
    what = "a local Gemma 3 12B folder (or model.checkpoint_dir to a folder with text_encoder/ + tokenizer/)"
    if not cfg.checkpoint_dir:
        raise ModelPathError(f"model.text_encoder_dir: not set; point it at {what}")
    root = existing_path(cfg.checkpoint_dir, "model.checkpoint_dir", "a diffusers-format LTX-2.3 folder")
    if not (root / "text_encoder").is_dir() or not (root / "tokenizer").is_dir():
        raise ModelPathError(f"model.text_encoder_dir: not set and {root} has no text_encoder/ + tokenizer/; "
                             f"point model.text_encoder_dir at {what}")
    return root / "text_encoder", root / "tokenizer"


def load_text_encoder(cfg: ModelConfig, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
    """(tokenizer, Gemma 3) from `model.text_encoder_dir`, else `checkpoint_dir/{tokenizer,text_encoder}`."""
    import transformers

    encoder_dir, tokenizer_dir = _text_encoder_folders(cfg)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    # The class the folder was saved as, so its weight names load unchanged.
    architectures = transformers.AutoConfig.from_pretrained(str(encoder_dir)).architectures or ["AutoModel"]
    cls = getattr(transformers, architectures[0], transformers.AutoModel)
    return tokenizer, cls.from_pretrained(str(encoder_dir), dtype=dtype)
