"""The LTX-2.3 model family at toy size: the real diffusers/transformers classes with random weights.

Every flag that makes LTX-2.3 differ from LTX-2.0 is kept (gated attention, cross-attention modulation, split
RoPE, prompt AdaLN, perturbed attention for STG, per-modality text projections, BWE vocoder), only the widths
shrink. The size couplings the classes impose (see the facts file) are derived from a few numbers below, so
changing one keeps the family consistent.

Each builder seeds its own RNG stream inside `torch.random.fork_rng`, so a seed always gives the same weights,
in any order and any process, and the caller's global RNG is untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2VocoderWithBWE
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GemmaTokenizer,
    SiglipVisionConfig,
)

from ltxlab.models import ltx23

# The few numbers every tiny size follows from.
GEMMA_HIDDEN = 32  # text encoder width (real: 3840)
GEMMA_LAYERS = 2  # -> hidden_states has GEMMA_LAYERS + 1 entries (real: 48 + 1 = 49)
VOCAB_SIZE = 512  # upper bound of the trained BPE vocabulary
HEADS = 2  # video and audio must use the same head count (split RoPE of the a2v/v2a attention)
VIDEO_HEAD_DIM = 16  # video width 32 = connector video width = transformer cross_attention_dim
AUDIO_HEAD_DIM = 8  # audio width 16 = connector audio width = transformer audio_cross_attention_dim
REGISTERS = 8  # connector learnable registers: the prompt length must be a multiple of this
VIDEO_LATENT_CHANNELS = 8
AUDIO_LATENT_CHANNELS = 4
MEL_BINS = 16  # audio VAE input mel bins; latent mel width is MEL_BINS / 4
AUDIO_TOKEN_WIDTH = AUDIO_LATENT_CHANNELS * MEL_BINS // 4  # packed audio token = audio VAE base_channels

# Components get distinct RNG streams from one seed.
_STREAMS = {
    "transformer": 0, "connectors": 1, "text_encoder": 2, "video_vae": 3, "audio_vae": 4, "vocoder": 5,
}

# Corpus for the offline tokenizer: caption-like sentences. Unseen text still encodes through byte fallback.
_CORPUS = (
    "a woman speaks to the camera in a quiet room with soft window light",
    "a man walks along a sandy beach at sunset while waves roll in",
    "close-up of a dog running through tall green grass in slow motion",
    "the camera pans slowly across a city skyline at night",
    "a red car drives along a winding coastal road",
    "two people laugh and talk at a wooden table in a busy cafe",
    "a child plays the piano in a bright living room",
    "aerial view of a forest with a river flowing through the valley",
    "a chef chops vegetables on a cutting board in a small kitchen",
    "rain falls on a window while thunder rumbles in the distance",
    "a cat sleeps on a sofa next to a lamp",
    "the singer holds a microphone and sings a slow song on stage",
    "a crowd cheers as fireworks explode over the harbor",
    "a bird lands on a branch and sings in the morning",
    "a robot dances in the rain under neon lights",
    "the camera zooms in on a face with a gentle smile",
    "a girl rides a bicycle down a quiet street in autumn",
    "snow covers the mountains and a cold wind blows",
    "an old man reads a newspaper on a park bench",
    "waves crash against the rocks and seagulls call overhead",
    "a guitarist plays an acoustic guitar by a campfire",
    "a train passes through a small station in the countryside",
    "a woman dances in a studio with colorful lights",
    "static shot of a busy street with cars and people",
    "a boy throws a ball to his dog in the backyard",
    "the sun rises over a calm lake covered in mist",
    "a person types on a laptop in a dark office",
    "a horse gallops across an open field",
    "a close-up of hands pouring coffee into a white cup",
    "people walk through a market full of fruit and flowers",
    "a speaker addresses an audience in a large hall",
    "water drips from a leaf after the storm",
    "a drummer plays a fast rhythm, the sound is loud and clear",
    "cinematic shot, shallow depth of field, warm colors, 4k",
    "the video shows a timelapse of clouds moving over hills",
    "a baby laughs while playing with colorful toys",
    "a plane takes off from the runway with a roaring engine",
    "a narrator describes the scene in a calm voice",
    "handheld camera follows a runner on a mountain trail",
    "a fox walks through the snow in the forest at dawn",
    # The pretrained tiny world's vocabulary (ltxlab.pretrain.world), so its captions are a few whole-word tokens
    # each and fit the 32-token text window with room to spare.
    "a red circle moving left with a low tone over a green background",
    "a blue square moving right with a mid-pitched tone over a yellow background",
    "an orange triangle moving up with a high tone over a purple background",
    "a white circle moving down with a low tone over a cyan background",
    "a cyan square pulsing to a high tone over a red background",
    "a purple triangle pulsing to a mid-pitched tone over a white background",
    "a green circle moving up left over a blue background",
    "a yellow square moving down right over an orange background",
)
_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>", "<end_of_image>")
_IMAGE_TOKEN = "<image_soft_token>"


@contextmanager
def _seeded(seed: int, component: str) -> Iterator[None]:
    """Run module construction on a private CPU RNG stream; restore the global RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * len(_STREAMS) + _STREAMS[component])
        yield


