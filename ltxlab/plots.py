"""Loss plots: ``loss.png`` per run (train + held-out) and ``compare.png`` across runs (one panel per swept key).

matplotlib's object API (``Figure``) with the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from ltxlab.sweep import format_value
from ltxlab.train.metrics import HELDOUT_FILE, read_metrics

LOSS_PLOT = "loss.png"
COMPARE_PLOT = "compare.png"
MAX_LEGEND = 6  # more distinct values than this in a panel: a colour bar instead of a legend


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
        colours = _colours(fig, ax, key, values)
        shown: set[object] = set()
        for name, curve in curves.items():
            value = value_of(name)
            if value is None:  # a run without this key (or no swept keys at all): its own labelled curve
                ax.plot(curve["step"], curve["val/loss"], "o--", color="grey" if key else None, label=name)
                continue
            label = None if value in shown or len(values) > MAX_LEGEND else f"{key}={format_value(value)}"
            shown.add(value)
            ax.plot(curve["step"], curve["val/loss"], "o-", color=colours[value], alpha=0.8, label=label)
        ax.set_title(f"held-out loss by {key}" if key else "held-out loss")
        ax.set_xlabel("step")
        ax.set_ylabel("val/loss")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if labels:
            order = {f"{key}={format_value(v)}": i for i, v in enumerate(values)}  # legend in value order
            pairs = sorted(zip(handles, labels, strict=True), key=lambda hl: order.get(hl[1], len(order)))
            ax.legend([h for h, _ in pairs], [lab for _, lab in pairs], fontsize="small")
    fig.savefig(path, dpi=110)
    return path


def _colours(fig: Figure, ax: Any, key: str | None, values: list[object]) -> dict[object, Any]:
    """A colour per value: distinct colours and a legend for a few values, a colour scale with a colour bar for
    many numeric ones (log scale for learning rates)."""
    numeric = all(isinstance(v, int | float) for v in values)
    if len(values) <= MAX_LEGEND or not numeric:
        return {v: f"C{i % 10}" for i, v in enumerate(values)}
    low, high = float(min(values)), float(max(values))  # type: ignore[arg-type]
    log_scale = low > 0 and key is not None and ("lr" in key or "learning_rate" in key)
    norm = LogNorm(low, high) if log_scale else Normalize(low, high)
    mapper = ScalarMappable(norm=norm, cmap="viridis")
    fig.colorbar(mapper, ax=ax, label=key)
    return {v: mapper.to_rgba(float(v)) for v in values}  # type: ignore[arg-type]


def _plain(value: object) -> object:
    """Python scalars from pandas' numpy ones, and 8.0 → 8 (a column with gaps is float in pandas)."""
    value = value.item() if hasattr(value, "item") else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _sort_key(value: object) -> tuple[int, float | str]:
    return (0, float(value)) if isinstance(value, int | float) else (1, str(value))
