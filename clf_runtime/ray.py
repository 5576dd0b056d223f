"""Batch scoring with Ray Data: the runtime inside ``Dataset.map_batches``, one model per actor.

Install with ``pip install 'gpt-clf[ray]'``. Ray is imported only by the functions that need
it: ``import clf_runtime`` (and even ``import clf_runtime.ray``) never loads Ray.

The building block is :class:`ClassifierPredictor`, a callable class in Ray Data's
"stateful transform" shape: Ray creates a pool of actors, each loads the model once, and
every batch of rows gets a ``label`` column and one probability column per label::

    import ray
    from clf_runtime.ray import ClassifierPredictor

    ds = ray.data.read_parquet("texts/")                  # any Dataset with a "text" column
    scored = ds.map_batches(
        ClassifierPredictor,
        fn_constructor_args=("exports/sms",),            # export directory or .onnx file
        compute=ray.data.ActorPoolStrategy(size=4),       # 4 actors (``concurrency=4`` before
        num_cpus=2,                                       #   Ray 2.51); 2 CPUs each, and the
        batch_size=1024,                                  #   actor runs 2 onnxruntime threads
        batch_format="pandas",                            # or "numpy"
    )
    scored.write_parquet("scores/")

Threads: an actor runs as many onnxruntime threads as the CPUs Ray reserved for it
(``num_cpus``), so actors never oversubscribe the cores of a node; ``threads=`` overrides it.
On GPU nodes pass ``num_gpus=1``: the actor then sees its GPU as device 0 and ``"auto"``
providers run fp16 on CUDA. Fault tolerance is Ray's own: an actor that dies is restarted
and its unfinished batches are retried (Ray Data's actor defaults, ``max_restarts=-1`` and
``max_task_retries=-1``), so every input row is scored exactly once.

The other pieces are what ``clf-predict --engine ray`` (:mod:`clf_runtime.ray_job`) is made
of: :func:`expand_inputs` (files, folders, globs), :func:`plan_inputs` (every file cut into
splits of N rows by one pass of this package's own readers on the driver, which checks every
row), :func:`read_dataset` (one Ray task reads one split: the same formats, column rule and
error messages as the single-process engine; each row keeps ``file`` + ``index`` and
optionally the input's ``--id-col`` value as ``id``), :func:`predict_dataset` and
:func:`write_dataset` (Parquet or JSONL into a staging directory, renamed into place when
every row is written).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ClassifierError, InvalidInputError
from .inputs import SUFFIX_FORMATS, InputError, Split, plan_splits, read_split
from .paths import check_output_path

if TYPE_CHECKING:  # pragma: no cover
    import ray.data

__all__ = [
    "ID_COLUMN",
    "INDEX_COLUMN",
    "MANIFEST_FILE",
    "OUTPUT_FORMATS",
    "PATH_COLUMN",
    "ClassifierPredictor",
    "expand_inputs",
    "need_ray",
    "plan_inputs",
    "predict_dataset",
    "read_dataset",
    "write_dataset",
]

PATH_COLUMN = "file"
"""Output column: the input file a row came from (as expanded from ``--input``)."""
INDEX_COLUMN = "index"
"""Output column: 0-based position of the row among the texts of its file."""
ID_COLUMN = "id"
"""Output column: the value of the input's ``--id-col``, when one is named."""
TEXT_COLUMN = "text"
OUTPUT_FORMATS = ("parquet", "jsonl")
MANIFEST_FILE = "_manifest.json"
"""Written last into the output directory (a leading ``_``: Ray and pyarrow readers skip it)."""


