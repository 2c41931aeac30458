"""Loss plots: ``loss.png`` per run (train + held-out) and ``compare.png`` across runs (one panel per swept key).

matplotlib's object API (``Figure``) with the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ltxlab.train.metrics import HELDOUT_FILE, read_metrics

LOSS_PLOT = "loss.png"
COMPARE_PLOT = "compare.png"


def smoothed(values: pd.Series, window: int) -> pd.Series:
    return values.rolling(window, min_periods=1, center=True).mean()


def write_loss_plot(run_dir: Path) -> Path | None:
    """Train loss (raw and smoothed) and held-out ``val/loss`` against steps, in ``run_dir/loss.png``."""
    train = pd.DataFrame(read_metrics(run_dir))
    heldout = pd.DataFrame(read_metrics(run_dir, HELDOUT_FILE))
    if train.empty:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(train["step"], train["loss"], color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss (step)")
    window = max(1, len(train) // 20)
    ax.plot(train["step"], smoothed(train["loss"], window), color="tab:blue", label=f"train loss ({window}-step mean)")
    if not heldout.empty:
        ax.plot(heldout["step"], heldout["val/loss"], "o-", color="tab:red", label="held-out val/loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    path = run_dir / LOSS_PLOT
    fig.savefig(path, dpi=110)
    return path


def write_compare_plot(curves: dict[str, pd.DataFrame], swept: pd.DataFrame, keys: Sequence[str],
                       path: Path) -> Path:
    """Held-out loss curves of every run; one panel per swept key, runs coloured by that key's value.

    ``curves``: run name → frame with ``step`` and ``val/loss``; ``swept``: one row per run (index = run name)
    with a column per swept key. Without swept keys there is one panel, a curve per run.
    """
    panels = list(keys) or [None]
    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    curves = {name: curve for name, curve in curves.items() if not curve.empty}
    for ax, key in zip(axes, panels, strict=True):
        def value_of(name: str, key: str | None = key) -> object:
            value = swept.at[name, key] if key and name in swept.index and key in swept else None
            return None if pd.isna(value) else _plain(value)

        values = sorted({value_of(n) for n in curves} - {None}, key=_sort_key)
        colours = {v: f"C{i % 10}" for i, v in enumerate(values)}
        shown: set[object] = set()
        for name, curve in curves.items():
            value = value_of(name)
            if value is None:  # a run without this key (or no swept keys at all): its own labelled curve
                ax.plot(curve["step"], curve["val/loss"], "o--", color="grey" if key else None, label=name)
                continue
            label = None if value in shown else f"{key}={value}"
            shown.add(value)
            ax.plot(curve["step"], curve["val/loss"], "o-", color=colours[value], alpha=0.8, label=label)
        ax.set_title(f"held-out loss by {key}" if key else "held-out loss")
        ax.set_xlabel("step")
        ax.set_ylabel("val/loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    return path


def _plain(value: object) -> object:
    """8.0 → 8 (a column with gaps is float in pandas), other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _sort_key(value: object) -> tuple[int, float | str]:
    return (0, float(value)) if isinstance(value, int | float) else (1, str(value))
