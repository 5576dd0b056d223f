"""Loss and accuracy curves (train vs validation per epoch) as PNGs, via matplotlib's Agg.

Each figure has a title, integer epoch ticks and, when known, the best epoch marked: the
epoch whose weights were kept (lowest validation loss), which is what ``metrics.json`` and
every export describe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clf_runtime.atomic import atomic_path
from clf_runtime.contract import ACCURACY_PNG, LOSS_PNG

__all__ = ["history_figure", "plot_history"]

# One figure per row: (file name, history key of the curve, y-axis label).
_FIGURES = (
    (LOSS_PNG, "loss", "cross-entropy loss"),
    (ACCURACY_PNG, "accuracy", "accuracy"),
)


def history_figure(
    history: Sequence[dict[str, Any]],
    key: str,
    *,
    ylabel: str,
    best_epoch: int | None = None,
    title: str | None = None,
) -> Any:
    """A matplotlib ``Figure`` of ``train_<key>`` and ``val_<key>`` per epoch of ``history``.

    ``best_epoch`` draws a dashed vertical line labelled "best epoch N (weights kept)".
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: never open a window, never need one
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [int(h["epoch"]) for h in history]
    train = [h[f"train_{key}"] for h in history]
    val = [h[f"val_{key}"] for h in history]
    fig = Figure(figsize=(5, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, train, marker="o", label="train")
    if any(v is not None for v in val):
        ax.plot(epochs, [float("nan") if v is None else v for v in val], marker="o", label="val")
    if best_epoch is not None:
        ax.axvline(
            best_epoch,
            color="gray",
            linestyle="--",
            label=f"best epoch {best_epoch} (weights kept)",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_title(title or f"{ylabel} per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_history(
    run_dir: Path, history: Sequence[dict[str, Any]], *, best_epoch: int | None = None
) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``run_dir``; return their paths.

    The titles name the run directory; ``best_epoch`` (the epoch whose weights were kept) is
    marked on both.
    """
    out = []
    for name, key, ylabel in _FIGURES:
        path = Path(run_dir) / name
        title = f"{ylabel} per epoch: {Path(run_dir).name}"
        fig = history_figure(history, key, ylabel=ylabel, best_epoch=best_epoch, title=title)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        out.append(path)
    return out