def need_ray() -> Any:
    """The ``ray`` module with Ray Data loaded, or an error saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ClassifierError(
            "scoring with Ray needs Ray Data: pip install 'gpt-clf[ray]' (or pip install "
            "'ray[data]' pyarrow)"
        ) from e
    return ray


def _assigned_cpus() -> int | None:
    """CPUs Ray reserved for the current actor or task; None outside a Ray worker."""
    ray = sys.modules.get("ray")  # inside a Ray worker it is always loaded: never import it here
    if ray is None or not ray.is_initialized():
        return None
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not a worker process (the driver): no assignment to read
        return None
    return max(1, int(cpus)) if cpus else None


# ----------------------------------------------------------------------------- the predictor


class ClassifierPredictor:
    """Ray Data callable class: load the model once per actor, score batches of texts.

    ``model``: export directory or ``.onnx`` file, readable on every node. Each batch
    (``pandas.DataFrame`` or ``dict`` of numpy arrays, i.e. ``batch_format="pandas"`` or
    ``"numpy"``) comes back with every column it had, plus ``label_column`` (the most probable
    label) and ``f"{prob_prefix}{label}"`` (float32) for every label in the model's order.

    ``threads``: onnxruntime intra-op threads; default the CPUs Ray reserved for this actor
    (``num_cpus`` of ``map_batches``), or every CPU outside Ray. ``providers``/``precision``:
    as :meth:`clf_runtime.Classifier.load`. ``batch_size``/``max_batch_tokens``: limits of one
    model call inside a Ray batch (a Ray batch is sorted by length and cut into model calls).
    ``keep_text=False`` drops the text column from the output (it is usually the largest).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        text_column: str = TEXT_COLUMN,
        label_column: str = "label",
        prob_prefix: str = "prob_",
        threads: int | None = None,
        providers: str | Sequence[str] = "auto",
        precision: str | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 8192,
        keep_text: bool = True,
    ) -> None:
        from .classifier import Classifier

        self.threads = threads if threads is not None else _assigned_cpus()
        self.classifier = Classifier.load(
            model, providers=providers, threads=self.threads, precision=precision
        )
        self.text_column = text_column
        self.label_column = label_column
        self.prob_columns = [f"{prob_prefix}{label}" for label in self.classifier.labels]
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.keep_text = keep_text

    def _scores(self, texts: Any, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        clash = [c for c in (self.label_column, *self.prob_columns) if c in columns]
        if clash:
            raise ClassifierError(
                f"the batch already has column(s) {clash}, which ClassifierPredictor would "
                "overwrite. Rename them first, or pass label_column= / prob_prefix= to choose "
                "other output names."
            )
        try:
            probs = self.classifier.predict_proba(
                texts, batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens
            )  # (n, num_labels)
        except InvalidInputError as e:
            raise InvalidInputError(
                f"column {self.text_column!r} of a batch: {e}. Every row needs a string there; "
                "fill missing texts first (e.g. with an empty string)."
            ) from e
        labels = np.asarray(self.classifier.labels, dtype=object)
        best = labels[probs.argmax(axis=1)] if len(probs) else labels[:0]
        return best, probs

    def __call__(self, batch: Any) -> Any:
        """Score one batch; return it with the label and probability columns added."""
        if isinstance(batch, dict):
            if self.text_column not in batch:
                raise ClassifierError(
                    f"the batch has no column {self.text_column!r} (columns: {list(batch)}); "
                    "pass text_column= with the column holding the texts"
                )
            best, probs = self._scores(batch[self.text_column], list(batch))
            out = {k: v for k, v in batch.items() if self.keep_text or k != self.text_column}
            out[self.label_column] = best
            for k, name in enumerate(self.prob_columns):
                out[name] = probs[:, k]
            return out
        columns = getattr(batch, "columns", None)
        if columns is None or not hasattr(batch, "assign"):
            raise ClassifierError(
                f"ClassifierPredictor takes pandas or numpy batches, got {type(batch).__name__}; "
                'pass batch_format="pandas" or batch_format="numpy" to map_batches'
            )
        if self.text_column not in columns:
            raise ClassifierError(
                f"the batch has no column {self.text_column!r} (columns: {list(columns)}); "
                "pass text_column= with the column holding the texts"
            )
        best, probs = self._scores(batch[self.text_column].to_numpy(), list(columns))
        new = {self.label_column: best}
        new.update({name: probs[:, k] for k, name in enumerate(self.prob_columns)})
        out = batch if self.keep_text else batch.drop(columns=[self.text_column])
        return out.assign(**new)


# ----------------------------------------------------------------------------- inputs


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _folder_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in sorted(files):
            if not _is_hidden(name) and Path(name).suffix.lower() in SUFFIX_FORMATS:
                found.append(os.path.join(root, name))
    return found


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Files named by ``patterns``: files, folders (searched recursively for files with a known
    suffix, hidden ``.``/``_`` names skipped) and globs (``*``, ``?``, ``[...]``, ``**``).

    Raises :class:`~clf_runtime.inputs.InputError` for a pattern that names nothing.
    """
    files: list[str] = []
    known = ", ".join(sorted(SUFFIX_FORMATS))
    for pattern in patterns:
        if "://" in pattern:
            raise InputError(
                f"--input {pattern!r}: only local or shared-filesystem paths are read here. For "
                "object stores, read with ray.data.read_* and map ClassifierPredictor over it "
                "(see the clf_runtime.ray docs)."
            )
        if os.path.isdir(pattern):
            found = _folder_files(pattern)
            if not found:
                raise InputError(
                    f"--input folder {pattern!r} holds no input files (suffixes: {known})."
                )
        elif os.path.isfile(pattern):
            found = [pattern]
        elif glob.has_magic(pattern):
            found = []
            for match in sorted(glob.glob(pattern, recursive=True)):
                found.extend(_folder_files(match) if os.path.isdir(match) else [match])
            if not found:
                raise InputError(
                    f"--input {pattern!r} matches no file (relative paths are from "
                    f"{Path.cwd()}). Quote the pattern so that the shell does not expand it."
                )
        else:
            raise InputError(
                f"--input {pattern!r} does not exist (relative paths are from {Path.cwd()})."
            )
        files.extend(found)
    return list(dict.fromkeys(files))  # a file named twice is read once


def plan_inputs(
    files: Sequence[str],
    *,
    rows_per_split: int = 1024,
    input_format: str = "auto",
    text_col: str | None = None,
    id_col: str | None = None,
    no_header: bool = False,
) -> list[Split]:
    """Cut ``files`` into splits of ``rows_per_split`` rows (see ``inputs.plan_splits``).

    One pass of the parser over every file, on the driver: a bad row fails here, with its file
    and line, before any worker starts; the splits' ``rows`` add up to the number of texts.
    Needs no Ray.
    """
    if not files:
        raise InputError("no input files given")
    splits: list[Split] = []
    for path in files:
        splits.extend(
            plan_splits(
                path,
                rows_per_split=rows_per_split,
                input_format=input_format,
                text_col=text_col,
                id_col=id_col,
                no_header=no_header,
            )
        )
    return splits


def _id_text(value: Any) -> str | None:
    """An id as text: one column type for every file (numbers as JSON writes them)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return str(value)


def _valid_unicode(value: str | None) -> str | None:
    """Lone surrogates become U+FFFD, as the tokenizer reads them anyway (same scores)."""
    if value is None:
        return None
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _read_splits(batch: dict[str, np.ndarray]) -> Any:
    """Ray task body: the rows of the split(s) in ``batch`` as one pandas DataFrame."""
    import pandas as pd

    frames = []
    for item in batch["split"]:
        split = Split(**json.loads(str(item)))
        rows = read_split(split)
        columns: dict[str, Any] = {
            PATH_COLUMN: [split.path] * len(rows),
            INDEX_COLUMN: np.arange(split.index, split.index + len(rows), dtype=np.int64),
        }
        if split.id is not None:
            columns[ID_COLUMN] = [_id_text(row_id) for row_id, _ in rows]
        columns[TEXT_COLUMN] = [text for _, text in rows]
        try:
            frames.append(pd.DataFrame(columns))
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): Arrow strings refuse it
            for key in (ID_COLUMN, TEXT_COLUMN):
                if key in columns:
                    columns[key] = [_valid_unicode(v) for v in columns[key]]
            frames.append(pd.DataFrame(columns))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def read_dataset(splits: Sequence[Split], *, read_tasks: int | None = None) -> ray.data.Dataset:
    """A Ray Dataset of the rows of ``splits`` (from :func:`plan_inputs`).

    Columns: ``file``, ``index`` (0-based position of the text in its file), ``id`` (when the
    splits were planned with ``id_col``) and ``text``. One Ray task reads one split into one
    block, so the rows of one big file spread over every actor. Read tasks reserve no CPU
    (reading is light next to the model, and the actors may hold every core); at most
    ``read_tasks`` run at once (default: Ray decides).
    """
    ray = need_ray()
    if not splits:
        raise InputError("no input splits given")
    items = ray.data.from_items(
        [{"split": json.dumps(asdict(s))} for s in splits], override_num_blocks=len(splits)
    )
    return items.map_batches(
        _read_splits,
        batch_size=1,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.TaskPoolStrategy(size=read_tasks) if read_tasks else None,
    )


