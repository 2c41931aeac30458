"""Sampling settings: the one place where preview and ``ltxlab.generate`` defaults are written.

`ValidationConfig` (the ``validation`` config group) extends `SamplingSettings`, and ``python -m ltxlab.generate``
builds its flags from the same fields, so a default changed here changes both. The values are Lightricks' LTX-2.3
reference (ltx-pipelines ``LTX_2_3_PARAMS``, ltx-trainer validation defaults):

- 30 steps on ltx-core's ``LTX2Scheduler`` schedule (`ltxlab.sample.schedule`);
- video: CFG 3, STG 1 on block 28, modality (audio→video isolation) guidance 3;
- generated audio: CFG 7, STG 1 (``audio_stg_scale=None`` follows ``stg_scale``), modality guidance 3;
- guidance rescale 0.7 for both; start image re-encoded as one H.264 frame at CRF 33 (``image_crf``; 0 = off).

Frozen (a2v) conditioning audio gets a neutral guider whatever the audio scales say — no audio CFG, no STG on the
audio self-attention, audio σ and timesteps 0 — as ltx-trainer's a2v validation and ltx-pipelines' a2v pipeline do.
This module imports no torch: the config schema depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ltxlab.config.resolution import bucket_size

# ltx-pipelines 1.0.0 ``DEFAULT_NEGATIVE_PROMPT`` in full (= current ltx-trainer's validation default). Current
# ltx-pipelines prepends LTX-2.5 caption tags ("has_subtitles, has_blurbox, ..."); LTX-2.3 was not captioned
# with them, so they are left out.
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


@dataclass
class SamplingSettings:
    """How one clip is sampled: size, guidance, schedule length, seed, start-image compression."""

    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    number_of_frames: int = 89  # 8k+1
    frame_rate: int = 24
    resolution: str = "high"  # low | medium | high (the seeds' table)
    aspect_ratio: str = "1:1"
    width: int | None = None  # overrides the table (multiple of 32)
    height: int | None = None
    inference_steps: int = 30
    guidance_scale: float = 3.0  # video CFG
    audio_guidance_scale: float = 7.0  # generated-audio CFG
    stg_scale: float = 1.0  # video STG (the seeds' stg_scale)
    audio_stg_scale: float | None = None  # generated-audio STG; None = stg_scale
    stg_blocks: list[int] = field(default_factory=lambda: [28])
    guidance_rescale: float = 0.7
    modality_scale: float = 3.0  # video: guidance away from the audio-isolated prediction
    audio_modality_scale: float = 3.0  # generated audio: away from the video-isolated prediction
    image_crf: int = 33  # H.264 CRF of the start-image re-encode (ltx-pipelines' DEFAULT_IMAGE_CRF); 0 = off
    seed: int = 0

    def size(self) -> tuple[int, int]:
        """(width, height) in pixels: the resolution table, unless width/height override it."""
        width, height = bucket_size(self.resolution, self.aspect_ratio)
        return self.width or width, self.height or height

    def effective_audio_stg_scale(self) -> float:
        return self.stg_scale if self.audio_stg_scale is None else self.audio_stg_scale


def sampling_problems(s: SamplingSettings) -> list[str]:
    """Every rule a sampling setting breaks, as ``field: reason`` (the config validator and generate both report
    them, so the rules are written once)."""
    problems = []
    width, height = s.size()
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        problems.append(f"width/height: must be positive multiples of 32, got {width}x{height}")
    if s.inference_steps < 2:
        problems.append(f"inference_steps: must be at least 2 (the LTX-2.3 schedule), got {s.inference_steps}")
    if s.frame_rate <= 0:
        problems.append(f"frame_rate: must be positive, got {s.frame_rate}")
    if not 0.0 <= s.guidance_rescale <= 1.0:
        problems.append(f"guidance_rescale: must be within 0–1, got {s.guidance_rescale}")
    if not 0 <= s.image_crf <= 51:
        problems.append(f"image_crf: must be an H.264 CRF within 0–51 (0 = no re-encode), got {s.image_crf}")
    if any(b < 0 for b in s.stg_blocks):
        problems.append(f"stg_blocks: must be non-negative block indices, got {list(s.stg_blocks)}")
    for name in ("stg_scale", "audio_stg_scale"):
        value = getattr(s, name)
        if value is not None and value < 0:
            problems.append(f"{name}: must be ≥ 0, got {value}")
    return problems


AUDIO_GUIDANCE_FIELDS = ("audio_guidance_scale", "audio_stg_scale", "audio_modality_scale")


def unused_with_frozen_audio(s: SamplingSettings) -> list[str]:
    """The audio-guidance settings changed from their defaults, which a2v ignores (its conditioning audio is
    frozen and gets the neutral guider): callers warn about them instead of silently dropping them."""
    defaults = SamplingSettings()
    changed = [name for name in AUDIO_GUIDANCE_FIELDS if getattr(s, name) != getattr(defaults, name)]
    return [f"{name}={getattr(s, name)}" for name in changed]
