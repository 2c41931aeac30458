"""σ sampling for flow-matching training: the stretched shifted logit-normal of the LTX reference trainer.

ltx-trainer's ``ShiftedLogitNormalTimestepSampler``: σ = sigmoid(N(μ, 1)) with μ rising linearly with the token
count, then *stretched* so the distribution's 0.5th..99.9th percentiles span [0, 1], reflected at ε, clamped to
[0, 1] and mixed with a uniform draw in [ε, 1]. Without the stretch large clips train almost only above σ = 0.9
(73% of draws at 6,912 tokens against 42%), starving the low-noise range that carries identity and texture.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

EPS = 1e-3
# Standard-normal quantiles the reference stretches between (its rounded constants, kept as they are).
NORMAL_Q_LOW = -2.5758  # 0.5th percentile
NORMAL_Q_HIGH = 3.0902  # 99.9th percentile


class SigmaSampler(Protocol):
    """What a mode draws its training σ from: one σ per clip of the batch."""

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor: ...


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


class ShiftedLogitNormal:
    """σ = stretch(sigmoid(N(μ, std))) with μ = 0.95 at 1024 tokens and 2.05 at 4096 (linear, not clamped);
    a ``uniform_fraction`` of the draws is uniform in [ε, 1] so no σ is starved."""

    def __init__(self, shift_min: float = 0.95, shift_max: float = 2.05, uniform_fraction: float = 0.1,
                 min_tokens: int = 1024, max_tokens: int = 4096, std: float = 1.0) -> None:
        self.shift_min, self.shift_max = shift_min, shift_max
        self.uniform_fraction = uniform_fraction
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.std = std

    def mu(self, num_tokens: int) -> float:
        slope = (self.shift_max - self.shift_min) / (self.max_tokens - self.min_tokens)
        return self.shift_min + slope * (num_tokens - self.min_tokens)

    def stretch_bounds(self, num_tokens: int) -> tuple[float, float]:
        """The logit-normal's 0.5th and 99.9th percentiles: they become σ = 0 and σ = 1."""
        mu = self.mu(num_tokens)
        return _sigmoid(mu + NORMAL_Q_LOW * self.std), _sigmoid(mu + NORMAL_Q_HIGH * self.std)

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor:
        normal = torch.randn(batch_size, generator=generator) * self.std + self.mu(num_tokens)
        low, high = self.stretch_bounds(num_tokens)
        stretched = (torch.sigmoid(normal) - low) / (high - low)
        # Reflect off the clean end: σ≈0 teaches nothing and makes the velocity target ill-posed.
        stretched = torch.where(stretched >= EPS, stretched, 2 * EPS - stretched).clamp(0.0, 1.0)
        uniform = (1 - EPS) * torch.rand(batch_size, generator=generator) + EPS
        use_uniform = torch.rand(batch_size, generator=generator) < self.uniform_fraction
        return torch.where(use_uniform, uniform, stretched)
