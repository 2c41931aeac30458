"""Parity fixtures: tiny ltxlab weights copied into Lightricks' own ltx-core models (``ltx-core==1.0.0``).

Every weight goes through ltxlab's single-file converter (Lightricks key → diffusers key), so a fixture that
builds proves the converter maps each ltx-core key of that component with the right shape. ltx-core and
ltx-pipelines are test-only dependencies installed by `make install` (`--no-deps`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier, get_pixel_coords
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.rope import LTXRopeType
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

from ltxlab.models import ltx23, tiny
from ltxlab.models.forward import set_cross_modulation
from tests.parity.torchaudio_shim import install_torchaudio_shim

install_torchaudio_shim()  # ltx-core's audio modules import torchaudio for the mel front-end only (never called here)


def core_state_from(core: torch.nn.Module, ours: dict[str, torch.Tensor], convert,
                    used=lambda key: True) -> dict[str, torch.Tensor]:
    """ltx-core's state dict filled from ltxlab's weights through ltxlab's converter; asserts full coverage.
    Keys ``used`` rejects (statistics diffusers does not keep) stay ltx-core's own."""
    mapped, missing, misshaped = {}, [], []
    for key, ref in core.state_dict().items():
        if not used(key):
            mapped[key] = ref
            continue
        name = convert(key)
        if name not in ours:
            missing.append(f"{key} -> {name}")
        elif ours[name].shape != ref.shape:
            misshaped.append(f"{key}: {tuple(ours[name].shape)} vs {tuple(ref.shape)}")
        else:
            mapped[key] = ours[name]
    assert not missing and not misshaped, (missing[:5], misshaped[:5])
    return mapped


def core_transformer_kwargs(config: dict) -> dict:
    """ltx-core ``LTXModel`` arguments for a diffusers LTX-2.3 transformer config (what a 2.3 checkpoint's
    metadata configures: gated attention, cross-attention AdaLN, split float64 RoPE, A↔V gate multiplier)."""
    return dict(
        num_attention_heads=config["num_attention_heads"], attention_head_dim=config["attention_head_dim"],
        in_channels=config["in_channels"], out_channels=config["out_channels"], num_layers=config["num_layers"],
        cross_attention_dim=config["cross_attention_dim"], norm_eps=config["norm_eps"],
        audio_num_attention_heads=config["audio_num_attention_heads"],
        audio_attention_head_dim=config["audio_attention_head_dim"],
        audio_in_channels=config["audio_in_channels"], audio_out_channels=config["audio_out_channels"],
        audio_cross_attention_dim=config["audio_cross_attention_dim"],
        positional_embedding_theta=config["rope_theta"], positional_embedding_max_pos=[20, 2048, 2048],
        audio_positional_embedding_max_pos=[20], timestep_scale_multiplier=config["timestep_scale_multiplier"],
        av_ca_timestep_scale_multiplier=config["cross_attn_timestep_scale_multiplier"],
        rope_type=LTXRopeType.SPLIT, double_precision_rope=True, apply_gated_attention=True,
        cross_attention_adaln=True,
    )


@pytest.fixture(scope="session")
def ours_transformer() -> torch.nn.Module:
    model = tiny.build_transformer(0).eval().requires_grad_(False)
    set_cross_modulation(model, "legacy")  # tests set the behaviour they compare explicitly
    return model


@pytest.fixture(scope="session")
def core_transformer(ours_transformer) -> LTXModel:
    core = LTXModel(**core_transformer_kwargs(tiny.transformer_config())).eval().requires_grad_(False)
    state = core_state_from(core, ours_transformer.state_dict(), lambda k: ltx23._convert_transformer(k, {}))
    core.load_state_dict(state, strict=True)
    return core


# ------------------------------------------------------------------------------------------ transformer inputs

VIDEO_SHAPE = (3, 2, 2)  # latent frames, height, width
AUDIO_TOKENS = 7
TEXT_TOKENS = 8


