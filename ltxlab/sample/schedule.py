"""The σ schedule LTX-2.3 is sampled with in Lightricks' pipelines (ltx-core ``LTX2Scheduler().execute(steps)``).

ltx-pipelines calls the scheduler without a latent, so the shift is the 4096-token value whatever the resolution:

    σᵢ = linspace(1, 0, steps + 1)
    σᵢ ← e^μ / (e^μ + 1/σᵢ − 1)            μ = 2.05 (0.95 at 1024 tokens → 2.05 at 4096, evaluated at 4096)
    σᵢ ← 1 − (1 − σᵢ) / ((1 − σ_last) / (1 − 0.1))   on σᵢ ≠ 0: stretched so the last non-zero σ is 0.1

and ends at exactly 0. A token-count shift (diffusers' dynamic shifting) would extrapolate μ to ≈ 4.45 at
960²×89 and spend most steps above σ = 0.9.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BASE_SHIFT, MAX_SHIFT = 0.95, 2.05  # μ at the two anchor token counts
BASE_TOKENS, MAX_TOKENS = 1024, 4096
TERMINAL_SIGMA = 0.1


def ltx2_sigmas(steps: int, tokens: int = MAX_TOKENS) -> Tensor:
    """``steps + 1`` float32 σ from 1 down to 0 (the last step lands on 0)."""
    if steps < 2:
        # One step stretches 1 − σ = 0 by 0/0 (NaN), as in the reference.
        raise ValueError(f"steps must be at least 2 with the LTX-2.3 schedule, got {steps}")
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)
    mu = tokens * slope + (BASE_SHIFT - slope * BASE_TOKENS)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    live = sigmas != 0
    shifted = math.exp(mu) / (math.exp(mu) + (1 / sigmas[live] - 1))
    one_minus = 1.0 - shifted
    sigmas[live] = 1.0 - one_minus / (one_minus[-1] / (1.0 - TERMINAL_SIGMA))
    return sigmas.to(torch.float32)
