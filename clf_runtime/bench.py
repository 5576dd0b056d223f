"""Latency and throughput of an exported classifier (the library behind ``clf-bench``).

Two modes, both per provider and per precision found in the export directory:

- fixed shapes: random token ids of shape (batch, seq_len), every row full length; one
  timed call is one ``run_logits`` (the onnxruntime session only, no tokenization);
- a real text file: one timed call is a full ``predict_proba`` pass over all texts at a batch
  size (tokenization, length sorting, batching and softmax included).

Every timing is preceded by warm-up calls and repeated; each result row describes itself
(engine, versions, provider, precision, threads, batch, seq_len, CPU) so rows from different
runs and machines can be pooled, as onnxruntime's transformer benchmark tools do.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .classifier import Classifier
from .contract import MODEL_FILES, PRECISIONS
from .errors import ClassifierError

__all__ = ["BenchConfig", "environment", "format_table", "plot_rows", "plot_series", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    """What to measure (fields mirror ``clf-bench`` flags)."""

    model: str
    """Export directory or .onnx file (MODEL)."""
    providers: tuple[str, ...] = ("auto",)
    """Provider specs benchmarked one after the other (--providers auto,cpu,cuda)."""
    precisions: tuple[str, ...] | None = None
    """Precisions to measure (--precision); None: every model file in the directory."""
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    """Batch sizes (--batch-sizes)."""
    seq_lens: tuple[int, ...] = (16, 64, 128)
    """Sequence lengths of the fixed-shape mode (--seq-lens); above max_length: skipped."""
    texts: tuple[str, ...] | None = None
    """Real texts (--texts FILE); when given, replaces the fixed-shape mode."""
    warmup: int = 3
    """Untimed calls before each measurement (--warmup)."""
    repeats: int = 20
    """Timed calls per measurement (--repeats)."""
    threads: int | None = None
    """Intra-op threads (--threads); default every CPU."""
    seed: int = 0
    """Seed of the random token ids."""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Versions and machine description copied into every row."""
    import onnxruntime as ort

    return {
        "engine": "clf_runtime",
        "gpt_clf_version": __version__,
        "onnxruntime_version": ort.__version__,
        "numpy_version": np.__version__,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
    }


def _time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def _stats(ms: np.ndarray, texts: int, tokens: int) -> dict[str, float]:
    p50 = float(np.percentile(ms, 50))
    return {
        "p50_ms": p50,
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "texts_per_s": texts / (p50 / 1000.0),
        "tokens_per_s": tokens / (p50 / 1000.0),
    }


def _targets(config: BenchConfig) -> list[tuple[str, str | None]]:
    """(provider spec, precision) pairs to load; precision None means "the file given"."""
    path = Path(config.model)
    if path.is_dir():
        found = [p for p, f in MODEL_FILES.items() if (path / f).is_file()]
        if not found:
            raise ClassifierError(
                f"directory {str(path)!r} holds no model file (expected one of "
                f"{sorted(MODEL_FILES.values())}); export one with `clf-export RUN_DIR --out DIR`"
            )
        wanted = list(config.precisions) if config.precisions else found
        missing = [p for p in wanted if p not in found]
        if missing:
            raise ClassifierError(
                f"precision {missing} requested but {str(path)!r} only has {found}; "
                "pass --precision with some of those"
            )
        precisions: list[str | None] = list(wanted)
    else:
        precisions = list(config.precisions) if config.precisions else [None]
    return [(prov, prec) for prov in config.providers for prec in precisions]