# Each tiny config is the real LTX-2.3 config (ltxlab.models.ltx23) with only its sizes overridden, so the tiny
# model carries exactly the 2.3 architecture flags (gated attention, cross-attention modulation, split RoPE,
# perturbed attention for STG, per-modality connector projections, ...).


def transformer_config() -> dict[str, Any]:
    """The LTX-2.3 transformer at toy width (128,384 parameters)."""
    return ltx23.transformer_config() | {
        "in_channels": VIDEO_LATENT_CHANNELS, "out_channels": VIDEO_LATENT_CHANNELS,
        "num_attention_heads": HEADS, "attention_head_dim": VIDEO_HEAD_DIM,
        "cross_attention_dim": HEADS * VIDEO_HEAD_DIM,
        "audio_in_channels": AUDIO_TOKEN_WIDTH, "audio_out_channels": AUDIO_TOKEN_WIDTH,
        "audio_num_attention_heads": HEADS, "audio_attention_head_dim": AUDIO_HEAD_DIM,
        "audio_cross_attention_dim": HEADS * AUDIO_HEAD_DIM,
        "num_layers": 2, "caption_channels": GEMMA_HIDDEN,
    }


def connectors_config() -> dict[str, Any]:
    """The LTX-2.3 text connectors at toy width."""
    return ltx23.connectors_config() | {
        "caption_channels": GEMMA_HIDDEN, "text_proj_in_factor": GEMMA_LAYERS + 1,
        "video_connector_num_attention_heads": HEADS, "video_connector_attention_head_dim": VIDEO_HEAD_DIM,
        "video_connector_num_layers": 1, "video_connector_num_learnable_registers": REGISTERS,
        "audio_connector_num_attention_heads": HEADS, "audio_connector_attention_head_dim": AUDIO_HEAD_DIM,
        "audio_connector_num_layers": 1, "audio_connector_num_learnable_registers": REGISTERS,
        "video_hidden_dim": HEADS * VIDEO_HEAD_DIM, "audio_hidden_dim": HEADS * AUDIO_HEAD_DIM,
    }


def video_vae_config() -> dict[str, Any]:
    """The LTX-2.3 video VAE block layout (32x spatial, 8x temporal) with narrow blocks."""
    return ltx23.video_vae_config() | {
        "latent_channels": VIDEO_LATENT_CHANNELS,
        "block_out_channels": (8, 16, 32, 32), "decoder_block_out_channels": (8, 16, 16, 32),
        "layers_per_block": (1, 1, 1, 1, 1), "decoder_layers_per_block": (1, 1, 1, 1, 1),
    }


