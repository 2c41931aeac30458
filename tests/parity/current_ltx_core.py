"""Current ltx-core's A↔V cross-attention modulation, as a reference computation on ltx-core 1.0.0's model.

PyPI ``ltx-core==1.0.0`` predates the 2026-05-28 change to ``_prepare_cross_attention_timestep``
(``ltx_core/model/transformer/transformer_args.py`` in Lightricks/LTX-2 at HEAD): there the scale/shift AdaLN
reads the modality's own per-token timesteps and only the gate AdaLN reads the other modality's σ. This module
re-states that rule on the 1.0.0 preprocessor (everything else in the call stays ltx-core's own code).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor, TransformerArgs


class CurrentCrossModulationPreprocessor(MultiModalTransformerArgsPreprocessor):
    def prepare(self, modality: Modality, cross_modality: Modality | None = None) -> TransformerArgs:
        args = super().prepare(modality, cross_modality)
        if cross_modality is None:
            return args
        multiplier = self.simple_preprocessor.timestep_scale_multiplier
        batch = args.x.shape[0]
        dtype = modality.latent.dtype
        scale_shift, _ = self.cross_scale_shift_adaln((modality.timesteps * multiplier).flatten(), hidden_dtype=dtype)
        gate_factor = self.av_ca_timestep_scale_multiplier / multiplier
        gate, _ = self.cross_gate_adaln((cross_modality.sigma * multiplier * gate_factor).flatten(),
                                        hidden_dtype=dtype)
        return replace(args, cross_scale_shift_timestep=scale_shift.view(batch, -1, scale_shift.shape[-1]),
                       cross_gate_timestep=gate.view(batch, -1, gate.shape[-1]))


def with_current_cross_modulation(model: LTXModel) -> LTXModel:
    """A copy of ``model`` whose preprocessors follow current ltx-core's cross-modulation rule."""
    current = copy.deepcopy(model)
    for name in ("video_args_preprocessor", "audio_args_preprocessor"):
        getattr(current, name).__class__ = CurrentCrossModulationPreprocessor
    return current


def sigma_as_tensor(value: float, batch: int) -> torch.Tensor:
    return torch.full((batch,), value)
