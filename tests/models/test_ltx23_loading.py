"""ltxlab.models.ltx23: full-size architecture, path errors, and loading both real checkpoint layouts.

The real-weight code paths run on tiny weights written in the diffusers-format and Lightricks single-file
layouts.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Gemma3ForConditionalGeneration

from ltxlab.errors import ConfigError, InputError, LtxlabError, ModelPathError
from ltxlab.models import loader, ltx23
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts
from tests.models.conftest import same_weights

TINY = ModelConfig()


def test_meta_transformer_has_the_ltx23_parameter_count() -> None:
    model = ltx23.build_meta_transformer()
    count = sum(p.numel() for p in model.parameters())
    assert count == 18_988_838_144
    assert next(model.parameters()).device.type == "meta"
    with torch.device("meta"):
        gemma = Gemma3ForConditionalGeneration(ltx23.gemma3_12b_config())
    assert abs(sum(p.numel() for p in gemma.parameters()) / 1e9 - 12.19) < 0.01


def test_ltx23_missing_paths_raise_model_path_error(tmp_path: Path) -> None:
    real = ModelConfig(name="ltx23", max_sequence_length=256)
    unset = r"model\.checkpoint_dir: not set.*model\.transformer_file"
    with pytest.raises(ModelPathError, match=unset) as err:
        loader.load_transformer(real)
    assert isinstance(err.value, ConfigError | InputError | LtxlabError) and err.value.code == 422
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ModelPathError, match=rf"model\.checkpoint_dir: {re.escape(missing)} does not exist"):
        loader.load_video_vae(replace(real, checkpoint_dir=missing))
    with pytest.raises(ModelPathError, match=r"has no audio_vae/ subfolder"):
        loader.load_audio_vae(replace(real, checkpoint_dir=str(tmp_path)))
    with pytest.raises(ModelPathError, match=r"model\.transformer_file: .* does not exist"):
        loader.load_transformer(replace(real, transformer_file=str(tmp_path / "ltx-2.3.safetensors")))
    with pytest.raises(ModelPathError, match=r"model\.text_encoder_dir"):
        loader.load_text_stack(real)
    with pytest.raises(ModelPathError, match=r"model\.text_encoder_dir: .* does not exist"):
        loader.load_text_stack(replace(real, text_encoder_dir=missing))


def test_ltx23_loads_a_diffusers_format_folder(parts: dict, tmp_path: Path) -> None:
    stack = parts["text"]
    saved = {"transformer": parts["transformer"], "connectors": stack.connectors, "vae": parts["vae"],
             "audio_vae": parts["audio_vae"], "vocoder": parts["vocoder"], "text_encoder": stack.text_encoder,
             "tokenizer": stack.tokenizer}
    for sub, module in saved.items():
        module.save_pretrained(tmp_path / sub)
    real = ModelConfig(name="ltx23", checkpoint_dir=str(tmp_path), max_sequence_length=32)
    assert same_weights(loader.load_transformer(real), parts["transformer"])
    assert same_weights(loader.load_video_vae(real), parts["vae"])
    assert same_weights(loader.load_audio_vae(real), parts["audio_vae"])
    assert same_weights(loader.load_vocoder(real), parts["vocoder"])
    loaded = loader.load_text_stack(real)
    prompts = ["a cat sleeps on a sofa", "fireworks"]
    expected = encode_prompts(stack, prompts).video
    assert torch.allclose(encode_prompts(loaded, prompts).video, expected, atol=1e-6)


# Test-side inverse of the Lightricks -> diffusers renames: writes tiny weights in the single-file layout.
_TO_LIGHTRICKS = {
    "transformer": (("proj_in", "patchify_proj"), ("prompt_adaln", "prompt_adaln_single"),
                    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
                    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
                    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
                    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
                    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
                    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
                    ("norm_q", "q_norm"), ("norm_k", "k_norm")),
    "connectors": (("video_connector", "video_embeddings_connector"),
                   ("audio_connector", "audio_embeddings_connector"),
                   ("transformer_blocks", "transformer_1d_blocks"), ("norm_q", "q_norm"),
                   ("norm_k", "k_norm")),
    "vocoder": ((".upsamplers.", ".ups."), ("resnets", "resblocks"), ("conv_in", "conv_pre"),
                ("conv_out", "conv_post"), ("act_out", "act_post"), ("downsample.", "downsample.lowpass.")),
    "vae": (("resnets", "res_blocks"), ("latents_mean", "per_channel_statistics.mean-of-means"),
            ("latents_std", "per_channel_statistics.std-of-means")),
}


def _lightricks_vae_block(key: str) -> str:
    for pattern, index in ((r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda i: 2 * i + 1),
                           (r"^encoder\.down_blocks\.(\d+)\.", lambda i: 2 * i),
                           (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda i: 2 * i + 1),
                           (r"^decoder\.up_blocks\.(\d+)\.", lambda i: 2 * i + 2)):
        side = "encoder.down_blocks" if pattern.startswith("^encoder") else "decoder.up_blocks"
        key, n = re.subn(pattern, lambda m, f=index, s=side: f"{s}.{f(int(m.group(1)))}.", key)
        if n:
            return key
    return key.replace("encoder.mid_block.", "encoder.down_blocks.8.").replace(
        "decoder.mid_block.", "decoder.up_blocks.0."
    )


def _lightricks_file(parts: dict, path: Path) -> None:
    def renamed(module: torch.nn.Module, kind: str, fn=lambda k: k) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in module.state_dict().items():
            key = fn(key)
            for new, old in _TO_LIGHTRICKS[kind]:
                key = key.replace(new, old)
            out[key] = value.contiguous()
        return out

    tensors = {}
    for key, value in renamed(parts["transformer"], "transformer").items():
        key = re.sub(r"^(audio_)?time_embed\.", lambda m: f"{m.group(1) or ''}adaln_single.", key)
        tensors[f"model.diffusion_model.{key}"] = value
    for key, value in renamed(parts["text"].connectors, "connectors").items():
        projection = re.match(r"^(video|audio)_text_proj_in\.", key)
        if projection:  # kept outside the diffusion prefix, as some checkpoints do
            name = f"{projection.group(1)}_aggregate_embed.{key[projection.end() :]}"
            tensors[f"text_embedding_projection.{name}"] = value
        else:
            tensors[f"model.diffusion_model.{key}"] = value
    tensors |= {f"vae.{k}": v for k, v in renamed(parts["vae"], "vae", _lightricks_vae_block).items()}
    # Extras a real LTX-2.3 file carries and ltx-core ignores: the converter must accept them.
    for vae in ("vae", "audio_vae"):
        tensors[f"{vae}.per_channel_statistics.channel"] = torch.arange(8)
        for extra in ("mean-of-stds", "mean-of-stds_over_std-of-means"):
            tensors[f"{vae}.per_channel_statistics.{extra}"] = torch.rand(8)
    tensors |= {f"audio_vae.{k}": v for k, v in renamed(parts["audio_vae"], "vae").items()}
    tensors |= {f"vocoder.{k}": v for k, v in renamed(parts["vocoder"], "vocoder").items()}
    save_file(tensors, str(path))


def test_ltx23_loads_lightricks_single_file_checkpoints(parts: dict, tmp_path: Path) -> None:
    combined = tmp_path / "ltx-2.3-tiny.safetensors"
    _lightricks_file(parts, combined)
    # checkpoint_dir holding only configs gives the (tiny) architecture; weights come from the single file.
    configs = tmp_path / "configs"
    modules = {"transformer": parts["transformer"], "connectors": parts["text"].connectors,
               "vae": parts["vae"], "audio_vae": parts["audio_vae"], "vocoder": parts["vocoder"]}
    for sub, module in modules.items():
        module.save_config(configs / sub)
    real = ModelConfig(name="ltx23", checkpoint_dir=str(configs), transformer_file=str(combined),
                       video_vae_file=str(combined), audio_vae_file=str(combined))
    dtype = torch.float32
    assert same_weights(ltx23.load_component(real, "transformer", dtype), parts["transformer"])
    assert same_weights(ltx23.load_component(real, "connectors", dtype), parts["text"].connectors)
    assert same_weights(ltx23.load_component(real, "video_vae", dtype), parts["vae"])
    assert same_weights(ltx23.load_component(real, "audio_vae", dtype), parts["audio_vae"])
    assert same_weights(loader.load_vocoder(real), parts["vocoder"])

    # A checkpoint that lacks a weight is refused, naming the key, instead of loading uninitialised weights.
    partial = tmp_path / "partial.safetensors"
    state = {k: v for k, v in parts["audio_vae"].state_dict().items() if k != "latents_std"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
    with pytest.raises(ModelPathError, match=r"model\.audio_vae_file: .*\(1 missing weights.*latents_std"):
        loader.load_audio_vae(replace(real, audio_vae_file=str(partial)))
    with pytest.raises(ModelPathError, match=r"model\.audio_vae_file: .* no vocoder weights"):
        loader.load_vocoder(replace(real, audio_vae_file=str(partial)))
    # A mis-shaped weight is refused naming the component and the weight.
    bad = tmp_path / "bad.safetensors"
    state = {k: v.contiguous() for k, v in parts["audio_vae"].state_dict().items()}
    state["latents_std"] = torch.ones(3)
    save_file(state, str(bad))
    with pytest.raises(ModelPathError, match=r"model\.audio_vae_file: .* audio_vae .*1 mis-shaped.*latents_std"):
        loader.load_audio_vae(replace(real, audio_vae_file=str(bad)))
