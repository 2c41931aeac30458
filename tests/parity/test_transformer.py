"""ltxlab's transformer call against ltx-core's LTXModel on the same tiny weights.

``legacy`` must equal ltx-core 1.0.0 (= diffusers 0.42.1); the default ``ltx_core`` must equal current ltx-core's
cross-modulation rule (tests/parity/current_ltx_core.py) and differ from legacy whenever the modality's own
timesteps differ from the other modality's σ.
"""

from __future__ import annotations

import pytest
import torch

from ltxlab.models.forward import call_transformer, set_cross_modulation
from tests.parity.conftest import VIDEO_SHAPE, Case, core_modalities, make_case, perturbations
from tests.parity.current_ltx_core import with_current_cross_modulation

TOL = 1e-5

CASES = {
    "video_only": dict(sigma=[0.7, 0.3], audio_sigma=[0.0, 0.0], audio_frozen=True),
    "joint_audio_different_sigma": dict(sigma=[0.8, 0.2], audio_sigma=[0.35, 0.9]),
    "a2v_frozen_audio": dict(sigma=[0.6, 0.95], audio_sigma=[0.0, 0.0], first_frame_held=True, audio_frozen=True),
    "first_frame_held": dict(sigma=[0.5, 0.75], audio_sigma=[0.5, 0.75], first_frame_held=True),
}


def ours(model, case: Case, stg_blocks=None, isolate=False) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return call_transformer(
            model, video=case.video, audio=case.audio, text_video=case.text_video, text_audio=case.text_audio,
            text_mask=case.text_mask, video_timesteps=case.video_timesteps, audio_timesteps=case.audio_timesteps,
            sigma=case.sigma, audio_sigma=case.audio_sigma, video_shape=VIDEO_SHAPE, fps=case.fps,
            isolate_modalities=isolate, stg_blocks=stg_blocks)


def reference(core, case: Case, stg_blocks=None, isolate=False) -> tuple[torch.Tensor, torch.Tensor]:
    video, audio = core_modalities(case)
    with torch.no_grad():
        return core(video, audio, perturbations(case.video.shape[0], stg_blocks, isolate))


def max_diff(a: tuple, b: tuple) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.fixture
def behaviour(ours_transformer):
    def _set(mode: str):
        set_cross_modulation(ours_transformer, mode)
        return ours_transformer

    yield _set
    set_cross_modulation(ours_transformer, "legacy")


PASSES = {"plain": {}, "stg_block_1": {"stg_blocks": [1]}, "isolated": {"isolate": True}}


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("case_name", CASES)
def test_legacy_matches_ltx_core_1_0(behaviour, core_transformer, case_name, pass_name) -> None:
    case = make_case(**CASES[case_name])
    got = ours(behaviour("legacy"), case, **PASSES[pass_name])
    want = reference(core_transformer, case, **PASSES[pass_name])
    assert got[0].abs().max() > 1e-2  # a real signal, not two zero tensors
    assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("case_name", CASES)
def test_default_matches_current_ltx_core(behaviour, core_transformer, case_name, pass_name) -> None:
    case = make_case(**CASES[case_name])
    got = ours(behaviour("ltx_core"), case, **PASSES[pass_name])
    want = reference(with_current_cross_modulation(core_transformer), case, **PASSES[pass_name])
    assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("case_name", ["joint_audio_different_sigma", "a2v_frozen_audio", "first_frame_held"])
def test_the_two_behaviours_differ_where_own_timesteps_differ_from_the_other_sigma(behaviour, case_name) -> None:
    case = make_case(**CASES[case_name])
    legacy = ours(behaviour("legacy"), case)
    current = ours(behaviour("ltx_core"), case)
    assert max_diff(legacy, current) > 1e-4


def test_the_behaviours_agree_with_one_sigma_everywhere(behaviour) -> None:
    case = make_case(sigma=[0.4, 0.8], audio_sigma=[0.4, 0.8])
    assert max_diff(ours(behaviour("legacy"), case), ours(behaviour("ltx_core"), case)) <= TOL


def test_non_24_fps_positions_reach_the_model(behaviour, core_transformer) -> None:
    case = make_case(sigma=[0.7], audio_sigma=[0.3], fps=60.0)
    got = ours(behaviour("legacy"), case)
    assert max_diff(got, reference(core_transformer, case)) <= TOL
    at_24 = ours(behaviour("legacy"), make_case(sigma=[0.7], audio_sigma=[0.3], fps=24.0))
    assert max_diff(got, at_24) > 1e-5
