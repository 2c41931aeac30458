"""A short sampling trajectory of ltxlab's sampler equals Lightricks' own denoising loop, for i2v and a2v.

The reference is ltx-pipelines 1.0.0's loop run on ltx-core's ``LTXModel`` holding the same tiny weights: the
``LTX2Scheduler`` schedule, ``GaussianNoiser`` on the same seed (CPU), ``VideoConditionByLatentIndex`` for the start
image, ``multi_modal_guider_denoising_func`` (CFG + STG + modality guidance + rescale per modality, batched the
reference's way), ``euler_denoising_loop`` with ``EulerDiffusionStep`` — the i2v one-stage / a2v stage-1 path.

Where ltx-pipelines 1.0.0 and current ltx-pipelines differ, ltxlab follows current: a frozen modality (a2v audio)
gets σ = 0 (``modality_from_latent_state`` in ``ltx_pipelines/utils/helpers.py`` at HEAD: "so prompt AdaLN and
cross-modality gates match frozen conditioning"); 1.0.0 passed the step σ. The a2v test runs the reference both
ways: with HEAD's rule it equals ltxlab, with 1.0.0's it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from ltxlab.models import tiny
from ltxlab.models.codecs import unpack_audio
from ltxlab.models.forward import set_cross_modulation
from ltxlab.models.text import PromptEmbeddings
from ltxlab.sample.sampler import SampleRequest, sample
from ltxlab.sample.settings import SamplingSettings
from tests.parity.current_ltx_core import with_current_cross_modulation
from tests.parity.torchaudio_shim import install_torchaudio_shim

install_torchaudio_shim()  # ltx_pipelines' package import reaches ltx-core's mel front-end

from ltx_core.components.diffusion_steps import EulerDiffusionStep  # noqa: E402
from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams  # noqa: E402
from ltx_core.components.noisers import GaussianNoiser  # noqa: E402
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier  # noqa: E402
from ltx_core.components.schedulers import LTX2Scheduler  # noqa: E402
from ltx_core.conditioning import VideoConditionByLatentIndex  # noqa: E402
from ltx_core.model.transformer import X0Model  # noqa: E402
from ltx_core.tools import AudioLatentTools, VideoLatentTools  # noqa: E402
from ltx_core.types import AudioLatentShape, LatentState, VideoLatentShape, VideoPixelShape  # noqa: E402
from ltx_pipelines.utils import helpers  # noqa: E402
from ltx_pipelines.utils.helpers import create_noised_state, multi_modal_guider_denoising_func  # noqa: E402
from ltx_pipelines.utils.samplers import euler_denoising_loop  # noqa: E402

FRAMES, SIZE, FPS, STEPS, SEED = 9, 64, 24, 3, 5  # 2 x 2 x 2 video tokens; 9 audio latents (encoding gives 10)
TOL = 2e-5  # measured ≤ 5e-6 (3 steps, 3-4 passes each, float32)
TEXT_TOKENS = 8


@dataclass(frozen=True)
class FrozenLatentState(LatentState):
    """ltx-core 1.0.0's LatentState plus current ltx-core's ``frozen`` flag (a conditioning modality)."""

    frozen: bool = True


def head_modality_from_latent_state(state, context, sigma, enabled=True):
    """Current ltx-pipelines' rule on 1.0.0's helper: a frozen modality's σ is 0."""
    if getattr(state, "frozen", False):
        sigma = torch.zeros_like(sigma)
    return V1_0_MODALITY_FROM_LATENT_STATE(state, context, sigma, enabled)


V1_0_MODALITY_FROM_LATENT_STATE = helpers.modality_from_latent_state


def prompts() -> tuple[PromptEmbeddings, PromptEmbeddings]:
    config = tiny.transformer_config()
    g = torch.Generator().manual_seed(1)

    def one() -> PromptEmbeddings:
        return PromptEmbeddings(video=torch.randn(1, TEXT_TOKENS, config["cross_attention_dim"], generator=g),
                                audio=torch.randn(1, TEXT_TOKENS, config["audio_cross_attention_dim"], generator=g),
                                mask=torch.ones(1, TEXT_TOKENS))  # connectors with registers: no padding

    return one(), one()


