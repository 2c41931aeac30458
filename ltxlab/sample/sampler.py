"""The one LTX-2.3 sampler (validation previews and `ltxlab.generate`): Euler on ltx-core's σ schedule with
per-modality multi-modal guidance (`ltxlab.sample.guidance`), step for step the reference denoising loop.

Per step: one conditional call, batched with the unconditional one when a guider wants CFG (batch 2), +1 STG call
when a guider wants STG, +1 modality-isolation call when a guider wants it. Every scale is taken literally.

Conditioning is tensor surgery, as in training (ltxlab.modes): clean tokens have timestep 0 and are never stepped.
- first frame: the first H'·W' video tokens are the start-image latent at every step;
- a2v: the audio stream is the supplied clean latents at every step, with audio timesteps **and audio σ 0** (as
  ltx-trainer, and current ltx-pipelines' ``modality_from_latent_state`` for a frozen modality; ltx-pipelines
  1.0.0 still passed the step σ there); its text context in the unconditional pass is the positive prompt;
- video only: one zero audio token and `isolate_modalities=True` on every pass (as `modes.inputs.absent_audio`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ltxlab.models.codecs import audio_latent_frames_for_duration, pack_video, unpack_video
from ltxlab.models.forward import call_transformer
from ltxlab.models.text import PromptEmbeddings
from ltxlab.sample.guidance import Guider, guiders_for, self_attention_perturbed
from ltxlab.sample.schedule import ltx2_sigmas
from ltxlab.sample.settings import SamplingSettings


@dataclass
class SampleRequest:
    """One clip to sample: the request type of previews and ``generate`` alike."""

    prompt: PromptEmbeddings  # one prompt (batch 1), precomputed
    negative: PromptEmbeddings  # the negative prompt (for CFG)
    settings: SamplingSettings  # size, frames, fps, steps, guidance, seed
    first_frame: Tensor | None = None  # [1, C, 1, H', W'] normalised start-image latent; None = text-to-video
    audio: Tensor | None = None  # [1, L, D] packed normalised a2v conditioning latents, kept clean throughout
    generate_audio: bool = True  # generate audio jointly; ignored (False) when `audio` is given


@dataclass
class _Plan:
    """What runs each step, decided once from the request and the model."""

    latent_shape: tuple[int, int, int]  # (F', H', W')
    audio_mode: str  # "generate" | "condition" | "absent"
    video_guider: Guider
    audio_guider: Guider
    stg_blocks: list[int]  # empty = no STG pass

    @property
    def cfg(self) -> bool:
        return self.video_guider.wants_uncond or self.audio_guider.wants_uncond

    @property
    def isolation(self) -> bool:
        return self.video_guider.wants_isolated or self.audio_guider.wants_isolated

    @property
    def calls_per_step(self) -> int:
        return 1 + bool(self.stg_blocks) + self.isolation


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    # The base weights' dtype: LoRA parameters may be kept in fp32 over a bf16 base.
    for name, param in model.named_parameters():
        if "lora_" not in name:
            return param.device, param.dtype
    param = next(model.parameters())
    return param.device, param.dtype


def _stg_blocks(transformer: nn.Module, requested: list[int], wanted: bool) -> list[int]:
    if not wanted:
        return []
    if not getattr(transformer.config, "perturbed_attn", False):
        warnings.warn("STG skipped: the transformer was built without perturbed_attn, so STG would change nothing",
                      stacklevel=4)
        return []
    layers = int(transformer.config.num_layers)
    clipped = sorted({min(max(int(b), 0), layers - 1) for b in requested})
    if any(not 0 <= int(b) < layers for b in requested):
        warnings.warn(f"STG blocks {list(requested)} are outside the model's {layers} layers; clipped to {clipped}",
                      stacklevel=4)
    return clipped


def _plan(transformer: nn.Module, request: SampleRequest) -> _Plan:
    cfg, s = transformer.config, request.settings
    t_ratio, s_ratio = int(cfg.vae_scale_factors[0]), int(cfg.vae_scale_factors[1])
    width, height = s.size()
    if s.number_of_frames < 1 or (s.number_of_frames - 1) % t_ratio:
        raise ValueError(f"number_of_frames must be {t_ratio}k+1, got {s.number_of_frames}")
    if height % s_ratio or width % s_ratio or min(height, width) <= 0:
        raise ValueError(f"height and width must be positive multiples of {s_ratio}, got {height}x{width}")
    if s.frame_rate <= 0:
        raise ValueError(f"frame_rate must be positive, got {s.frame_rate}")
    shape = ((s.number_of_frames - 1) // t_ratio + 1, height // s_ratio, width // s_ratio)
    if request.first_frame is not None:
        expected = (1, cfg.in_channels, 1, shape[1], shape[2])
        if tuple(request.first_frame.shape) != expected:
            raise ValueError(f"first_frame must have shape {expected}, got {tuple(request.first_frame.shape)}")
    if request.audio is not None:
        if request.audio.ndim != 3 or request.audio.shape[0] != 1 or request.audio.shape[2] != cfg.audio_in_channels:
            raise ValueError(f"audio must be [1, L, {cfg.audio_in_channels}], got {tuple(request.audio.shape)}")
        audio_mode = "condition"
    else:
        audio_mode = "generate" if request.generate_audio else "absent"
    video_guider, audio_guider = guiders_for(s, audio_mode)
    wants_stg = video_guider.wants_perturbed or audio_guider.wants_perturbed
    return _Plan(shape, audio_mode, video_guider, audio_guider, _stg_blocks(transformer, s.stg_blocks, wants_stg))


def _text(request: SampleRequest, plan: _Plan, device: torch.device, dtype: torch.dtype,
          with_uncond: bool) -> PromptEmbeddings:
    """Batch-1 conditioning, or [cond, uncond] (one batch-2 call) for CFG. In the unconditional half a generated
    stream reads the negative prompt; frozen or absent audio keeps the positive one (the reference's neutral
    audio guider has no negative context)."""
    prompt, negative = request.prompt, request.negative
    if not with_uncond:
        return prompt.to(device, dtype)
    if prompt.video.shape[1:] != negative.video.shape[1:] or prompt.audio.shape[1:] != negative.audio.shape[1:]:
        raise ValueError("prompt and negative prompt embeddings differ in length/width: encode both with the "
                         "same text stack and max_sequence_length")
    uncond_audio = negative.audio if plan.audio_mode == "generate" else prompt.audio
    return PromptEmbeddings(video=torch.cat([prompt.video, negative.video]).to(device, dtype),
                            audio=torch.cat([prompt.audio, uncond_audio]).to(device, dtype),
                            mask=torch.cat([prompt.mask, negative.mask]).to(device))


def _x0(transformer: nn.Module, text: PromptEmbeddings, video: Tensor, audio: Tensor, video_t: Tensor,
        audio_t: Tensor, sigma: Tensor, audio_sigma: Tensor, plan: _Plan, fps: float, dtype: torch.dtype,
        isolate: bool, stg_blocks: list[int] | None) -> tuple[Tensor, Tensor]:
    """One transformer call (inputs broadcast to the text batch), as x₀ with per-token σ: clean tokens (σ = 0)
    come back exactly as they went in."""
    batch = text.video.shape[0]

    def rep(x: Tensor) -> Tensor:
        return x.expand(batch, *x.shape[1:])

    video_pred, audio_pred = call_transformer(
        transformer, video=rep(video).to(dtype), audio=rep(audio).to(dtype), text_video=text.video,
        text_audio=text.audio, text_mask=text.mask, video_timesteps=rep(video_t), audio_timesteps=rep(audio_t),
        sigma=rep(sigma), audio_sigma=rep(audio_sigma), video_shape=plan.latent_shape, fps=fps,
        isolate_modalities=isolate, stg_blocks=stg_blocks)
    return video - video_t[..., None] * video_pred.float(), audio - audio_t[..., None] * audio_pred.float()


def _initial_state(request: SampleRequest, plan: _Plan, channels: int, audio_width: int,
                   generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(video tokens, clean-token mask [N] bool, audio tokens), all float32 on ``device``.

    Noise is drawn on a CPU generator (same numbers on every device) in token layout, video first and for every
    token, then audio — ltx-core's ``GaussianNoiser`` order, so a seed gives the reference pipeline's noise on
    CPU, and the same video noise with or without a first frame or audio.
    """
    frames, height, width = plan.latent_shape
    video = torch.randn((1, frames * height * width, channels), generator=generator).to(device)  # σ₀ = 1
    clean = torch.zeros(video.shape[1], dtype=torch.bool, device=device)
    if request.first_frame is not None:
        first = pack_video(request.first_frame.float()).to(device)
        video[:, : first.shape[1]] = first
        clean[: first.shape[1]] = True
    if plan.audio_mode == "condition":
        audio = request.audio.float().to(device)
    elif plan.audio_mode == "generate":
        s = request.settings  # ltx-core's length rule (AudioLatentShape.from_duration)
        length = audio_latent_frames_for_duration(s.number_of_frames / s.frame_rate)
        audio = torch.randn((1, length, audio_width), generator=generator, dtype=torch.float32).to(device)
    else:
        audio = torch.zeros((1, 1, audio_width), device=device)
    return video, clean, audio


