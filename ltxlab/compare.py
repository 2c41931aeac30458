"""``python -m ltxlab.compare PATH… [--wandb ENTITY/PROJECT --group G] [--out DIR]``: compare runs.

PATH is a run directory or a folder of them (a sweep directory). Prints one row per run — swept values → final
and best held-out ``val/loss``, final train loss (mean of the last 10 steps), steps, wall time, samples/s,
status — sorted by final ``val/loss``, and writes ``compare.csv`` and ``compare.png`` (held-out curves, a panel
per swept key) into ``--out`` (default: the first PATH). ``--wandb`` reads the runs of a W&B project (optionally
one group) through the W&B API instead of, or besides, local folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ltxlab.plots import COMPARE_PLOT, write_compare_plot
from ltxlab.sweep import read_run_info
from ltxlab.train.metrics import HELDOUT_FILE, read_metrics

COMPARE_CSV = "compare.csv"
TRAIN_LOSS_WINDOW = 10  # steps averaged for "final train loss": one step's loss is a single noisy draw


@dataclass
class RunRecord:
    name: str
    swept: dict[str, Any]
    status: str
    train: pd.DataFrame  # per step: step, loss, samples_per_s, step_time, time
    heldout: pd.DataFrame  # per evaluation: step, val/loss, …


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("run_info.json", "metrics.jsonl", "error.json", ".hydra"))


def find_run_dirs(path: Path) -> list[Path]:
    if is_run_dir(path) and not any(is_run_dir(p) for p in path.iterdir() if p.is_dir()):
        return [path]
    return sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), key=_natural)


def _natural(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def _status(run_dir: Path, info_status: str | None) -> str:
    if info_status:
        return info_status
    if (run_dir / "error.json").exists():
        return "failed"
    return "completed" if (run_dir / "result.json").exists() else "incomplete"


def load_run(run_dir: Path) -> RunRecord:
    info = read_run_info(run_dir)
    return RunRecord(name=info.name if info else run_dir.name, swept=dict(info.swept) if info else {},
                     status=_status(run_dir, info.status if info else None),
                     train=pd.DataFrame(read_metrics(run_dir)), heldout=pd.DataFrame(read_metrics(run_dir,
                                                                                                   HELDOUT_FILE)))


def load_wandb_runs(project: str, group: str | None) -> list[RunRecord]:
    """Runs of a W&B project (``entity/project``), optionally one group, through the public API (online)."""
    import wandb

    filters = {"group": group} if group else {}
    records = []
    for run in wandb.Api().runs(project, filters=filters):
        history = pd.DataFrame(run.scan_history())
        step_col = "_step" if "_step" in history else "step"
        history = history.rename(columns={step_col: "step"})
        train = history.dropna(subset=["loss"]) if "loss" in history else pd.DataFrame()
        heldout = history.dropna(subset=["val/loss"]) if "val/loss" in history else pd.DataFrame()
        status = {"finished": "completed", "crashed": "failed", "failed": "failed"}.get(run.state, run.state)
        records.append(RunRecord(run.name, dict(run.config.get("sweep") or {}), status, train, heldout))
    return records


def summarise(run: RunRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run.name, **run.swept}
    val = run.heldout["val/loss"] if "val/loss" in run.heldout else pd.Series(dtype=float)
    row["final val/loss"] = val.iloc[-1] if len(val) else None
    row["best val/loss"] = val.min() if len(val) else None
    train = run.train
    if "loss" in train and len(train):
        row["final train loss"] = train["loss"].tail(TRAIN_LOSS_WINDOW).mean()
        row["steps"] = int(train["step"].iloc[-1])
        if "time" in train and "step_time" in train:
            row["time (s)"] = train["time"].iloc[-1] - train["time"].iloc[0] + train["step_time"].iloc[0]
        if "samples_per_s" in train:
            row["samples/s"] = train["samples_per_s"].mean()
    row["status"] = run.status
    return row


def comparison_table(runs: list[RunRecord]) -> pd.DataFrame:
    table = pd.DataFrame([summarise(r) for r in runs])
    return table.sort_values("final val/loss", na_position="last", kind="stable").reset_index(drop=True)


def swept_keys(runs: list[RunRecord]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.swept if k not in keys]
    return keys


def compare(runs: list[RunRecord], out_dir: Path) -> tuple[pd.DataFrame, Path, Path]:
    table = comparison_table(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / COMPARE_CSV
    table.to_csv(csv, index=False)
    keys = swept_keys(runs)
    swept = pd.DataFrame([{"run": r.name, **r.swept} for r in runs]).set_index("run")
    curves = {r.name: r.heldout for r in runs if "val/loss" in r.heldout}
    png = write_compare_plot(curves, swept, keys, out_dir / COMPARE_PLOT)
    return table, csv, png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ltxlab.compare",
        description="Compare runs: a table of swept values → final/best held-out val/loss, final train loss, steps, "
                    "time and samples/s (printed and compare.csv), and held-out curves per swept key (compare.png).")
    parser.add_argument("paths", nargs="*", type=Path, help="run directories or sweep directories")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project")
    parser.add_argument("--group", help="with --wandb: only this W&B group (one sweep)")
    parser.add_argument("--out", type=Path, help="where compare.csv and compare.png go (default: first PATH)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        parser.error("give at least one PATH or --wandb")
    runs = []
    for path in args.paths:
        if not path.is_dir():
            parser.error(f"{path} is not a directory")
        runs += [load_run(d) for d in find_run_dirs(path)]
    if args.wandb:
        runs += load_wandb_runs(args.wandb, args.group)
    if not runs:
        print("error: no runs found", file=sys.stderr)
        return 2
    out_dir = args.out or (args.paths[0] if args.paths else Path.cwd())
    table, csv, png = compare(runs, out_dir)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format",
                           "{:.4g}".format):
        print(table.to_string(index=False))
    print(json.dumps({"csv": str(csv), "plot": str(png)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
