"""Per-modality multi-modal guidance, as ltx-core's ``MultiModalGuider`` and ltx-pipelines' guided denoiser.

Each generated stream has its own `Guider` (CFG, STG, modality-isolation scale, rescale). On x₀ predictions:

    g = cond + (cfg − 1)(cond − uncond) + stg·(cond − perturbed) + (modality − 1)(cond − isolated)
    g ← g · (r·std(cond)/std(g) + 1 − r)

Which passes run is the union of what the two guiders need; the STG pass perturbs the self-attention of only the
streams whose STG scale is non-zero (ltx-core's SKIP_VIDEO_SELF_ATTN / SKIP_AUDIO_SELF_ATTN), the isolation pass
cuts both A↔V cross-attentions. A frozen (a2v) or absent audio stream gets the neutral guider; with absent audio the
video's modality scale is 1 (there is nothing to isolate from).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from ltxlab.sample.settings import SamplingSettings

_PERTURBATION_KWARGS = ("perturbation_mask", "all_perturbed")


@dataclass(frozen=True)
class Guider:
    cfg: float = 1.0
    stg: float = 0.0
    modality: float = 1.0
    rescale: float = 0.0

    @property
    def wants_uncond(self) -> bool:
        return self.cfg != 1

    @property
    def wants_perturbed(self) -> bool:
        return self.stg != 0

    @property
    def wants_isolated(self) -> bool:
        return self.modality != 1

    def combine(self, cond: Tensor, uncond: Tensor | None, perturbed: Tensor | None,
                isolated: Tensor | None) -> Tensor:
        """The guided x₀ (float32). A pass that did not run must have a neutral scale here."""
        out = cond.float()
        for scale_on, other, weight in ((self.wants_uncond, uncond, self.cfg - 1),
                                        (self.wants_perturbed, perturbed, self.stg),
                                        (self.wants_isolated, isolated, self.modality - 1)):
            if scale_on:
                if other is None:
                    raise ValueError("a guidance pass this guider needs did not run")
                out = out + weight * (cond.float() - other.float())
        if self.rescale != 0:
            factor = cond.float().std() / out.std().clamp_min(1e-12)
            out = out * (self.rescale * factor + (1 - self.rescale))
        return out


NEUTRAL = Guider()


def guiders_for(settings: SamplingSettings, audio_mode: str) -> tuple[Guider, Guider]:
    """(video guider, audio guider) for an audio mode: "generate" | "condition" (frozen a2v) | "absent"."""
    video = Guider(cfg=settings.guidance_scale, stg=settings.stg_scale,
                   modality=settings.modality_scale if audio_mode != "absent" else 1.0,
                   rescale=settings.guidance_rescale)
    if audio_mode != "generate":
        return video, NEUTRAL
    audio = Guider(cfg=settings.audio_guidance_scale, stg=settings.effective_audio_stg_scale(),
                   modality=settings.audio_modality_scale, rescale=settings.guidance_rescale)
    return video, audio


@contextmanager
def self_attention_perturbed(transformer: nn.Module, blocks: list[int], video: bool, audio: bool) -> Iterator[None]:
    """For one STG call: keep the self-attention of a stream whose STG is off unperturbed in ``blocks``.

    diffusers' ``spatio_temporal_guidance_blocks`` perturbs the video *and* the audio self-attention of a block;
    dropping the perturbation arguments on the other stream's attention gives ltx-core's per-modality STG.
    """
    model = getattr(transformer, "module", transformer)
    keep = ([] if video else ["attn1"]) + ([] if audio else ["audio_attn1"])

    def unperturbed(module, args, kwargs):
        return args, {k: v for k, v in kwargs.items() if k not in _PERTURBATION_KWARGS}

    handles = [getattr(model.transformer_blocks[b], name).register_forward_pre_hook(unperturbed, with_kwargs=True)
               for b in blocks for name in keep]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
