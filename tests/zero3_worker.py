"""One rank of the ZeRO-3 test (``torchrun --nproc_per_node=2 tests/zero3_worker.py OUT_DIR [CHECKPOINT_DIR]``):
build the tiny transformer under ``deepspeed.zero.Init`` (the trainer's path), attach LoRA, train a few steps, and
write what this rank holds of the frozen base to ``OUT_DIR/rank<N>.json``; with CHECKPOINT_DIR, also load
``model=ltx23`` weights from that diffusers-format folder shard by shard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import yaml

from ltxlab.config import CONF_DIR
from ltxlab.config.schema import LoraConfig, OptimConfig
from ltxlab.export import lora_state_dict
from ltxlab.models import tiny
from ltxlab.models.loader import load_transformer
from ltxlab.models.spec import ModelConfig
from ltxlab.train.engine import build_engine, gather_trainable, partitioned_init
from ltxlab.train.lora import attach_lora
from ltxlab.train.step import compute_loss, predict
from tests.test_export import random_inputs


def main(out_dir: Path) -> None:
    ds_base = yaml.safe_load((CONF_DIR / "deepspeed" / "zero3.yaml").read_text())
    # Every tiny weight is below DeepSpeed's persistence threshold (1e5 elements), which would keep it whole on
    # every rank after the first forward; LTX-2.3's block weights (≥ 4096×2048) are far above it.
    ds_base["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    optim = OptimConfig(learning_rate=1e-2, number_of_steps=100)
    transformer = load_transformer(ModelConfig(), init_context=partitioned_init(ds_base, optim))
    frozen = [p for p in transformer.parameters()]
    full = sum(p.ds_numel for p in frozen)
    local = sum(p.ds_tensor.numel() for p in frozen)
    largest_local = max(p.ds_tensor.numel() for p in frozen)
    largest_full = max(p.ds_numel for p in frozen)
    attach_lora(transformer, LoraConfig(rank=4), seed=0)
    engine = build_engine(transformer, optim, ds_base)
    inputs, batch = random_inputs(engine.module)
    losses = []
    for _ in range(3):
        loss = compute_loss(*predict(engine, inputs, batch), inputs).total
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    # After training, still no rank holds the full base: every frozen weight is a shard between forwards.
    resident = sum(p.data.numel() for p in engine.module.parameters() if not p.requires_grad)
    gather_trainable(engine.module)  # what the trainer does before the export
    exported = lora_state_dict(engine.module)
    export_numel = sum(v.numel() for v in exported.values())
    trained_b = max(float(v.abs().max()) for k, v in exported.items() if "lora_B" in k)  # zero-initialised
    expected_numel = sum(p.ds_numel for p in engine.module.parameters() if p.requires_grad)
    loaded = check_real_weights_path(out_dir, ds_base, optim) if len(sys.argv) > 2 else None
    result = {"loaded_equal": loaded, "rank": engine.global_rank, "world": engine.world_size, "full_numel": full,
              "local_numel": local,
              "largest_full": largest_full, "largest_local": largest_local, "resident_after": resident,
              "losses": losses, "export_numel": export_numel, "expected_lora_numel": expected_numel,
              "trained_b": trained_b,
              "finite": all(math.isfinite(x) for x in losses)}
    (out_dir / f"rank{engine.global_rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()


def check_real_weights_path(out_dir: Path, ds_base: dict, optim: OptimConfig) -> bool:
    """model=ltx23 from a diffusers-format folder (the tiny weights saved by the test): streamed into the shards,
    equal to the saved weights when gathered."""
    import deepspeed

    cfg = ModelConfig(name="ltx23", checkpoint_dir=sys.argv[2])
    model = load_transformer(cfg, init_context=partitioned_init(ds_base, optim))
    expected = tiny.build_transformer(0).state_dict()
    params = dict(model.named_parameters())
    assert all(p.ds_tensor.numel() < p.ds_numel for p in params.values() if p.ds_numel > 2)
    with deepspeed.zero.GatheredParameters(list(params.values())):
        return all(torch.equal(p.data, expected[k]) for k, p in params.items())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