SETTINGS = SamplingSettings(number_of_frames=FRAMES, width=SIZE, height=SIZE, frame_rate=FPS,
                            inference_steps=STEPS, stg_blocks=[1], seed=SEED)  # reference defaults otherwise


def start_latent() -> torch.Tensor:
    config = tiny.transformer_config()
    return torch.randn(1, config["in_channels"], 1, SIZE // 32, SIZE // 32, generator=torch.Generator().manual_seed(3))


def audio_shape() -> AudioLatentShape:
    audio = tiny.audio_vae_config()
    shape = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(batch=1, frames=FRAMES, height=SIZE, width=SIZE,
                                                                    fps=FPS),
                                                    channels=audio["latent_channels"], mel_bins=audio["mel_bins"] // 4)
    return shape


def conditioning_audio() -> torch.Tensor:
    """a2v conditioning latents [1, L, D] (packed, normalised), L as the reference sizes the audio stream."""
    width = tiny.transformer_config()["audio_in_channels"]
    return torch.randn(1, audio_shape().frames, width, generator=torch.Generator().manual_seed(11))


def guider_params(cfg: float, stg: float, modality: float) -> MultiModalGuiderParams:
    return MultiModalGuiderParams(cfg_scale=cfg, stg_scale=stg, stg_blocks=list(SETTINGS.stg_blocks),
                                  rescale_scale=SETTINGS.guidance_rescale, modality_scale=modality)


def reference(core, prompt, negative, first, a2v_audio: torch.Tensor | None):
    """ltx-pipelines 1.0.0's one-stage path (i2v) or a2v stage 1 (video only, audio frozen): latents out."""
    generator = torch.Generator().manual_seed(SEED)
    noiser = GaussianNoiser(generator=generator)
    pixel_shape = VideoPixelShape(batch=1, frames=FRAMES, height=SIZE, width=SIZE, fps=FPS)
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1),
                                   VideoLatentShape.from_pixel_shape(pixel_shape, first.shape[1]), FPS)
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), audio_shape())
    video_state = create_noised_state(video_tools, [VideoConditionByLatentIndex(first, 1.0, 0)], noiser,
                                      torch.float32, torch.device("cpu"))
    video_guider = MultiModalGuider(guider_params(SETTINGS.guidance_scale, SETTINGS.stg_scale,
                                                  SETTINGS.modality_scale), negative_context=negative.video)
    if a2v_audio is None:
        audio_state = create_noised_state(audio_tools, [], noiser, torch.float32, torch.device("cpu"))
        audio_guider = MultiModalGuider(guider_params(SETTINGS.audio_guidance_scale, SETTINGS.stg_scale,
                                                      SETTINGS.audio_modality_scale), negative_context=negative.audio)
    else:  # ltx-pipelines' a2v: the encoded audio as the initial latent, no noise, nothing to denoise
        initial = unpack_audio(a2v_audio, audio_shape().channels)
        state = create_noised_state(audio_tools, [], noiser, torch.float32, torch.device("cpu"), noise_scale=0.0,
                                    initial_latent=initial)
        assert torch.equal(state.latent, a2v_audio)  # same token packing
        audio_state = FrozenLatentState(**{**vars(state), "denoise_mask": torch.zeros_like(state.denoise_mask)})
        audio_guider = MultiModalGuider(MultiModalGuiderParams())  # neutral: no negative context either
    denoise = multi_modal_guider_denoising_func(video_guider, audio_guider, prompt.video, prompt.audio, X0Model(core))
    sigmas = LTX2Scheduler().execute(steps=STEPS)
    video_state, audio_state = euler_denoising_loop(sigmas, video_state, audio_state, EulerDiffusionStep(), denoise)
    video = video_tools.unpatchify(video_tools.clear_conditioning(video_state)).latent
    return video, audio_state.latent


