"""A LoRA exported by ltxlab, fused by ltx-core's own LoRA code, gives the output of ltxlab's live adapter."""

from __future__ import annotations

from pathlib import Path

import torch
from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, SafetensorsStateDictLoader, apply_loras
from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
from ltx_core.model.transformer.model import LTXModel

from ltxlab.config.schema import LoraConfig
from ltxlab.export import save_lora
from ltxlab.models import ltx23, tiny
from ltxlab.models.forward import set_cross_modulation
from ltxlab.train.lora import attach_lora
from tests.parity.conftest import core_state_from, core_transformer_kwargs
from tests.parity.test_transformer import CASES, make_case, max_diff, ours, reference


def _trained_like_adapter(alpha: float, include_ffn: bool) -> tuple[torch.nn.Module, object]:
    model = tiny.build_transformer(0).eval()
    with torch.no_grad():  # ltx-core fuses into bf16 base weights: make the base exactly bf16-representable
        for param in model.parameters():
            param.copy_(param.bfloat16().float())
    set_cross_modulation(model, "legacy")
    config = attach_lora(model, LoraConfig(rank=4, alpha=alpha, include_ffn=include_ffn), seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # lora_B starts at zero: give it values so the adapter changes the output
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return model, config


def _core(state: dict[str, torch.Tensor]) -> LTXModel:
    core = LTXModel(**core_transformer_kwargs(tiny.transformer_config())).eval().requires_grad_(False)
    core.load_state_dict(state, strict=True)
    return core


def _base_and_fused_core(model: torch.nn.Module, lora_file: Path) -> tuple[LTXModel, LTXModel]:
    """ltx-core's model of ``model``'s base weights, and the same with the exported file fused in by
    ltx-core (its loader with the ComfyUI renaming map, then ``apply_loras`` into bf16 weights, fp32 out)."""
    base_weights = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    empty = LTXModel(**core_transformer_kwargs(tiny.transformer_config()))
    base = _core(core_state_from(empty, base_weights, lambda k: ltx23._convert_transformer(k, {})))
    lora = SafetensorsStateDictLoader().load(str(lora_file), sd_ops=LTXV_LORA_COMFY_RENAMING_MAP)
    weights = base.state_dict()
    bf16 = {k: v.bfloat16() for k, v in weights.items()}
    fused = apply_loras(StateDict(bf16, torch.device("cpu"), 0, {torch.bfloat16}),
                        [LoraStateDictWithStrength(lora, 1.0)], dtype=torch.float32)
    touched = [k for k in weights if not torch.equal(weights[k], fused.sd[k])]
    assert touched and all(".to_" in k or "ff.net." in k for k in touched)  # only the LoRA targets
    return base, _core(fused.sd)


def test_exported_lora_fused_by_ltx_core_matches_the_adapter(tmp_path: Path) -> None:
    # alpha ≠ rank: the file must carry the alpha/rank scale, since ltx-core applies B·A at strength 1.
    model, config = _trained_like_adapter(alpha=8.0, include_ffn=True)
    lora_file, _ = save_lora(model, config, tmp_path)
    base, fused = _base_and_fused_core(model, lora_file)
    for name in ("joint_audio_different_sigma", "a2v_frozen_audio"):
        case = make_case(**CASES[name])
        got = ours(model, case)
        assert max_diff(got, reference(base, case)) > 1e-3  # the adapter does something
        assert max_diff(got, reference(fused, case)) <= 1e-5, name
