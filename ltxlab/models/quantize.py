"""Frozen-base precision: weight-only int8 / fp8 storage of the transformer blocks' Linear layers (torchao).

Why torchao (evaluated against optimum-quanto 0.2.7 on the tiny LTX-2.3 transformer with a peft LoRA on top, CPU):
both train and give the same error against fp32 (relative mean abs error of the output 1.07e-2 torchao, 1.10e-2
quanto, bf16 alone 0.89e-2), but torchao was faster (84 vs 96 ms/step), is maintained (quanto is in maintenance mode,
last release 2025-03), and peft has a dedicated LoRA layer for it (`TorchaoLoraLinear`, dispatched automatically,
merge/unmerge supported) while quanto layers are wrapped generically. LoRA weights are created by peft over the
quantized layers and kept fp32 (`ltxlab.train.lora`), so exports are the same files as over a bf16 base.

Only Linear layers inside `transformer_blocks` are quantized: they hold >99% of the 19B weights; the small input/
output projections, AdaLN and timestep embedders stay in `model.dtype`.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from ltxlab.errors import ConfigError

log = logging.getLogger(__name__)

UNQUANTIZED = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUANTIZED = ("int8", "fp8")
PRECISIONS = (*UNQUANTIZED, *QUANTIZED)
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: e4m3 tensor cores


# Import-time warnings of the optional backends about kernels this machine lacks (torchao's CUDA / mxfp8 builds
# on CPU, bitsandbytes' CPU 4-bit kernels, the torch.compile enum notices torchao triggers, diffusers' torchao
# checkpoint-loading hook): not errors, and printed by every process that imports diffusers.
_NOISY_ON_IMPORT = ("torchao", "bitsandbytes", "torch.utils._pytree", "diffusers.quantizers.torchao")


def quiet_optional_backends() -> None:
    """Call before the first ``diffusers`` / ``peft`` import (they import torchao and bitsandbytes)."""
    for name in _NOISY_ON_IMPORT:
        logging.getLogger(name).setLevel(logging.ERROR)


def _quiet_torchao() -> None:
    quiet_optional_backends()


def _torchao_config(precision: str):
    _quiet_torchao()
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    if precision == "int8":
        return Int8WeightOnlyConfig()  # symmetric, one scale per output channel
    # e4m3, one scale per output channel; the matmul runs in model.dtype after dequantization, so LoRA backward
    # through the frozen weight is the same as for int8.
    return Float8WeightOnlyConfig()


def check_fp8_device(device: torch.device | None = None) -> None:
    """fp8 weights need a CUDA GPU of compute capability ≥ 8.9; everything else gets a clear config error."""
    if not torch.cuda.is_available():
        raise ConfigError("model.base_precision=fp8 needs a CUDA GPU (compute capability ≥ 8.9); "
                          "use int8 on this machine")
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise ConfigError(f"model.base_precision=fp8 needs compute capability ≥ 8.9; this GPU has "
                          f"{capability[0]}.{capability[1]}: use int8")


def quantizable_linears(module: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    """The plain Linear layers of ``module`` by qualified name, except names ending in one of ``skip``."""
    return {name: m for name, m in module.named_modules()
            if type(m) is nn.Linear and not name.endswith(skip)}


def quantize_linears(module: nn.Module, precision: str, key: str, skip: tuple[str, ...] = ()) -> int:
    """Quantize the Linear weights of ``module`` in place to ``precision`` (the config ``key`` names errors);
    returns how many layers were quantized (0 for fp32/bf16)."""
    if precision in UNQUANTIZED:
        return 0
    if precision not in QUANTIZED:
        raise ConfigError(f"{key}={precision!r} is not supported; use one of {list(PRECISIONS)}")
    if precision == "fp8":
        check_fp8_device()
    from torchao.quantization import quantize_

    targets = {id(m) for m in quantizable_linears(module, skip).values()}
    quantize_(module, _torchao_config(precision), filter_fn=lambda m, _name: id(m) in targets)
    for layer in quantizable_linears(module, skip).values():
        _weight_as_buffer(layer)
    log.info("%s: %d Linear layers stored as %s", key, len(targets), precision)
    return len(targets)


def _weight_as_buffer(layer: nn.Linear) -> None:
    """A frozen quantized weight is state, not a parameter: as a buffer, ``.to()`` moves it without tensor swaps
    (which fail on torchao tensors once DeepSpeed holds weak references to them), DeepSpeed neither broadcasts nor
    casts it, and optimizers never see it. ``layer.weight`` reads the same for nn.Linear and peft."""
    weight = layer._parameters.pop("weight", None)
    if weight is not None and is_quantized(weight.data):
        layer.register_buffer("weight", weight.data)
    elif weight is not None:
        layer._parameters["weight"] = weight


def quantize_base(transformer: nn.Module, precision: str) -> nn.Module:
    """Quantize the frozen transformer blocks' Linear weights in place (no-op for fp32/bf16). Call before LoRA
    is attached: peft then wraps each quantized layer in its torchao LoRA layer."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if blocks is None:
        raise TypeError(f"{type(transformer).__name__} has no transformer_blocks to quantize")
    if quantize_linears(blocks, precision, "model.base_precision"):
        # peft warns that its torchao LoRA layer cannot merge without a re-quantization recipe: LoRA is trained
        # and exported as separate tensors here, never merged into the quantized base.
        warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated without", category=UserWarning)
    return transformer


def is_quantized(weight: torch.Tensor) -> bool:
    _quiet_torchao()
    from torchao.utils import TorchAOBaseTensor

    return isinstance(weight, TorchAOBaseTensor)


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers, quantized tensors counted by their packed storage."""
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
        if is_quantized(data):
            names, _ = data.__tensor_flatten__()
            total += sum(getattr(data, n).numel() * getattr(data, n).element_size() for n in names)
        else:
            total += data.numel() * data.element_size()
    return total
