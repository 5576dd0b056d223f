"""Loss and accuracy curves (train vs validation per epoch) as PNGs, via matplotlib's Agg."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clf_runtime.atomic import atomic_path
from clf_runtime.contract import ACCURACY_PNG, LOSS_PNG

__all__ = ["plot_history"]

# One figure per row: (file name, history key of the curve, y-axis label).
_FIGURES = (
    (LOSS_PNG, "loss", "cross-entropy loss"),
    (ACCURACY_PNG, "accuracy", "accuracy"),
)


def _plot(path: Path, epochs: list[int], train: list[Any], val: list[Any], ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: never open a window, never need one
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, train, marker="o", label="train")
    if any(v is not None for v in val):
        ax.plot(epochs, [float("nan") if v is None else v for v in val], marker="o", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_history(run_dir: Path, history: Sequence[dict[str, Any]]) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``run_dir``; return their paths."""
    epochs = [int(h["epoch"]) for h in history]
    out = []
    for name, key, ylabel in _FIGURES:
        path = Path(run_dir) / name
        train = [h[f"train_{key}"] for h in history]
        _plot(path, epochs, train, [h[f"val_{key}"] for h in history], ylabel)
        out.append(path)
    return out
