"""``clf-predict --engine ray``: score files on a local Ray or a cluster, end to end.

:func:`run_ray_predict` checks everything it can before starting anything (model path,
output directory, every input row), connects to or starts Ray, sizes the actor pool against
the CPUs the cluster has, probes the model where an actor would load it, then runs
:mod:`clf_runtime.ray`'s pipeline and returns the manifest written beside the output.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ClassifierError
from .paths import check_model_path, check_output_path
from .ray import (
    OUTPUT_FORMATS,
    expand_inputs,
    need_ray,
    plan_inputs,
    predict_dataset,
    read_dataset,
    write_dataset,
)

__all__ = ["RayPredictConfig", "run_ray_predict"]


@dataclass(frozen=True)
class RayPredictConfig:
    """What ``clf-predict --engine ray`` does (fields mirror its flags)."""

    model: str
    """Export directory or .onnx file (MODEL), readable at the same path on every node."""
    inputs: tuple[str, ...]
    """Files, folders or globs (--input, repeatable)."""
    output: str
    """Directory to write (--output)."""
    output_format: str = "parquet"
    """parquet or jsonl (--output-format)."""
    overwrite: bool = False
    """Replace an existing, non-empty --output directory (--overwrite)."""
    text_col: str | None = None
    """Text column (--text-col); default: found by the shared column rule."""
    id_col: str | None = None
    """Column copied into the output as ``id`` (--id-col)."""
    input_format: str = "auto"
    """auto (by suffix), lines, jsonl, csv, tsv or parquet (--format)."""
    no_header: bool = False
    """CSV/TSV input has no header row (--no-header)."""
    include_text: bool = False
    """Copy each text into the output (--include-text)."""
    workers: int | None = None
    """Actors (--workers); default 1 on a local Ray, one per node on a cluster."""
    threads: int | None = None
    """onnxruntime threads = CPUs reserved per actor (--threads); default CPUs / workers."""
    gpus_per_worker: float = 0.0
    """GPUs reserved per actor (--gpus-per-worker)."""
    address: str | None = None
    """Ray cluster address (--address); default: start a local Ray."""
    rows_per_call: int = 1024
    """Rows handed to an actor per call (--chunk-size)."""
    batch_size: int = 32
    """Most texts per model call (--batch-size)."""
    max_batch_tokens: int = 8192
    """Most padded tokens per model call (--max-batch-tokens)."""
    providers: str = "auto"
    """onnxruntime providers of every actor (--providers)."""
    precision: str | None = None
    """Model file of an export directory (--precision)."""
    quiet: bool = False
    """No progress bars, no summary (--quiet)."""


def _local_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _plan(config: RayPredictConfig, ray: Any, started_here: bool) -> tuple[int, int]:
    """(workers, threads per worker), checked against the CPUs the cluster has."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    node_cpus = [int(n["Resources"]["CPU"]) for n in nodes] or [_local_cpus()]
    total = sum(node_cpus)
    workers = config.workers or (1 if started_here else len(node_cpus))
    threads = config.threads or max(1, min(max(node_cpus), total // workers))
    if threads > max(node_cpus) or workers * threads > total:
        raise ClassifierError(
            f"{workers} workers x {threads} threads need {workers * threads} CPUs, "
            f"{threads} on one node; the Ray cluster has {total} CPUs (largest node: "
            f"{max(node_cpus)}). Lower --workers or --threads."
        )
    return workers, threads


def _probe(model: str, providers: str, precision: str | None) -> dict[str, Any]:
    """Load the model where an actor would; report what runs (and fail early if it cannot)."""
    from .classifier import Classifier

    clf = Classifier.load(model, providers=providers, threads=1, precision=precision)
    return {
        "model_file": str(clf.model_path),
        "precision": clf.metadata.precision,
        "provider": clf.provider,
        "labels": list(clf.labels),
    }


def _unwrap(error: BaseException) -> BaseException:
    """Our own error inside Ray's wrappers (``RayTaskError.cause``, ``__cause__``), if any."""
    current: BaseException | None = error
    for _ in range(20):
        if current is None:
            break
        if isinstance(current, ClassifierError) and type(current).__module__.startswith(
            "clf_runtime"
        ):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return error


def run_ray_predict(config: RayPredictConfig, *, log: Any = None) -> dict[str, Any]:
    """Score every row of ``config.inputs`` on Ray and write ``config.output``; return the
    manifest (inputs, model, workers, threads, rows, seconds, texts/s).

    Connects to ``config.address``, or uses the Ray already initialized in this process, or
    starts a local Ray with every CPU of this machine (and stops it at the end). ``log`` is
    called with one-line progress messages (the CLI prints them to stderr).
    """
    say = log or (lambda message: None)
    problems = []
    if config.workers is not None and config.workers < 1:
        problems.append(f"--workers must be >= 1, got {config.workers}")
    if config.threads is not None and config.threads < 1:
        problems.append(f"--threads must be >= 1, got {config.threads}")
    if config.gpus_per_worker < 0:
        problems.append(f"--gpus-per-worker must be >= 0, got {config.gpus_per_worker}")
    if config.output_format not in OUTPUT_FORMATS:
        problems.append(f"--output-format must be one of {OUTPUT_FORMATS}")
    if problems:
        raise ClassifierError("; ".join(problems))
    if config.address is None:  # a shared model path on a cluster may exist only on the nodes
        check_model_path(config.model)
    check_output_path(config.output, flag="--output", kind="dir", overwrite=config.overwrite)
    files = expand_inputs(config.inputs)
    splits = plan_inputs(
        files,
        rows_per_split=config.rows_per_call,
        input_format=config.input_format,
        text_col=config.text_col,
        id_col=config.id_col,
        no_header=config.no_header,
    )
    total = sum(split.rows for split in splits)

    ray = need_ray()
    started_here = False
    if not ray.is_initialized():
        if config.address is None:
            ray.init(
                num_cpus=_local_cpus(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=not config.quiet,
            )
        else:
            ray.init(address=config.address, logging_level=logging.WARNING)
        started_here = True
    context = ray.data.DataContext.get_current()
    saved_bars = context.enable_progress_bars
    try:
        context.enable_progress_bars = not config.quiet
        workers, threads = _plan(config, ray, started_here and config.address is None)
        probe = ray.remote(num_cpus=0, num_gpus=config.gpus_per_worker or None)(_probe)
        try:
            info = ray.get(probe.remote(config.model, config.providers, config.precision))
        except Exception as e:
            raise _unwrap(e) from None
        say(
            f"model {info['model_file']} ({info['precision']}) on {info['provider']}; "
            f"{total:,} texts in {len(files)} file(s); {workers} worker(s) x {threads} thread(s)"
        )
        ds = read_dataset(splits, read_tasks=2 * workers)
        ds = predict_dataset(
            ds,
            config.model,
            workers=workers,
            threads=threads,
            gpus_per_worker=config.gpus_per_worker,
            rows_per_call=config.rows_per_call,
            batch_size=config.batch_size,
            max_batch_tokens=config.max_batch_tokens,
            providers=config.providers,
            precision=config.precision,
            keep_text=config.include_text,
        )
        manifest = {
            "engine": "ray",
            "inputs": files,
            "model": info,
            "workers": workers,
            "threads_per_worker": threads,
            "gpus_per_worker": config.gpus_per_worker,
            "config": asdict(config),
        }
        try:
            record = write_dataset(
                ds,
                config.output,
                output_format=config.output_format,
                overwrite=config.overwrite,
                manifest=manifest,
                expected_rows=total,
            )
        except Exception as e:
            cause = _unwrap(e)
            if isinstance(cause, ClassifierError):
                raise cause from None
            inner = getattr(e, "cause", None) or e
            first = (str(inner).strip().splitlines() or [""])[0]
            raise ClassifierError(
                f"the Ray job failed: {type(inner).__name__}: {first} (Ray's logs have the "
                "details; nothing was written)"
            ) from e
        say(
            f"scored {record['rows']:,} texts in {record['seconds']:.1f} s "
            f"({record['texts_per_s']:,} texts/s) -> {config.output} ({record['files']} "
            f"{config.output_format} file(s))"
        )
        return record
    finally:
        context.enable_progress_bars = saved_bars
        if started_here:
            ray.shutdown()
