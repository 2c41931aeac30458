"""The one LTX-2.3 sampler (validation previews and `ltxlab.generate`): flow-matching Euler with multi-modal guidance.

Per step, on the x₀ ("denoised") predictions of each generated stream, like ltx-core's MultiModalGuider:

    g = cond + (cfg − 1)(cond − uncond) + stg·(cond − perturbed) + (mod − 1)(cond − isolated)
    g ← g · (r·std(cond)/std(g) + 1 − r)                                     (guidance rescale r)

Forward passes per step (each a batch-1 call except the first):
  1 cond (+ uncond in the same call, batch 2, when CFG is active: a scale != 1 on a generated stream),
  +1 STG (perturbed self-attention in `stg_blocks`) when stg_scale != 0,
  +1 modality isolation (no a2v/v2a attention) when audio is generated and modality_scale != 1.
Every scale is taken literally: 0 means 0 (no `x or default`).

Conditioning is tensor surgery, as in training (ltxlab.modes): clean tokens have timestep 0 and are never stepped.
- first frame: the first H'·W' video tokens are the start-image latent at every step;
- a2v: the audio stream is the supplied clean latents at every step (audio timestep and audio σ 0);
- video only: one zero audio token and `isolate_modalities=True` on every pass (as `modes.inputs.absent_audio`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ltxlab.models.codecs import SAMPLE_RATE, audio_latent_length, pack_video, unpack_video
from ltxlab.models.forward import call_transformer
from ltxlab.models.text import PromptEmbeddings


@dataclass
class SampleRequest:
    prompt: PromptEmbeddings  # one prompt (batch 1), precomputed
    negative: PromptEmbeddings  # negative prompt (for CFG)
    num_frames: int  # pixels; 8k+1
    height: int  # pixels; multiple of 32
    width: int
    fps: float
    first_frame: Tensor | None  # [1, C, 1, H', W'] normalised start-image latent; None = text-to-video
    audio: Tensor | None  # [1, L, D] packed normalised audio latents: a2v conditioning, kept clean throughout
    generate_audio: bool  # generate audio jointly (i2v with audio); False: video only (or a2v)
    steps: int = 30
    guidance_scale: float = 3.0
    audio_guidance_scale: float = 7.0
    stg_scale: float = 1.0
    stg_blocks: list[int] = field(default_factory=lambda: [28])
    guidance_rescale: float = 0.7
    modality_scale: float = 3.0
    seed: int = 0


@dataclass
class _Plan:
    """What runs each step, decided once from the request and the model."""

    latent_shape: tuple[int, int, int]  # (F', H', W')
    audio_mode: str  # "generate" | "condition" | "absent"
    cfg: bool
    stg_blocks: list[int]  # empty = no STG pass
    modality: bool

    @property
    def calls_per_step(self) -> int:
        return 1 + bool(self.stg_blocks) + self.modality


def calculate_mu(num_tokens: int, scheduler_config: dict) -> float:
    """Dynamic-shift μ: linear in the video token count between the scheduler's (base, max) points, as the
    LTX-2 pipelines compute it (0.95 at 1024 tokens → 2.05 at 4096 for LTX-2.3)."""
    base_len = scheduler_config.get("base_image_seq_len", 1024)
    max_len = scheduler_config.get("max_image_seq_len", 4096)
    base_shift = scheduler_config.get("base_shift", 0.95)
    max_shift = scheduler_config.get("max_shift", 2.05)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return base_shift + slope * (num_tokens - base_len)


def sigma_schedule(scheduler, steps: int, num_tokens: int, device: torch.device):
    """A fresh copy of ``scheduler`` set to ``steps`` shifted σ (the caller's scheduler is left untouched)."""
    if steps < 2:
        # The non-distilled schedule (shift_terminal) gives NaN σ for a single step (facts §5.12).
        raise ValueError(f"steps must be at least 2 with the LTX-2.3 scheduler, got {steps}")
    sched = copy.deepcopy(scheduler)
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    kwargs = {"mu": calculate_mu(num_tokens, dict(sched.config))} if sched.config.get("use_dynamic_shifting") else {}
    sched.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    if not torch.isfinite(sched.sigmas).all():
        raise ValueError(f"the scheduler produced non-finite sigmas for {steps} steps: {sched.sigmas.tolist()}")
    return sched


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    # The base weights' dtype: LoRA parameters may be kept in fp32 over a bf16 base.
    for name, param in model.named_parameters():
        if "lora_" not in name:
            return param.device, param.dtype
    param = next(model.parameters())
    return param.device, param.dtype


def _stg_blocks(transformer: nn.Module, request: SampleRequest) -> list[int]:
    if request.stg_scale == 0:
        return []
    if not getattr(transformer.config, "perturbed_attn", False):
        warnings.warn("STG skipped: the transformer was built without perturbed_attn, so STG would change nothing",
                      stacklevel=4)
        return []
    layers = int(transformer.config.num_layers)
    clipped = sorted({min(max(int(b), 0), layers - 1) for b in request.stg_blocks})
    if any(not 0 <= int(b) < layers for b in request.stg_blocks):
        warnings.warn(f"STG blocks {list(request.stg_blocks)} are outside the model's {layers} layers; "
                      f"clipped to {clipped}", stacklevel=4)
    return clipped


def _plan(transformer: nn.Module, request: SampleRequest) -> _Plan:
    cfg = transformer.config
    t_ratio, s_ratio = int(cfg.vae_scale_factors[0]), int(cfg.vae_scale_factors[1])
    if request.num_frames < 1 or (request.num_frames - 1) % t_ratio:
        raise ValueError(f"num_frames must be {t_ratio}k+1, got {request.num_frames}")
    if request.height % s_ratio or request.width % s_ratio or min(request.height, request.width) <= 0:
        raise ValueError(f"height and width must be positive multiples of {s_ratio}, got "
                         f"{request.height}x{request.width}")
    if request.fps <= 0:
        raise ValueError(f"fps must be positive, got {request.fps}")
    shape = ((request.num_frames - 1) // t_ratio + 1, request.height // s_ratio, request.width // s_ratio)
    if request.first_frame is not None:
        expected = (1, cfg.in_channels, 1, shape[1], shape[2])
        if tuple(request.first_frame.shape) != expected:
            raise ValueError(f"first_frame must have shape {expected}, got {tuple(request.first_frame.shape)}")
    if request.audio is not None:
        if request.generate_audio:
            raise ValueError("audio conditioning (a2v) and generate_audio are exclusive: supplied audio stays clean")
        if request.audio.ndim != 3 or request.audio.shape[0] != 1 or request.audio.shape[2] != cfg.audio_in_channels:
            raise ValueError(f"audio must be [1, L, {cfg.audio_in_channels}], got {tuple(request.audio.shape)}")
        audio_mode = "condition"
    else:
        audio_mode = "generate" if request.generate_audio else "absent"
    generating_audio = audio_mode == "generate"
    cfg_on = request.guidance_scale != 1 or (generating_audio and request.audio_guidance_scale != 1)
    modality = generating_audio and request.modality_scale != 1
    return _Plan(shape, audio_mode, cfg_on, _stg_blocks(transformer, request), modality)


def _text(prompt: PromptEmbeddings, negative: PromptEmbeddings | None, device: torch.device,
          dtype: torch.dtype) -> PromptEmbeddings:
    """Batch-1 conditioning, or [cond, uncond] as one batch-2 call for CFG."""
    if negative is None:
        return prompt.to(device, dtype)
    if prompt.video.shape[1:] != negative.video.shape[1:] or prompt.audio.shape[1:] != negative.audio.shape[1:]:
        raise ValueError("prompt and negative prompt embeddings differ in length/width: encode both with the "
                         "same text stack and max_sequence_length")
    return PromptEmbeddings(video=torch.cat([prompt.video, negative.video]).to(device, dtype),
                            audio=torch.cat([prompt.audio, negative.audio]).to(device, dtype),
                            mask=torch.cat([prompt.mask, negative.mask]).to(device))


def _forward(transformer: nn.Module, text: PromptEmbeddings, video: Tensor, audio: Tensor, video_t: Tensor,
             audio_t: Tensor, sigma: Tensor, audio_sigma: Tensor, request: SampleRequest, plan: _Plan,
             dtype: torch.dtype, isolate: bool, stg_blocks: list[int] | None) -> tuple[Tensor, Tensor]:
    """One transformer call with the training forward rules (σ and timesteps ×1000, audio_timestep, sigma and
    audio_sigma always passed, use_cross_timestep=True); inputs are broadcast to the text batch."""
    batch = text.video.shape[0]

    def rep(x: Tensor) -> Tensor:
        return x.expand(batch, *x.shape[1:])

    video_pred, audio_pred = call_transformer(
        transformer, video=rep(video).to(dtype), audio=rep(audio).to(dtype), text_video=text.video,
        text_audio=text.audio, text_mask=text.mask, video_timesteps=rep(video_t), audio_timesteps=rep(audio_t),
        sigma=rep(sigma), audio_sigma=rep(audio_sigma), video_shape=plan.latent_shape, fps=request.fps,
        isolate_modalities=isolate, stg_blocks=stg_blocks)
    return video_pred.float(), audio_pred.float()


def _x0(pred: tuple[Tensor, Tensor], video: Tensor, audio: Tensor, video_sigma: Tensor,
        audio_sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Velocity → x₀ with per-token σ: clean tokens (σ = 0) come back exactly as they went in."""
    return video - video_sigma[..., None] * pred[0], audio - audio_sigma[..., None] * pred[1]


def guide(cond: Tensor, uncond: Tensor | None, perturbed: Tensor | None, isolated: Tensor | None, cfg: float,
          stg: float, modality: float, rescale: float) -> Tensor:
    """Combine x₀ predictions (MultiModalGuider's delta form), then rescale toward the conditional std."""
    out = cond.clone()
    if uncond is not None:
        out = out + (cfg - 1) * (cond - uncond)
    if perturbed is not None:
        out = out + stg * (cond - perturbed)
    if isolated is not None:
        out = out + (modality - 1) * (cond - isolated)
    if rescale != 0:
        factor = cond.std() / out.std().clamp_min(1e-12)
        out = out * (rescale * factor + (1 - rescale))
    return out


def _initial_state(request: SampleRequest, plan: _Plan, channels: int, audio_width: int,
                   generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(video tokens, clean-token mask [N] bool, audio tokens), all float32 on ``device``.

    Noise is drawn on a CPU generator (same numbers on every device); video noise first and always for every
    token, so a seed gives the same video noise with or without a first frame or audio.
    """
    frames, height, width = plan.latent_shape
    noise = torch.randn((1, channels, frames, height, width), generator=generator, dtype=torch.float32)
    video = pack_video(noise).to(device)  # σ₀ = 1: pure noise
    clean = torch.zeros(video.shape[1], dtype=torch.bool, device=device)
    if request.first_frame is not None:
        first = pack_video(request.first_frame.float()).to(device)
        video[:, : first.shape[1]] = first
        clean[: first.shape[1]] = True
    if plan.audio_mode == "condition":
        audio = request.audio.float().to(device)
    elif plan.audio_mode == "generate":
        length = audio_latent_length(round(request.num_frames / request.fps * SAMPLE_RATE))
        audio = torch.randn((1, length, audio_width), generator=generator, dtype=torch.float32).to(device)
    else:
        audio = torch.zeros((1, 1, audio_width), device=device)
    return video, clean, audio


def _autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda" and dtype == torch.bfloat16)


def sample(transformer: nn.Module, scheduler, request: SampleRequest,
           progress: bool = False) -> tuple[Tensor, Tensor | None]:
    """Denoise one clip. Returns (video latents [1, C, F', H', W'], audio latents [1, L, D] or None), float32.

    a2v returns the supplied audio latents unchanged; video-only returns None for audio. Deterministic for a
    seed (a local generator; the global RNG is untouched). The transformer's training flag is restored.
    """
    plan = _plan(transformer, request)
    device, dtype = _model_device_dtype(transformer)
    cfg = transformer.config
    generator = torch.Generator(device="cpu").manual_seed(int(request.seed))
    video, clean, audio = _initial_state(request, plan, cfg.in_channels, cfg.audio_in_channels, generator, device)
    video_sched = sigma_schedule(scheduler, request.steps, video.shape[1], device)
    audio_sched = copy.deepcopy(video_sched)  # schedulers keep a step index: one per stepped stream
    text = _text(request.prompt, request.negative if plan.cfg else None, device, dtype)
    cond_text = _text(request.prompt, None, device, dtype) if plan.cfg else text
    generating_audio = plan.audio_mode == "generate"
    isolate_all = plan.audio_mode == "absent"
    stepped = ~clean
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.no_grad(), _autocast(device, dtype):
            steps = tqdm(range(request.steps), desc="sampling", disable=not progress, leave=False)
            for i in steps:
                t = video_sched.timesteps[i]
                s = video_sched.sigmas[i].to(device=device, dtype=torch.float32)
                video_sigma_tok = (s * stepped.float())[None]  # [1, N]: 0 on clean tokens
                audio_s = s if generating_audio else torch.zeros((), device=device)
                audio_sigma_tok = audio_s.expand(1, audio.shape[1])
                args = (video, audio, video_sigma_tok, audio_sigma_tok, s.reshape(1), audio_s.reshape(1), request,
                        plan, dtype)
                both = _x0(_forward(transformer, text, *args, isolate_all, None), *args[:4])
                if plan.cfg:
                    cond = (both[0][:1], both[1][:1])
                    uncond = (both[0][1:], both[1][1:])
                else:
                    cond, uncond = both, (None, None)
                perturbed = isolated = (None, None)
                if plan.stg_blocks:
                    perturbed = _x0(_forward(transformer, cond_text, *args, isolate_all, plan.stg_blocks), *args[:4])
                if plan.modality:
                    isolated = _x0(_forward(transformer, cond_text, *args, True, None), *args[:4])

                x0_video = guide(cond[0], uncond[0], perturbed[0], isolated[0], request.guidance_scale,
                                 request.stg_scale, request.modality_scale, request.guidance_rescale)
                # Euler on the noisy tokens only, with the velocity implied by the guided x₀ (σ > 0 there).
                velocity = (video[:, stepped] - x0_video[:, stepped]) / s
                video = video.clone()
                video[:, stepped] = video_sched.step(velocity, t, video[:, stepped], return_dict=False)[0]
                if generating_audio:
                    x0_audio = guide(cond[1], uncond[1], perturbed[1], isolated[1], request.audio_guidance_scale,
                                     request.stg_scale, request.modality_scale, request.guidance_rescale)
                    audio = audio_sched.step((audio - x0_audio) / s, t, audio, return_dict=False)[0]
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