# ----------------------------------------------------------------------------- scoring


def predict_dataset(
    ds: ray.data.Dataset,
    model: str | os.PathLike[str],
    *,
    workers: int,
    threads: int,
    gpus_per_worker: float = 0.0,
    rows_per_call: int = 1024,
    batch_size: int = 32,
    max_batch_tokens: int = 8192,
    providers: str | Sequence[str] = "auto",
    precision: str | None = None,
    keep_text: bool = False,
    predictor: type[ClassifierPredictor] = ClassifierPredictor,
) -> ray.data.Dataset:
    """``ds.map_batches(predictor, ...)`` on a fixed pool of ``workers`` actors.

    Each actor reserves ``threads`` CPUs (and ``gpus_per_worker`` GPUs) and runs ``threads``
    onnxruntime threads; it receives ``rows_per_call`` rows per call, sorts them by length and
    runs model calls of at most ``batch_size`` texts and ``max_batch_tokens`` padded tokens.
    ``predictor`` may be a subclass of :class:`ClassifierPredictor`.
    """
    ray = need_ray()
    return ds.map_batches(
        predictor,
        fn_constructor_args=(str(model),),
        fn_constructor_kwargs={
            "threads": threads,
            "providers": providers,
            "precision": precision,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "keep_text": keep_text,
        },
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
        num_gpus=gpus_per_worker or None,
        batch_size=rows_per_call,
        batch_format="pandas",
        udf_modifying_row_count=False,
    )


