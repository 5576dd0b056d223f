"""Plot the fixed-shape sweep of ``bench_inference.py``: latency vs batch size and vs length.

Usage: ``python benchmarks/plot.py benchmarks/results/inference.json [--out latency.png]``.
Top row: median latency per call against batch size, one panel per sequence length.
Bottom row: against sequence length, one panel per batch size. Log scale on both axes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

_STYLE = {
    "torch-fp32": ("tab:red", "o"),
    "optimum-fp32": ("tab:blue", "s"),
    "optimum-int8": ("tab:cyan", "s"),
    "ours-fp32": ("tab:green", "^"),
    "ours-int8": ("tab:olive", "^"),
}


def plot_latency(payload: dict[str, Any], out_png: Path) -> Path:
    """Draw ``payload["sweep"]`` rows (engine, batch_size, seq_len, p50_ms) into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    rows = payload.get("sweep") or []
    if not rows:
        raise ValueError("the result has no fixed-shape sweep rows (was it run with --no-sweep?)")
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    batch_sizes = sorted({r["batch_size"] for r in rows})
    seq_lens = sorted({r["seq_len"] for r in rows})
    p50 = {(r["engine"], r["batch_size"], r["seq_len"]): r["p50_ms"] for r in rows}
    ncols = max(len(batch_sizes), len(seq_lens))
    fig, axes = plt.subplots(2, ncols, figsize=(4.2 * ncols, 7.5), squeeze=False)
    for col in range(ncols):
        for row, (fixed_vals, x_vals, x_name) in enumerate(
            ((seq_lens, batch_sizes, "batch size"), (batch_sizes, seq_lens, "sequence length"))
        ):
            ax = axes[row][col]
            if col >= len(fixed_vals):
                ax.axis("off")
                continue
            fixed = fixed_vals[col]
            for eng in engines:
                key = (
                    (lambda x, f=fixed, e=eng: (e, x, f))
                    if row == 0
                    else (lambda x, f=fixed, e=eng: (e, f, x))
                )
                ys = [p50.get(key(x)) for x in x_vals]
                pts = [(x, y) for x, y in zip(x_vals, ys, strict=True) if y is not None]
                if not pts:
                    continue
                color, marker = _STYLE.get(eng, (None, "x"))
                ax.plot(*zip(*pts, strict=True), marker=marker, color=color, label=eng)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(x_vals, [str(x) for x in x_vals])
            ax.set_xlabel(x_name)
            ax.set_ylabel("median latency per call (ms)")
            ax.set_title(f"seq len {fixed}" if row == 0 else f"batch {fixed}")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    env = payload.get("environment", {})
    threads = env.get("settings", {}).get("threads")
    fig.suptitle(
        f"GPT-2 {env.get('settings', {}).get('preset', '')} classifier, fixed shapes, CPU "
        f"{env.get('cpu', {}).get('model', '')}, {threads} threads, {env.get('date', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Plot the latency sweep of bench_inference.py")
    ap.add_argument("result", type=Path, help="inference JSON written by bench_inference.py")
    ap.add_argument(
        "--out", type=Path, default=None, help="PNG path (default: latency.png beside the JSON)"
    )
    args = ap.parse_args(argv)
    try:
        payload = common.load_json(args.result)
        out = plot_latency(payload, args.out or args.result.with_name("latency.png"))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
