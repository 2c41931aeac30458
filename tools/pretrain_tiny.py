"""Pretrain the tiny LTX-2.3 family on the procedural shapes-and-tones world and write its weights.

    python tools/pretrain_tiny.py --out weights/tiny       # the full plan; then model.tiny_weights=weights/tiny
    python tools/pretrain_tiny.py --smoke --out /tmp/s     # a few steps per stage (CI: every stage, resume, export)

Stages: video VAE (on a designed latent: decoder, encoder, then joint) -> audio VAE + vocoder (mel + multi-resolution
STFT) -> latent corpus -> transformer (flow matching with ltxlab's i2v and a2v modes). ``--stages`` runs a subset
(the two codec stages can run side by side, one process each). Re-running the same command resumes: finished stages
are skipped, an interrupted one continues from its last checkpoint (``--work``, default ``<out>/../.pretrain_work``).
Seeded: the same plan gives the same weights on the same machine and torch build.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from ltxlab.pretrain.stages import STAGES, PretrainPlan, pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights and manifest.json")
    parser.add_argument("--work", type=Path, default=None, help="stage checkpoints (resume from here)")
    parser.add_argument("--smoke", action="store_true", help="a few steps per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (run the codec stages side by side, "
                             "one per process with --threads 1; the weights are written once all have run)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = PretrainPlan.smoke() if args.smoke else PretrainPlan()
    plan = PretrainPlan(**{**plan.__dict__, "seed": args.seed})
    work = args.work or args.out.parent / f".pretrain_work_{args.out.name}"
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    manifest = pretrain(plan, work, args.out, stages)
    print(json.dumps(manifest["stages"], indent=2))
    if "configs" in manifest:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
