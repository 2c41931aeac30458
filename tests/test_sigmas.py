"""The training σ sampler against the closed-form distribution of ltx-trainer's ShiftedLogitNormalTimestepSampler."""

from __future__ import annotations

import math

import pytest
import torch

from ltxlab.modes.sigmas import EPS, ShiftedLogitNormal


def reference_cdf(sigma: float, num_tokens: int, uniform_fraction: float = 0.1) -> float:
    """P(σ ≤ sigma), ε ≤ sigma < 1, written from the reference: z ~ N(μ, 1), raw = (sigmoid(z) − lo)/(hi − lo)
    with lo/hi = sigmoid(μ − 2.5758)/sigmoid(μ + 3.0902), reflected at ε, mixed with uniform [ε, 1]."""
    mu = 0.95 + (2.05 - 0.95) / (4096 - 1024) * (num_tokens - 1024)
    lo, hi = 1 / (1 + math.exp(-(mu - 2.5758))), 1 / (1 + math.exp(-(mu + 3.0902)))

    def raw_below(x: float) -> float:
        p = lo + x * (hi - lo)
        if p <= 0:
            return 0.0
        return 0.5 * (1 + math.erf((math.log(p / (1 - p)) - mu) / math.sqrt(2)))

    stretched = raw_below(sigma) - raw_below(2 * EPS - sigma)
    return (1 - uniform_fraction) * stretched + uniform_fraction * (sigma - EPS) / (1 - EPS)


def reference_quantile(q: float, num_tokens: int) -> float:
    low, high = EPS, 1.0 - 1e-9
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if reference_cdf(mid, num_tokens) < q else (low, mid)
    return (low + high) / 2


@pytest.mark.parametrize("num_tokens", [768, 1024, 4096, 6912])
def test_sigma_quantiles_match_the_reference_formula(num_tokens: int) -> None:
    draws = ShiftedLogitNormal().sample(200_000, num_tokens, torch.Generator().manual_seed(3))
    assert draws.min() >= EPS and draws.max() <= 1.0
    for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9):
        assert torch.quantile(draws, q).item() == pytest.approx(reference_quantile(q, num_tokens), abs=4e-3), q


def test_stretch_moves_mass_below_high_noise_at_768_squared_by_89() -> None:
    draws = ShiftedLogitNormal().sample(200_000, 6912, torch.Generator().manual_seed(4))
    above = (draws > 0.9).float().mean().item()
    assert above == pytest.approx(1 - reference_cdf(0.9, 6912), abs=5e-3)
    assert 0.40 < above < 0.44  # the unstretched sampler put ~73% here
    assert (draws < 0.5).float().mean().item() == pytest.approx(reference_cdf(0.5, 6912), abs=5e-3)


def test_shift_is_linear_in_tokens_and_unclamped() -> None:
    s = ShiftedLogitNormal()
    assert s.mu(1024) == pytest.approx(0.95) and s.mu(4096) == pytest.approx(2.05)
    assert s.mu(6912) == pytest.approx(0.95 + 1.1 * (6912 - 1024) / 3072)
