"""σ sampling for flow-matching training: the shifted logit-normal of the LTX reference trainer."""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-3


class ShiftedLogitNormal:
    """σ = sigmoid(N(μ, 1)) with μ rising linearly with the token count (0.95 at 1024 tokens, 2.05 at 4096,
    not clamped), so larger clips train at noisier levels; a fraction of draws is uniform so no σ is starved."""

    def __init__(self, shift_min: float = 0.95, shift_max: float = 2.05, uniform_fraction: float = 0.1,
                 min_tokens: int = 1024, max_tokens: int = 4096) -> None:
        self.shift_min, self.shift_max = shift_min, shift_max
        self.uniform_fraction = uniform_fraction
        self.min_tokens, self.max_tokens = min_tokens, max_tokens

    def mu(self, num_tokens: int) -> float:
        slope = (self.shift_max - self.shift_min) / (self.max_tokens - self.min_tokens)
        return self.shift_min + slope * (num_tokens - self.min_tokens)

    def sample(self, batch_size: int, num_tokens: int, generator: torch.Generator) -> Tensor:
        normal = torch.randn(batch_size, generator=generator) + self.mu(num_tokens)
        sigma = torch.sigmoid(normal)
        uniform = torch.rand(batch_size, generator=generator)
        use_uniform = torch.rand(batch_size, generator=generator) < self.uniform_fraction
        sigma = torch.where(use_uniform, uniform, sigma)
        # Reflect off the clean end: σ≈0 teaches nothing and makes the velocity target ill-posed.
        return torch.where(sigma < EPS, 2 * EPS - sigma, sigma).clamp(EPS, 1.0)
