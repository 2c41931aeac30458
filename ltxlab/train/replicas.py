"""Replica check: every rank must hold bit-identical LoRA weights after each optimizer step.

Data parallelism is only correct if it is: a rank that silently skips an all-reduce or steps its optimizer on a
different gradient drifts away and the exported LoRA (rank 0's) is no longer what the ranks trained together.
With ``train.replica_check_interval=N`` every N steps each rank hashes its trainable weights; rank 0 records
the digests in ``replicas.jsonl`` and the run stops if they differ. Off by default (hashing a full-size LoRA every
step costs a device-to-host copy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from ltxlab import distributed

REPLICAS_FILE = "replicas.jsonl"


class ReplicasDiverged(RuntimeError):
    pass


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of the trainable parameters' bytes, in name order."""
    digest = hashlib.sha256()
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ReplicaCheck:
    def __init__(self, interval: int, run_dir: Path) -> None:
        self.interval = interval
        self.path = run_dir / REPLICAS_FILE

    def maybe_check(self, module: nn.Module, step: int) -> None:
        if self.interval <= 0 or step % self.interval:
            return
        digests = distributed.all_gather_object(weights_digest(module))
        if distributed.world().is_main:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, "digests": digests}) + "\n")
        if len(set(digests)) > 1:
            raise ReplicasDiverged(f"LoRA weights differ across ranks after step {step}: {digests}")