def _autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda" and dtype == torch.bfloat16)


def _euler(x: Tensor, x0: Tensor, sigmas: Tensor, i: int) -> Tensor:
    """ltx-core's Euler step, in float32: velocity (x − x₀)/σᵢ, then x + velocity·(σᵢ₊₁ − σᵢ)."""
    return x + (x - x0) / sigmas[i].item() * (sigmas[i + 1] - sigmas[i])


def sample(transformer: nn.Module, request: SampleRequest, progress: bool = False) -> tuple[Tensor, Tensor | None]:
    """Denoise one clip. Returns (video latents [1, C, F', H', W'], audio latents [1, L, D] or None), float32.

    a2v returns the supplied audio latents unchanged; video-only returns None for audio. Deterministic for a
    seed (a local generator; the global RNG is untouched). The transformer's training flag is restored.
    """
    plan = _plan(transformer, request)
    s = request.settings
    device, dtype = _model_device_dtype(transformer)
    cfg = transformer.config
    generator = torch.Generator(device="cpu").manual_seed(int(s.seed))
    video, clean, audio = _initial_state(request, plan, cfg.in_channels, cfg.audio_in_channels, generator, device)
    sigmas = ltx2_sigmas(s.inference_steps)  # CPU float32, steps + 1 values ending at 0
    text = _text(request, plan, device, dtype, with_uncond=plan.cfg)
    cond_text = _text(request, plan, device, dtype, with_uncond=False) if plan.cfg else text
    generating_audio = plan.audio_mode == "generate"
    isolate_all = plan.audio_mode == "absent"
    stepped = ~clean
    fps = float(s.frame_rate)
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.no_grad(), _autocast(device, dtype):
            for i in tqdm(range(s.inference_steps), desc="sampling", disable=not progress, leave=False):
                sigma = sigmas[i].to(device)
                audio_sigma = sigma if generating_audio else torch.zeros((), device=device)
                args = (video, audio, (sigma * stepped.float())[None], audio_sigma.expand(1, audio.shape[1]),
                        sigma.reshape(1), audio_sigma.reshape(1), plan, fps, dtype)
                both = _x0(transformer, text, *args, isolate_all, None)
                cond = tuple(x[:1] for x in both)
                uncond = tuple(x[1:] for x in both) if plan.cfg else (None, None)
                perturbed = isolated = (None, None)
                if plan.stg_blocks:
                    with self_attention_perturbed(transformer, plan.stg_blocks, plan.video_guider.wants_perturbed,
                                                  plan.audio_guider.wants_perturbed):
                        perturbed = _x0(transformer, cond_text, *args, isolate_all, plan.stg_blocks)
                if plan.isolation:
                    isolated = _x0(transformer, cond_text, *args, True, None)

                x0_video = plan.video_guider.combine(cond[0], uncond[0], perturbed[0], isolated[0])
                video = video.clone()  # only noisy tokens are stepped: clean ones stay bit-exact
                video[:, stepped] = _euler(video[:, stepped], x0_video[:, stepped], sigmas, i)
                if generating_audio:
                    x0_audio = plan.audio_guider.combine(cond[1], uncond[1], perturbed[1], isolated[1])
                    audio = _euler(audio, x0_audio, sigmas, i)
    finally:
        transformer.train(was_training)
    frames, height, width = plan.latent_shape
    video_latents = unpack_video(video, frames, height, width)
    if plan.audio_mode == "condition":
        return video_latents, request.audio
    return video_latents, audio if generating_audio else None


def calls_per_step(transformer: nn.Module, request: SampleRequest) -> int:
    """How many transformer calls one step of ``request`` makes (for logs and timing estimates)."""
    return _plan(transformer, request).calls_per_step
