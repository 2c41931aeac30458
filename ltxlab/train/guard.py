"""The non-finite guard: an optimizer step whose gradients are not finite is skipped — weights, optimizer state
and LR schedule untouched — the same way under every ZeRO stage, counted, logged, and bounded.

ZeRO 1–3 detect the overflow themselves (all ranks agree through their reduction) and then skip both the
optimizer step and the scheduler advance. ZeRO-0 has no such check: here the gradient norm is computed on the
device after backward, read in the one host sync the loop already makes for logging, and on overflow the optimizer
step is replaced by a no-op for that step and the optimizer flagged, so DeepSpeed skips the scheduler exactly as
ZeRO does. The gradients are all-reduced before the check, so every rank takes the same decision.

A skipped step does not count as a training step: the next batch retries it, so the LR schedule stays aligned with
the applied steps. After ``train.max_nonfinite_steps`` skips, or as soon as the LoRA weights themselves are not
finite, training stops with ``TrainingDiverged``; nothing non-finite is ever exported.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

from ltxlab.errors import TrainingDiverged

log = logging.getLogger(__name__)


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def weights_finite(module: nn.Module) -> bool:
    """Whether every trainable (LoRA) weight is finite; one host sync."""
    params = trainable(module)
    return not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def require_finite_weights(module: nn.Module, when: str) -> None:
    if not weights_finite(module):
        raise TrainingDiverged(f"the LoRA weights are not finite {when}; nothing was exported (lower "
                               "optim.learning_rate or check the dataset)")


def _no_step(*args: Any, **kwargs: Any) -> None:
    return None


class NonFiniteGuard:
    def __init__(self, engine: Any, max_skips: int) -> None:
        self.engine, self.max_skips, self.skipped = engine, max_skips, 0
        self._own_check = engine.zero_optimization_stage() == 0
        self._params = trainable(engine.module)

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}  # the budget counts the whole run's skips, across resumes

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = state["skipped"]

    def gradient_norm(self) -> Tensor | None:
        """ZeRO-0: the global gradient norm as a device scalar (no sync); None where ZeRO checks itself."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if not self._own_check or not grads:
            return None
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())

    def hold(self, grad_norm: float | None) -> None:
        """Before the boundary ``engine.step()``: on a non-finite norm, make it a skipped step (ZeRO-0)."""
        if self._own_check and grad_norm is not None and not math.isfinite(grad_norm):
            optimizer = self.engine.optimizer
            optimizer.step = _no_step  # this one step only (DeepSpeed zeroes the gradients after it)
            optimizer.overflow = True  # DeepSpeed then skips the LR scheduler and counts the skip

    def skipped_step(self, step: int, loss: float) -> bool:
        """After the boundary ``engine.step()``: True when it was skipped (counted and logged); raises once the
        budget is spent or the weights themselves are not finite."""
        if self._own_check:
            vars(self.engine.optimizer).pop("step", None)
            self.engine.optimizer.overflow = False
        if self.engine.was_step_applied():
            return False
        self.skipped += 1
        log.warning("step %d: non-finite loss or gradients (loss %s); optimizer step and LR schedule skipped "
                    "(%d of at most %d)", step, loss, self.skipped, self.max_skips)
        require_finite_weights(self.engine.module, f"at step {step}")
        if self.skipped > self.max_skips:
            raise TrainingDiverged(f"training diverged: {self.skipped} optimizer steps had non-finite loss or "
                                   f"gradients (train.max_nonfinite_steps={self.max_skips}), the last at step "
                                   f"{step}; nothing was exported (lower optim.learning_rate or check the dataset)")
        return True