@dataclass
class Case:
    """One transformer call, in ltxlab's terms."""

    video: torch.Tensor  # [B, N, C]
    audio: torch.Tensor  # [B, L, D]
    text_video: torch.Tensor
    text_audio: torch.Tensor
    text_mask: torch.Tensor
    video_timesteps: torch.Tensor  # [B, N]
    audio_timesteps: torch.Tensor  # [B, L]
    sigma: torch.Tensor  # [B]
    audio_sigma: torch.Tensor
    fps: float = 24.0


def make_case(sigma: list[float], audio_sigma: list[float], first_frame_held: bool = False,
              audio_frozen: bool = False, fps: float = 24.0, seed: int = 0) -> Case:
    g = torch.Generator().manual_seed(seed)
    b = len(sigma)
    f, h, w = VIDEO_SHAPE
    config = tiny.transformer_config()
    s, a = torch.tensor(sigma), torch.tensor(audio_sigma)
    video_t = s[:, None].expand(b, f * h * w).clone()
    if first_frame_held:
        video_t[:, : h * w] = 0.0
    if audio_frozen:
        a = torch.zeros(b)
    audio_t = a[:, None].expand(b, AUDIO_TOKENS).clone()
    mask = torch.ones(b, TEXT_TOKENS)
    mask[:, :2] = 0.0  # some masked prompt tokens
    return Case(
        video=torch.randn(b, f * h * w, config["in_channels"], generator=g),
        audio=torch.randn(b, AUDIO_TOKENS, config["audio_in_channels"], generator=g),
        text_video=torch.randn(b, TEXT_TOKENS, config["cross_attention_dim"], generator=g),
        text_audio=torch.randn(b, TEXT_TOKENS, config["audio_cross_attention_dim"], generator=g),
        text_mask=mask, video_timesteps=video_t, audio_timesteps=audio_t, sigma=s, audio_sigma=a, fps=fps,
    )


def core_video_positions(batch: int, fps: float) -> torch.Tensor:
    """ltx-core's video positions (``VideoLatentTools``: pixel bounds, causal first frame, time ÷ fps)."""
    f, h, w = VIDEO_SHAPE
    bounds = VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(
        output_shape=VideoLatentShape(batch=batch, channels=1, frames=f, height=h, width=w))
    positions = get_pixel_coords(bounds, SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    positions[:, 0, ...] = positions[:, 0, ...] / fps
    return positions


def core_audio_positions(batch: int, length: int) -> torch.Tensor:
    shape = AudioLatentShape(batch=batch, channels=1, frames=length, mel_bins=1)
    return AudioPatchifier(patch_size=1).get_patch_grid_bounds(output_shape=shape)


def core_modalities(case: Case) -> tuple[Modality, Modality]:
    b = case.video.shape[0]
    video = Modality(latent=case.video, sigma=case.sigma, timesteps=case.video_timesteps,
                     positions=core_video_positions(b, case.fps), context=case.text_video,
                     context_mask=case.text_mask.long())
    audio = Modality(latent=case.audio, sigma=case.audio_sigma, timesteps=case.audio_timesteps,
                     positions=core_audio_positions(b, case.audio.shape[1]), context=case.text_audio,
                     context_mask=case.text_mask.long())
    return video, audio


def perturbations(batch: int, stg_blocks: list[int] | None = None, isolate: bool = False) -> BatchedPerturbationConfig:
    """The ltx-core perturbations of ltxlab's STG (video + audio self-attention on ``stg_blocks``, as diffusers'
    perturbed attention does) and of a modality-isolated pass (both A↔V cross-attentions, every block)."""
    items = []
    if stg_blocks:
        items += [Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN, stg_blocks),
                  Perturbation(PerturbationType.SKIP_AUDIO_SELF_ATTN, stg_blocks)]
    if isolate:
        items += [Perturbation(PerturbationType.SKIP_A2V_CROSS_ATTN, None),
                  Perturbation(PerturbationType.SKIP_V2A_CROSS_ATTN, None)]
    return BatchedPerturbationConfig([PerturbationConfig(list(items)) for _ in range(batch)])