def audio_vae_config() -> dict[str, Any]:
    """Audio VAE: 16 kHz stereo mel in, 4x time and mel compression (hard-coded in the class)."""
    return ltx23.audio_vae_config() | {
        # base_channels must equal the packed token width: latents_mean/std are sized by it.
        "base_channels": AUDIO_TOKEN_WIDTH, "num_res_blocks": 1, "latent_channels": AUDIO_LATENT_CHANNELS,
        "mel_bins": MEL_BINS,
    }


def vocoder_config() -> dict[str, Any]:
    """BigVGAN-style vocoder (x160: mel hop) + bandwidth extension to 48 kHz (x240 = BWE hop 80 x 3).

    Every transposed-conv kernel minus its stride is even, otherwise the stage-1 length is off the hop and the
    BWE residual does not line up with the resampled skip.
    """
    return ltx23.vocoder_config() | {
        "in_channels": 2 * MEL_BINS, "hidden_channels": 32,
        "upsample_kernel_sizes": [15, 4, 4, 4], "upsample_factors": [5, 4, 4, 2],
        "resnet_kernel_sizes": [3], "resnet_dilations": [[1]],
        "bwe_in_channels": 2 * MEL_BINS, "bwe_hidden_channels": 16,
        "bwe_upsample_kernel_sizes": [12, 12, 8], "bwe_upsample_factors": [10, 6, 4],
        "bwe_resnet_kernel_sizes": [3], "bwe_resnet_dilations": [[1]], "num_mel_channels": MEL_BINS,
    }


def text_encoder_config() -> Gemma3Config:
    """Gemma 3 (text + a 1-layer SigLIP tower, as in the real Gemma3ForConditionalGeneration) at toy width."""
    text = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=GEMMA_HIDDEN, intermediate_size=2 * GEMMA_HIDDEN,
        num_hidden_layers=GEMMA_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        sliding_window=64, max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
        patch_size=14,
    )
    ids = {t: i for i, t in enumerate((*_SPECIAL_TOKENS, _IMAGE_TOKEN))}
    return Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids[_IMAGE_TOKEN],
    )


_CLASSES: dict[str, type] = {
    "transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors,
    "video_vae": AutoencoderKLLTX2Video, "audio_vae": AutoencoderKLLTX2Audio, "vocoder": LTX2VocoderWithBWE,
}
CONFIGS: dict[str, Any] = {
    "transformer": transformer_config, "connectors": connectors_config, "video_vae": video_vae_config,
    "audio_vae": audio_vae_config, "vocoder": vocoder_config,
}


def build_from_config(component: str, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A diffusers component of the family from an explicit config (pretrained weights carry their own sizes)."""
    with _seeded(seed, component):
        return _CLASSES[component].from_config(config)


def build_transformer(seed: int) -> LTX2VideoTransformer3DModel:
    return build_from_config("transformer", transformer_config(), seed)


def build_connectors(seed: int) -> LTX2TextConnectors:
    return build_from_config("connectors", connectors_config(), seed)


def build_video_vae(seed: int) -> AutoencoderKLLTX2Video:
    return build_from_config("video_vae", video_vae_config(), seed)


def build_audio_vae(seed: int) -> AutoencoderKLLTX2Audio:
    return build_from_config("audio_vae", audio_vae_config(), seed)


def build_vocoder(seed: int) -> LTX2VocoderWithBWE:
    return build_from_config("vocoder", vocoder_config(), seed)


def build_text_encoder(seed: int) -> Gemma3ForConditionalGeneration:
    with _seeded(seed, "text_encoder"):
        return Gemma3ForConditionalGeneration(text_encoder_config())


def build_tokenizer() -> GemmaTokenizer:
    """A Gemma-style byte-fallback BPE tokenizer trained offline on `_CORPUS` (deterministic, no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    specials = [*_SPECIAL_TOKENS, _IMAGE_TOKEN, *(f"<0x{b:02X}>" for b in range(256))]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Same text handling as GemmaTokenizer, so the trained merges apply unchanged.
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = GemmaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True, add_eos_token=False)
    tokenizer.padding_side = "left"
    tokenizer.model_max_length = 4096
    return tokenizer