@pytest.fixture(params=["legacy", "ltx_core"])
def models(request, ours_transformer, core_transformer):
    """(ltxlab transformer, reference LTXModel) in one A↔V cross-modulation behaviour: ltx-core 1.0.0's (legacy)
    or current ltx-core's (ltxlab's default), the latter as tests/parity/current_ltx_core.py restates it."""
    set_cross_modulation(ours_transformer, request.param)
    core = core_transformer if request.param == "legacy" else with_current_cross_modulation(core_transformer)
    yield ours_transformer, core
    set_cross_modulation(ours_transformer, "legacy")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_i2v_with_audio_trajectory_equals_the_reference_loop(models) -> None:
    ours, core = models
    prompt, negative = prompts()
    first = start_latent()
    video, audio = sample(ours, SampleRequest(prompt, negative, SETTINGS, first_frame=first, generate_audio=True))
    ref_video, ref_audio = reference(core, prompt, negative, first, None)
    assert video.shape == ref_video.shape and audio.shape == ref_audio.shape
    assert max_diff(video, ref_video) < TOL and max_diff(audio, ref_audio) < TOL
    assert torch.equal(video[:, :, :1], first) and torch.equal(ref_video[:, :, :1], first)


def test_a2v_trajectory_equals_the_reference_loop_with_frozen_sigma_zero(models, monkeypatch) -> None:
    ours, core = models
    prompt, negative = prompts()
    first, supplied = start_latent(), conditioning_audio()
    video, audio = sample(ours, SampleRequest(prompt, negative, SETTINGS, first_frame=first, audio=supplied))
    assert torch.equal(audio, supplied)

    monkeypatch.setattr(helpers, "modality_from_latent_state", head_modality_from_latent_state)
    head_video, head_audio = reference(core, prompt, negative, first, supplied)
    assert torch.equal(head_audio, supplied)
    assert max_diff(video, head_video) < TOL

    monkeypatch.setattr(helpers, "modality_from_latent_state", V1_0_MODALITY_FROM_LATENT_STATE)
    old_video, _ = reference(core, prompt, negative, first, supplied)  # 1.0.0: frozen audio at the step σ
    assert max_diff(video, old_video) > 100 * TOL, "1.0.0's step σ on frozen audio should change the video"


def test_settings_defaults_are_the_reference_ones() -> None:
    """LTX_2_3_PARAMS (ltx-pipelines) guidance, steps and negative prompt; the a2v audio guider is neutral."""
    from ltx_pipelines.utils.constants import DEFAULT_NEGATIVE_PROMPT, LTX_2_3_PARAMS

    from ltxlab.sample.guidance import NEUTRAL, guiders_for

    s = SamplingSettings()
    video, audio = LTX_2_3_PARAMS.video_guider_params, LTX_2_3_PARAMS.audio_guider_params
    assert s.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert s.inference_steps == LTX_2_3_PARAMS.num_inference_steps
    assert (s.guidance_scale, s.stg_scale, s.guidance_rescale, s.modality_scale, s.stg_blocks) == \
        (video.cfg_scale, video.stg_scale, video.rescale_scale, video.modality_scale, video.stg_blocks)
    assert (s.audio_guidance_scale, s.effective_audio_stg_scale(), s.audio_modality_scale) == \
        (audio.cfg_scale, audio.stg_scale, audio.modality_scale)
    v, a = guiders_for(s, "condition")
    assert a == NEUTRAL and (v.cfg, v.stg, v.modality) == (3.0, 1.0, 3.0)  # ltx-trainer a2v_lora.yaml
    assert replace(s, image_crf=0).image_crf == 0 and s.image_crf == 33


def test_start_image_reencode_is_ltx_pipelines_preprocess() -> None:
    """ltx-pipelines re-encodes a conditioning image as one H.264 frame at CRF 33: the same pixels come back."""
    import numpy as np
    from ltx_pipelines.utils.constants import DEFAULT_IMAGE_CRF
    from ltx_pipelines.utils.media_io import preprocess

    from ltxlab.sample.media_inputs import reencode_h264

    assert SamplingSettings().image_crf == DEFAULT_IMAGE_CRF
    y, x = np.mgrid[0:81, 0:101]
    image = np.stack([(x * 2.5) % 256, (y * 3.1) % 256, (x + y) % 256], axis=-1).astype(np.uint8)  # odd size
    image[20:40, 30:60] = np.random.default_rng(0).integers(0, 256, (20, 30, 3))
    ours = reencode_h264(image, DEFAULT_IMAGE_CRF)
    assert np.array_equal(ours, preprocess(image, DEFAULT_IMAGE_CRF))
    assert ours.shape == (80, 100, 3) and not np.array_equal(ours, image[:80, :100])
