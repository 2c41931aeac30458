"""ltxlab.models: tiny LTX-2.3 family, loader interface, prompt encoding, codecs, transformer forward."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2VocoderWithBWE
from omegaconf import OmegaConf
from transformers import Gemma3ForConditionalGeneration, GemmaTokenizer

from ltxlab.errors import ConfigError
from ltxlab.models import codecs, loader, ltx23, tiny
from ltxlab.models.spec import ModelConfig
from ltxlab.models.text import encode_prompts, text_encoder_hidden_states
from tests.models.conftest import same_weights

TINY = ModelConfig()


# ------------------------------------------------------------------------------------------ tiny family


def test_tiny_components_are_real_classes_with_ltx23_flags(parts: dict) -> None:
    tr = parts["transformer"]
    assert isinstance(tr, LTX2VideoTransformer3DModel)
    c = tr.config
    assert c.perturbed_attn and c.gated_attn and c.cross_attn_mod
    assert c.audio_gated_attn and c.audio_cross_attn_mod
    assert c.rope_type == "split" and c.use_prompt_embeddings is False
    assert sum(p.numel() for p in tr.parameters()) == 128_384
    # Same family: every flag/string of the real config has the same value at tiny size.
    real = ltx23.transformer_config()
    for key, value in real.items():
        if isinstance(value, bool | str):
            assert c[key] == value, key
    assert set(tiny.transformer_config()) == set(real)
    assert set(tiny.connectors_config()) == set(ltx23.connectors_config())
    assert set(tiny.video_vae_config()) == set(ltx23.video_vae_config())
    assert set(tiny.vocoder_config()) == set(ltx23.vocoder_config())

    stack = parts["text"]
    assert isinstance(stack.connectors, LTX2TextConnectors)
    assert stack.connectors.config.per_modality_projections
    assert isinstance(stack.text_encoder, Gemma3ForConditionalGeneration)
    assert isinstance(stack.tokenizer, GemmaTokenizer)
    # Size couplings the classes impose.
    assert c.cross_attention_dim == stack.connectors.config.video_hidden_dim
    assert c.audio_cross_attention_dim == stack.connectors.config.audio_hidden_dim
    assert c.audio_num_attention_heads * c.audio_attention_head_dim == c.audio_cross_attention_dim
    text_layers = stack.text_encoder.config.text_config.num_hidden_layers + 1
    assert stack.connectors.config.text_proj_in_factor == text_layers

    vae, avae = parts["vae"], parts["audio_vae"]
    assert isinstance(vae, AutoencoderKLLTX2Video) and isinstance(avae, AutoencoderKLLTX2Audio)
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    assert vae.config.latent_channels == c.in_channels
    assert avae.config.base_channels == c.audio_in_channels == avae.latents_mean.numel()
    voc = parts["vocoder"]
    assert isinstance(voc, LTX2VocoderWithBWE)
    assert math.prod(voc.config.upsample_factors) == 160 and voc.config.output_sampling_rate == 48000
    assert isinstance(loader.load_scheduler(TINY), FlowMatchEulerDiscreteScheduler)
    # Loaded frozen: LoRA adds the only trainable weights.
    assert not any(p.requires_grad for p in tr.parameters())


def test_same_seed_same_weights_and_global_rng_untouched() -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = [fn(TINY) for fn in (loader.load_transformer, loader.load_video_vae, loader.load_audio_vae,
                                 loader.load_vocoder)]
    stack1 = loader.load_text_stack(TINY)
    assert torch.equal(torch.get_rng_state(), state)
    second = [fn(TINY) for fn in (loader.load_transformer, loader.load_video_vae, loader.load_audio_vae,
                                  loader.load_vocoder)]
    stack2 = loader.load_text_stack(TINY)
    for a, b in zip(first, second, strict=True):
        assert same_weights(a, b)
    assert same_weights(stack1.text_encoder, stack2.text_encoder)
    assert same_weights(stack1.connectors, stack2.connectors)
    assert stack1.tokenizer.get_vocab() == stack2.tokenizer.get_vocab()
    other = loader.load_transformer(replace(TINY, seed=1))
    assert not same_weights(first[0], other)
    assert torch.equal(torch.get_rng_state(), state)


def test_tokenizer_round_trips_unseen_text_through_byte_fallback() -> None:
    tok = tiny.build_tokenizer()
    assert len(tok) <= tiny.VOCAB_SIZE
    text = "a zebra 🦓 dances: Ωmega-42!"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(tok("a woman speaks to the camera").input_ids) < len("a woman speaks to the camera")  # merges


def test_tiny_bfloat16_and_bad_config_values() -> None:
    tr = loader.load_transformer(replace(TINY, dtype="bfloat16", gradient_checkpointing=True))
    assert {p.dtype for p in tr.parameters()} == {torch.bfloat16}
    assert tr.is_gradient_checkpointing
    with pytest.raises(ConfigError, match=r"model\.dtype"):
        loader.load_video_vae(replace(TINY, dtype="float16"))
    with pytest.raises(ConfigError, match=r"model\.name"):
        loader.load_transformer(replace(TINY, name="ltx2"))
    with pytest.raises(ConfigError, match=r"model\.max_sequence_length"):
        loader.load_text_stack(replace(TINY, max_sequence_length=20))
    structured = OmegaConf.structured(ModelConfig)
    merged = OmegaConf.merge(structured, {"name": "ltx23", "checkpoint_dir": "/x", "dtype": "bfloat16"})
    assert merged.checkpoint_dir == "/x" and merged.transformer_file is None


# --------------------------------------------------------------------------------------------- prompts


def test_encode_prompts_shapes_mask_and_left_padding(parts: dict) -> None:
    stack = parts["text"]
    prompts = ["a dog runs", "  a zebra 🦓 sings loudly in the rain at night  "]
    emb = encode_prompts(stack, prompts)
    s = TINY.max_sequence_length
    assert emb.video.shape == (2, s, 32) and emb.audio.shape == (2, s, 16)
    assert emb.mask.shape == (2, s) and bool((emb.mask == 1).all())  # registers fill the padding
    assert torch.isfinite(emb.video).all() and torch.isfinite(emb.audio).all()

    hidden, mask = text_encoder_hidden_states(stack, prompts)
    assert hidden.shape == (2, s, 32 * 3)
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # left padded
    assert mask[0].sum() < mask[1].sum()
    # Running the trunk only (no LM head) gives the pipeline's hidden states.
    tokens = stack.tokenizer([p.strip() for p in prompts], padding="max_length", padding_side="left",
                             max_length=s, truncation=True, return_tensors="pt")
    with torch.no_grad():
        full = stack.text_encoder(**tokens, output_hidden_states=True).hidden_states
    assert torch.allclose(hidden, torch.stack(full, dim=-1).flatten(2, 3), atol=1e-6)
    # Batch independence: a prompt encodes the same alone or in a batch.
    alone = encode_prompts(stack, prompts[:1])
    assert torch.allclose(alone.video[0], emb.video[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------- video


def test_encode_video_is_causal_normalised_and_decodes(parts: dict) -> None:
    vae = parts["vae"]
    gen = torch.Generator().manual_seed(0)
    clip = torch.rand(1, 3, 9, 64, 96, generator=gen) * 2 - 1
    latents = codecs.encode_video(vae, clip)
    assert latents.shape == (1, 8, 2, 2, 3) and latents.dtype == torch.float32
    first = codecs.encode_video(vae, clip[:, :, :1])
    assert first.shape == (1, 8, 1, 2, 3)
    assert torch.allclose(latents[:, :, :1], first, atol=1e-5)
    with pytest.raises(ValueError, match="8k\\+1"):
        codecs.encode_video(vae, clip[:, :, :8])

    # Normalisation uses the VAE's per-channel statistics, and decode inverts it.
    stats = vae.latents_mean.clone(), vae.latents_std.clone()
    try:
        vae.latents_mean.copy_(torch.linspace(-1, 1, 8))
        vae.latents_std.copy_(torch.linspace(0.5, 2, 8))
        raw = vae.encode(clip).latent_dist.mode()
        norm = codecs.encode_video(vae, clip)
        expected = (raw - vae.latents_mean.view(1, -1, 1, 1, 1)) / vae.latents_std.view(1, -1, 1, 1, 1)
        assert torch.allclose(norm, expected, atol=1e-5)
        pixels = codecs.decode_video(vae, norm)
        assert pixels.shape == clip.shape and pixels.abs().max() <= 1
        assert torch.allclose(pixels, vae.decode(raw).sample.clamp(-1, 1), atol=1e-5)
    finally:
        vae.latents_mean.copy_(stats[0])
        vae.latents_std.copy_(stats[1])


def test_pack_video_order_and_inverse() -> None:
    latents = torch.randn(2, 8, 3, 2, 4)
    tokens = codecs.pack_video(latents)
    assert tokens.shape == (2, 3 * 2 * 4, 8)
    f, h, w = 1, 1, 2
    assert torch.equal(tokens[:, f * 8 + h * 4 + w], latents[:, :, f, h, w])  # (f, h, w) order
    assert torch.equal(codecs.unpack_video(tokens, 3, 2, 4), latents)


# ----------------------------------------------------------------------------------------------- audio


def _reference_filterbank(n_freqs: int, n_mels: int, sr: int = 16000) -> np.ndarray:
    """librosa-style Slaney filterbank in float64, one explicit triangle per filter."""
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: float) -> float:
        return f * 3 / 200 if f < 1000 else 15 + np.log(f / 1000) / logstep

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= 15, 1000 * np.exp(logstep * (m - 15)), m * 200 / 3)

    freqs = np.linspace(0, sr / 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), n_mels + 2))
    weights = np.zeros((n_freqs, n_mels))
    for i in range(n_mels):
        lo, centre, hi = edges[i : i + 3]
        rising, falling = (freqs - lo) / (centre - lo), (hi - freqs) / (hi - centre)
        weights[:, i] = np.maximum(0, np.minimum(rising, falling)) * 2 / (hi - lo)
    return weights


def _reference_log_mel(x: np.ndarray, n_mels: int) -> np.ndarray:
    """Centred reflect-padded STFT (periodic Hann 1024, hop 160) magnitude -> Slaney mel -> log, float64."""
    padded = np.pad(x, 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    frames = np.stack([padded[i * 160 : i * 160 + 1024] * window for i in range(1 + len(x) // 160)])
    mel = np.abs(np.fft.rfft(frames, axis=1)) @ _reference_filterbank(513, n_mels)
    return np.log(np.maximum(mel, 1e-5))


def test_log_mel_matches_a_float64_reference() -> None:
    fb = codecs.mel_filterbank(513, 64).double().numpy()
    assert np.allclose(fb, _reference_filterbank(513, 64), rtol=1e-4, atol=1e-7)

    gen = torch.Generator().manual_seed(0)
    t = torch.arange(6000) / 16000
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), 0.3 * torch.sin(2 * math.pi * 2500 * t)])
    wave = (wave + 0.05 * torch.randn(2, 6000, generator=gen)).unsqueeze(0)  # [1, 2, 6000]
    mel = codecs.log_mel(wave, 16)
    assert mel.shape == (1, 2, 38, 16)  # [B, channels, frames, mels] as the audio VAE expects
    for ch in range(2):
        ref = _reference_log_mel(wave[0, ch].double().numpy(), 16)
        assert np.allclose(mel[0, ch].numpy(), ref, atol=2e-4)
    # The 2.5 kHz tone dominates a higher mel band than the 440 Hz one.
    loudest = mel[0].mean(dim=1).argmax(dim=-1)
    assert loudest[1] > loudest[0]


def test_encode_decode_audio_shapes_and_latent_length(parts: dict) -> None:
    avae, voc = parts["audio_vae"], parts["vocoder"]
    gen = torch.Generator().manual_seed(0)
    for samples in (600, 5999, 6000, 6400, 8160, 16000):
        tokens = codecs.encode_audio(avae, 0.1 * torch.randn(2, 2, samples, generator=gen))
        assert tokens.shape == (2, codecs.audio_latent_length(samples), 16), samples
    assert codecs.audio_latent_length(6000) == 10  # 38 mel frames -> ceil(38 / 4)
    assert codecs.audio_latent_length(16000) == 26  # ~25 latents per second

    wave = 0.1 * torch.randn(1, 2, 6000, generator=gen)
    stats = avae.latents_mean.clone(), avae.latents_std.clone()
    try:
        avae.latents_mean.copy_(torch.linspace(-1, 1, 16))
        avae.latents_std.copy_(torch.linspace(0.5, 2, 16))
        tokens = codecs.encode_audio(avae, wave)
        raw = avae.encode(codecs.log_mel(wave, 16)).latent_dist.mode()  # [1, 4, 10, 4]
        assert raw.shape == (1, 4, 10, 4)
        packed = raw.transpose(1, 2).flatten(2, 3)
        assert torch.allclose(tokens, (packed - avae.latents_mean) / avae.latents_std, atol=1e-5)
        assert torch.equal(codecs.unpack_audio(codecs.pack_audio(raw), 4), raw)
        audio, rate = codecs.decode_audio(avae, voc, tokens)
        assert rate == 48000
        assert audio.shape == (1, 2, (4 * 10 - 3) * 160 * 3)  # 4L-3 mel frames, x160 hop, x3 to 48 kHz
        mel = avae.decode(raw).sample
        assert torch.allclose(audio, voc(mel), atol=1e-5)
    finally:
        avae.latents_mean.copy_(stats[0])
        avae.latents_std.copy_(stats[1])
    with pytest.raises(ValueError, match="encode_audio expects"):
        codecs.encode_audio(avae, torch.zeros(1, 1, 6000))


# ----------------------------------------------------------------------------------------- transformer


def test_tiny_transformer_forward_with_per_token_timesteps(parts: dict) -> None:
    tr, stack = parts["transformer"], parts["text"]
    emb = encode_prompts(stack, ["a robot dances", "rain on a window"])
    gen = torch.Generator().manual_seed(0)
    b, f, h, w, length = 2, 2, 2, 3, 10
    video = torch.randn(b, f * h * w, 8, generator=gen)
    audio = torch.randn(b, length, 16, generator=gen)
    sigma, audio_sigma = torch.tensor([0.3, 0.8]), torch.tensor([0.5, 0.0])
    timestep = sigma[:, None].expand(b, f * h * w).clone()
    vc = codecs.video_coords(tr, b, f, h, w, fps=24.0)
    ac = codecs.audio_coords(tr, b, length)
    assert vc.shape == (b, 3, f * h * w, 2) and ac.shape == (b, 1, length, 2)

    def run(ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return tr(
                hidden_states=video, audio_hidden_states=audio,
                encoder_hidden_states=emb.video, audio_encoder_hidden_states=emb.audio,
                encoder_attention_mask=emb.mask, audio_encoder_attention_mask=emb.mask,
                timestep=ts * 1000, audio_timestep=audio_sigma[:, None].expand(b, length) * 1000,
                sigma=sigma * 1000, audio_sigma=audio_sigma * 1000,
                video_coords=vc, audio_coords=ac, use_cross_timestep=True, return_dict=False,
            )

    v_out, a_out = run(timestep)
    assert v_out.shape == video.shape and a_out.shape == audio.shape
    assert torch.isfinite(v_out).all() and torch.isfinite(a_out).all()
    conditioned = timestep.clone()
    conditioned[:, : h * w] = 0  # first latent frame held clean (i2v)
    v_cond, _ = run(conditioned)
    assert not torch.allclose(v_cond, v_out)