def _fixed_rows(
    clf: Classifier, config: BenchConfig, base: dict[str, Any], skipped: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(config.seed)
    rows = []
    for seq_len in config.seq_lens:
        if seq_len > clf.metadata.max_length:
            skipped.append(
                {
                    **base,
                    "seq_len": seq_len,
                    "reason": f"above max_length {clf.metadata.max_length}",
                }
            )
            continue
        for batch in config.batch_sizes:
            ids = rng.integers(0, 50256, size=(batch, seq_len), dtype=np.int64)  # (B, T)
            lengths = np.full(batch, seq_len, dtype=np.int64)  # (B,)
            ms = _time_calls(
                lambda ids=ids, lengths=lengths: clf.run_logits(ids, lengths),
                config.warmup,
                config.repeats,
            )
            rows.append(
                {
                    **base,
                    "mode": "fixed",
                    "batch": batch,
                    "seq_len": seq_len,
                    **_stats(ms, batch, batch * seq_len),
                }
            )
    return rows


def _text_rows(clf: Classifier, config: BenchConfig, base: dict[str, Any]) -> list[dict[str, Any]]:
    from .tokenizer import encode_batch

    texts = list(config.texts or ())
    tokens = sum(len(t) for t in encode_batch(texts, max_length=clf.metadata.max_length))
    rows = []
    for batch in config.batch_sizes:
        ms = _time_calls(
            lambda batch=batch: clf.predict_proba(texts, batch_size=batch),
            config.warmup,
            config.repeats,
        )
        rows.append(
            {
                **base,
                "mode": "texts",
                "batch": batch,
                "seq_len": None,
                "n_texts": len(texts),
                "mean_tokens": tokens / max(len(texts), 1),
                **_stats(ms, len(texts), tokens),
            }
        )
    return rows


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Measure every (provider, precision) target; return ``{"environment", "rows", "skipped"}``."""
    problems = []
    for name, values in (("batch_sizes", config.batch_sizes), ("seq_lens", config.seq_lens)):
        if not values or any(v < 1 for v in values):
            problems.append(f"{name} must be positive integers, got {list(values)}")
    if config.warmup < 0 or config.repeats < 1:
        problems.append(f"need warmup >= 0 and repeats >= 1, got {config.warmup}, {config.repeats}")
    if config.texts is not None and not config.texts:
        problems.append("the texts file holds no texts")
    if problems:
        raise ClassifierError("invalid benchmark settings: " + "; ".join(problems))
    env = environment()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for provider, precision in _targets(config):
        clf = Classifier.load(
            config.model, providers=provider, threads=config.threads, precision=precision
        )
        base = {
            **env,
            "provider": clf.provider,
            "precision": clf.metadata.precision,
            "threads": config.threads or os.cpu_count(),
            "model_file": clf.model_path.name,
            "warmup": config.warmup,
            "repeats": config.repeats,
        }
        if config.texts is None:
            rows.extend(_fixed_rows(clf, config, base, skipped))
        else:
            rows.extend(_text_rows(clf, config, base))
    if not rows:
        longest = min(s["seq_len"] for s in skipped) if skipped else None
        raise ClassifierError(
            f"nothing was measured: every --seq-lens value ({longest} and up) is above the "
            "model's max_length. Pass --seq-lens with smaller values."
        )
    return {"environment": env, "rows": rows, "skipped": skipped}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of the rows, one line each."""
    header = (
        f"{'provider':<10} {'prec':<5} {'mode':<5} {'batch':>5} {'seq':>5} "
        f"{'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'texts/s':>10} {'tokens/s':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        provider = r["provider"].replace("ExecutionProvider", "")
        seq = "-" if r["seq_len"] is None else str(r["seq_len"])
        lines.append(
            f"{provider:<10} {r['precision']:<5} {r['mode']:<5} {r['batch']:>5} {seq:>5} "
            f"{r['p50_ms']:>9.3f} {r['p90_ms']:>9.3f} {r['p99_ms']:>9.3f} "
            f"{r['texts_per_s']:>10.1f} {r['tokens_per_s']:>11.1f}"
        )
    return "\n".join(lines)


def plot_series(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[int, float]]]]:
    """The lines of the plot in legend order: ``(label, [(batch, p50 ms), ...])``.

    One line per provider / precision / sequence length; ordered by provider, then precision
    as in ``PRECISIONS``, then sequence length as a number (16 before 128), text mode first.
    """
    groups: dict[tuple[str, int, int], list[tuple[int, float]]] = {}
    names: dict[tuple[str, int, int], str] = {}
    for r in rows:
        seq = "texts" if r["seq_len"] is None else f"T={r['seq_len']}"
        provider = r["provider"].replace("ExecutionProvider", "")
        rank = PRECISIONS.index(r["precision"]) if r["precision"] in PRECISIONS else len(PRECISIONS)
        key = (provider, rank, -1 if r["seq_len"] is None else int(r["seq_len"]))
        names[key] = f"{provider} {r['precision']} {seq}"
        groups.setdefault(key, []).append((r["batch"], r["p50_ms"]))
    return [(names[key], sorted(points)) for key, points in sorted(groups.items())]


def plot_rows(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Save a PNG: p50 latency vs batch size, one line per provider/precision/seq_len."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ClassifierError(
            "--plot needs matplotlib: pip install 'gpt-clf[plot]' (or pip install matplotlib)"
        ) from e
    from .atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for label, points in plot_series(rows):
            ax.plot([b for b, _ in points], [ms for _, ms in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("p50 latency per call (ms)")
        ax.set_title("clf_runtime latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