# ----------------------------------------------------------------------------- output


def _count_rows(folder: Path, output_format: str) -> tuple[int, int]:
    """(files, rows) written into ``folder``."""
    files = rows = 0
    for path in sorted(folder.iterdir()):
        if _is_hidden(path.name) or not path.is_file():
            continue
        files += 1
        if output_format == "parquet":
            import pyarrow.parquet as pq

            rows += pq.read_metadata(path).num_rows
        else:
            with open(path, "rb") as fh:
                rows += sum(1 for line in fh if line.strip())
    return files, rows


def write_dataset(
    ds: ray.data.Dataset,
    out_dir: str | os.PathLike[str],
    *,
    output_format: str = "parquet",
    overwrite: bool = False,
    manifest: dict[str, Any] | None = None,
    rows_per_file: int = 100_000,
    expected_rows: int | None = None,
) -> dict[str, Any]:
    """Run the pipeline and write its rows as ``output_format`` files into ``out_dir``.

    The files go into a staging directory beside ``out_dir``, which is renamed into place only
    when every row is written, with ``_manifest.json`` (``manifest`` plus the counts) written
    last: an interrupted job leaves no half output. An existing non-empty ``out_dir`` is
    replaced only with ``overwrite``. Returns the manifest, with ``rows``, ``files``,
    ``seconds`` (reading, scoring and writing) and ``texts_per_s`` added.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ClassifierError(
            f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}"
        )
    target = check_output_path(out_dir, flag="--output", kind="dir", overwrite=overwrite)
    from ray.data.datasource import FilenameProvider

    from .atomic import atomic_write_json

    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = target.parent / f".{target.name}.tmp-{tag}"
    old = target.parent / f".{target.name}.old-{tag}"
    start = time.perf_counter()
    try:
        # Writers reserve no CPU either (actors may hold every core: a writer that waits for
        # one would hold every scored block in memory until the end).
        common = {"ray_remote_args": {"num_cpus": 0}, "min_rows_per_file": rows_per_file}
        if output_format == "parquet":
            ds.write_parquet(
                str(staging), filename_provider=FilenameProvider(file_format="parquet"), **common
            )
        else:
            ds.write_json(
                str(staging),
                filename_provider=FilenameProvider(file_format="jsonl"),
                double_precision=15,
                force_ascii=False,
                **common,
            )
        staging.mkdir(exist_ok=True)  # an empty dataset writes no file
        seconds = time.perf_counter() - start  # the pipeline runs while it is written
        files, rows = _count_rows(staging, output_format)
        record = {**(manifest or {}), "output_format": output_format, "files": files}
        record.update(rows=rows, seconds=round(seconds, 3), texts_per_s=round(rows / seconds, 1))
        if expected_rows is not None and rows != expected_rows:
            raise ClassifierError(
                f"the job wrote {rows} rows but the input has {expected_rows}; nothing was "
                "kept. Run it again (and report this: it is a bug)."
            )
        atomic_write_json(staging / MANIFEST_FILE, record)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)  # put the previous output back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return record
