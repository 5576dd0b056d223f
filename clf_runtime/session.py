"""Open an exported classifier as an onnxruntime session: file choice, providers, safety checks.

Everything about *loading* lives here; :mod:`clf_runtime.classifier` only runs the session.

- Provider choice. ``"auto"`` uses CUDA when onnxruntime lists it *and* it really works: the
  ``onnxruntime-gpu`` wheel lists ``CUDAExecutionProvider`` even when the CUDA libraries are
  missing and then silently runs on CPU, so a 71-byte probe model decides (once per process),
  and the real session's ``get_providers()[0]`` is checked again.
- File choice from an export directory: ``model.fp16.onnx`` on CUDA, ``model.int8.onnx`` on CPU,
  else ``model.onnx``; ``precision=`` overrides.
- Session options are set explicitly (threads, graph optimisation, sequential execution); no
  environment variable is read.
- Safety: external-data tensors whose location leaves the model's directory are refused
  *before* onnxruntime opens the file (onnxruntime >= 1.20 refuses them too; this check does
  not depend on that and needs no ``onnx`` package: it walks the protobuf wire format).
"""

from __future__ import annotations

import base64
import functools
import mmap
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnxruntime as ort

from .contract import INPUT_IDS, INPUT_TYPES, LENGTHS, LOGITS, LOGITS_TYPE, MODEL_FILES, PRECISIONS
from .errors import MetadataError, ModelLoadError
from .metadata import ModelMetadata
from .paths import is_run_dir
from .tokenizer import TOKENIZER_NAME

__all__ = [
    "CPU",
    "CUDA",
    "QUIET",
    "check_external_data",
    "create_session",
    "cuda_is_usable",
    "open_session",
    "resolve_providers",
    "run_logits",
    "session_options",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ALIASES = {"cpu": CPU, "cuda": CUDA}
# Preference when the caller names no precision: int8 is fastest on CPU (VNNI), fp16 on CUDA.
_PREFERENCE = {CPU: ("int8", "fp32", "fp16"), CUDA: ("fp16", "fp32", "int8")}
QUIET = 4
"""onnxruntime severity "fatal": a session created with ``log_severity_level=QUIET`` logs only
fatal errors. Per session, never through ``set_default_logger_severity``, which would change
the log level of every other session in the process."""
# A serialized ONNX model `y = Identity(x)` (float [1], opset 13) used to probe CUDA cheaply.
_PROBE_MODEL = base64.b64decode(
    "CAcSADo7ChAKAXgSAXkiCElkZW50aXR5EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)


# ----------------------------------------------------------------------------- providers


@functools.cache
def _no_nvidia_driver() -> bool:
    """On Linux, no NVIDIA kernel driver means no CUDA: skip onnxruntime's noisy attempt."""
    return sys.platform.startswith("linux") and not (
        os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia")
    )


@functools.lru_cache(maxsize=1)
def cuda_is_usable() -> bool:
    """True when onnxruntime lists CUDA and a session on it really runs on CUDA.

    Probed once per process: onnxruntime-gpu silently falls back to CPU (after logging an
    error) when CUDA libraries are missing, so only a real session tells.
    """
    if CUDA not in ort.get_available_providers() or _no_nvidia_driver():
        return False
    options = ort.SessionOptions()
    options.log_severity_level = QUIET  # a failing probe is an answer, not an error to log
    try:
        probe = ort.InferenceSession(_PROBE_MODEL, options, providers=[CUDA, CPU])
    except Exception:  # onnxruntime raises its own untyped exceptions; any failure means "no"
        return False
    return probe.get_providers()[0] == CUDA


def resolve_providers(providers: str | Sequence[str]) -> list[str]:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, a provider name or a list of them into names.

    ``"auto"`` gives ``[CUDA, CPU]`` when CUDA really works, else ``[CPU]``. Explicit names must
    be listed by ``onnxruntime.get_available_providers()``.
    """
    if isinstance(providers, str):
        if providers == "auto":
            return [CUDA, CPU] if cuda_is_usable() else [CPU]
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    names = [_ALIASES.get(p.lower(), p) for p in providers]
    available = ort.get_available_providers()
    unknown = [p for p in names if p not in available]
    if not names or unknown:
        raise ModelLoadError(
            f"providers {list(providers)!r} cannot be used: {unknown or 'none given'} not in "
            f"this onnxruntime's providers {available}. Pass providers='auto', 'cpu', 'cuda' or "
            "a list of those names."
        )
    return names


def session_options(threads: int | None, *, spin: bool = True) -> ort.SessionOptions:
    """Explicit options: ``threads`` intra-op threads (default: all CPUs), one inter-op thread.

    ``spin=False`` stops the intra-op threads from busy-waiting for work between parallel
    sections and after a run (onnxruntime's default is to spin): cores stay free for the
    other threads of the process (a server's event loop) and for other programs. Measured on a
    busy 2-core machine, GPT-2 small int8, one text per call: 24 instead of 48 ms of CPU per
    text, and lower wall time too.
    """
    if threads is None:
        threads = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ModelLoadError(f"threads must be a positive integer or None, got {threads!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


# ----------------------------------------------------------------------------- file choice


def _choose_file(path: Path, precision: str | None, provider: str) -> Path:
    """The .onnx file to open: ``path`` itself, or the best one in an export directory."""
    if precision is not None and precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    if not path.exists():
        raise ModelLoadError(
            f"model path {str(path)!r} does not exist; pass an export directory written by "
            "`clf-export` or one of its .onnx files"
        )
    if path.is_file():
        return path
    if is_run_dir(path):  # the usual mix-up: say what to run
        raise ModelLoadError(
            f"{str(path)!r} is a clf-train run directory, not an exported model: export it "
            f"with `clf-export {path} --out DIR`, then load DIR"
        )
    present = {p: path / f for p, f in MODEL_FILES.items() if (path / f).is_file()}
    if not present:
        raise ModelLoadError(
            f"directory {str(path)!r} holds none of {sorted(MODEL_FILES.values())}; "
            "export a model into it with `clf-export RUN_DIR --out DIR`"
        )
    if precision is not None:
        if precision not in present:
            raise ModelLoadError(
                f"precision {precision!r} requested but {str(path / MODEL_FILES[precision])!r} "
                f"does not exist; this directory has {sorted(present)}"
            )
        return present[precision]
    order = _PREFERENCE.get(provider, _PREFERENCE[CPU])
    return next(present[p] for p in order if p in present)


# ----------------------------------------------------------------------------- external data

# Field numbers from onnx.proto3 (stable since IR version 3).
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """Yield (field number, payload) of a protobuf message; payload None unless length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, None
        elif wire == 1:
            pos += 8
            yield number, None
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("length-delimited field runs past the end of the message")
            yield number, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            pos += 4
            yield number, None
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != len(buf):
        raise ValueError("message ends inside a field")


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for number, payload in _fields(tensor):
        if number == _TENSOR_EXTERNAL_DATA and payload is not None:
            entry = dict((n, p) for n, p in _fields(payload) if p is not None)
            key = bytes(entry.get(_ENTRY_KEY, b"")).decode("utf-8", "replace")
            if key == "location":
                yield bytes(entry.get(_ENTRY_VALUE, b"")).decode("utf-8", "replace")


def _sparse_locations(sparse: memoryview) -> Iterator[str]:
    for number, payload in _fields(sparse):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and payload is not None:
            yield from _tensor_locations(payload)


def _node_locations(node: memoryview) -> Iterator[str]:
    for number, attr in _fields(node):
        if number != _NODE_ATTRIBUTE or attr is None:
            continue
        for field_no, payload in _fields(attr):
            if payload is None:
                continue
            if field_no in (_ATTR_T, _ATTR_TENSORS):
                yield from _tensor_locations(payload)
            elif field_no in (_ATTR_G, _ATTR_GRAPHS):  # If / Loop / Scan bodies
                yield from _graph_locations(payload)
            elif field_no in (_ATTR_SPARSE, _ATTR_SPARSES):
                yield from _sparse_locations(payload)


def _graph_locations(graph: memoryview) -> Iterator[str]:
    for number, payload in _fields(graph):
        if payload is None:
            continue
        if number == _GRAPH_INITIALIZER:
            yield from _tensor_locations(payload)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            yield from _sparse_locations(payload)
        elif number == _GRAPH_NODE:
            yield from _node_locations(payload)


def external_data_locations(model_bytes: memoryview) -> list[str]:
    """Every external-data ``location`` in a serialized ModelProto (graph, subgraphs, functions)."""
    found: list[str] = []
    for number, payload in _fields(model_bytes):
        if payload is None:
            continue
        if number == _MODEL_GRAPH:
            found.extend(_graph_locations(payload))
        elif number == _MODEL_FUNCTIONS:
            for field_no, node in _fields(payload):
                if field_no == _FUNCTION_NODE and node is not None:
                    found.extend(_node_locations(node))
    return found


def _escapes(location: str, model_dir: Path) -> bool:
    if not location or "\x00" in location:
        return True
    if PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        return True
    if PureWindowsPath(location).drive or ".." in PureWindowsPath(location).parts:
        return True  # PureWindowsPath splits on both / and \
    root = model_dir.resolve()
    target = (model_dir / location).resolve()  # follows symlinks
    return not target.is_relative_to(root)


def _scan_file(path: Path) -> tuple[list[str], str | None]:
    """External-data locations of the file at ``path``, or an error message if unparsable.

    The error is returned as text, not raised: a live traceback would keep slices of the
    memory map alive and the map could not be closed.
    """
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return [], None  # onnxruntime reports the empty file with its own error
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            return external_data_locations(view), None
        except ValueError as e:
            return [], str(e)
        finally:
            view.release()
            mm.close()


def check_external_data(path: Path) -> None:
    """Refuse ``path`` if an external-data tensor points outside its directory.

    Raises :class:`ModelLoadError` for absolute locations, ``..`` components and symlinks that
    resolve outside the directory, and for files that are not a protobuf at all. The file is
    memory-mapped; tensor bytes are skipped, not read.
    """
    try:
        locations, error = _scan_file(path)
    except OSError as e:
        raise ModelLoadError(f"cannot read {str(path)!r}: {e}") from e
    if error is not None:
        raise ModelLoadError(
            f"{str(path)!r} is not a readable ONNX protobuf ({error}); it is truncated or "
            "corrupt: export it again"
        )
    bad = sorted({loc for loc in locations if _escapes(loc, path.parent)})
    if bad:
        raise ModelLoadError(
            f"refusing to load {str(path)!r}: its external-data tensors point outside the model "
            f"directory ({', '.join(repr(b) for b in bad)}). A model may only read weight files "
            "beside it; re-export it with relative external-data paths."
        )


# ----------------------------------------------------------------------------- session


def _check_signature(session: ort.InferenceSession, path: Path, num_labels: int) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = []
    for name, dtype in INPUT_TYPES.items():
        if name not in inputs:
            problems.append(f"missing input {name!r} ({dtype})")
        elif inputs[name].type != dtype:
            problems.append(f"input {name!r} is {inputs[name].type}, expected {dtype}")
    extra = sorted(set(inputs) - set(INPUT_TYPES))
    if extra:
        problems.append(f"unexpected inputs {extra}")
    out_name, out_type = LOGITS, LOGITS_TYPE
    out = outputs.get(out_name)
    if out is None:
        problems.append(f"missing output {out_name!r} ({out_type})")
    elif out.type != out_type:
        problems.append(f"output {out_name!r} is {out.type}, expected {out_type}")
    elif len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != num_labels):
        problems.append(
            f"output {out_name!r} has shape {out.shape}, expected [batch, {num_labels}]"
        )
    if problems:
        raise ModelLoadError(
            f"{str(path)!r} does not have the gpt-clf graph signature: {'; '.join(problems)}. "
            "Expected inputs input_ids int64 [batch, sequence] and lengths int64 [batch], output "
            "logits float32 [batch, num_labels]; export with `clf-export`."
        )


def create_session(
    path: str | os.PathLike[str],
    *,
    providers: Sequence[str],
    threads: int | None = None,
    log_severity_level: int | None = None,
    spin: bool = True,
) -> ort.InferenceSession:
    """A bare onnxruntime session for the file at ``path`` with :func:`session_options`.

    ``providers`` are onnxruntime provider names, used as given (see
    :func:`resolve_providers`); ``log_severity_level`` (0 verbose ... 4 fatal, e.g.
    :data:`QUIET`) applies to this session only; ``spin`` as in :func:`session_options`. No
    file choice, metadata or signature check: :func:`open_session` does those. Raises
    :class:`ModelLoadError` when onnxruntime cannot load the file.
    """
    options = session_options(threads, spin=spin)
    if log_severity_level is not None:
        options.log_severity_level = log_severity_level
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as e:  # onnxruntime's exception classes are not part of its stable API
        raise ModelLoadError(
            f"onnxruntime could not load {str(path)!r}: {e}. The file is truncated, corrupt or "
            "not an ONNX model; export it again with `clf-export`."
        ) from e


def open_session(
    path: str | os.PathLike[str],
    *,
    providers: str | Sequence[str] = "auto",
    threads: int | None = None,
    precision: str | None = None,
    spin: bool = True,
) -> tuple[ort.InferenceSession, ModelMetadata, Path]:
    """Open a model file or export directory; return (session, metadata, file path).

    Raises :class:`ModelLoadError` (or its subclass :class:`MetadataError`) with the reason
    and the fix for every problem: missing path, empty directory, corrupt file, unsafe
    external data, foreign ONNX without gpt-clf metadata, wrong graph signature, a CUDA-only
    provider list when CUDA does not work.
    """
    names = resolve_providers(providers)
    file = _choose_file(Path(path), precision, names[0])
    check_external_data(file)
    session = create_session(file, providers=names, threads=threads, spin=spin)
    actual = session.get_providers()[0]
    if names[0] == CUDA and actual != CUDA:
        if CPU not in names:
            raise ModelLoadError(
                f"providers {names} asked for CUDA only, but onnxruntime fell back to {actual} "
                "(CUDA or cuDNN libraries missing, or no GPU). Install the CUDA libraries "
                "onnxruntime-gpu needs, or pass providers='auto' / 'cpu'."
            )
        cpu_file = _choose_file(Path(path), precision, CPU)
        if cpu_file != file:  # e.g. fp16 chosen for CUDA: reopen the CPU choice (int8)
            file = cpu_file
            check_external_data(file)
            session = create_session(file, providers=[CPU], threads=threads, spin=spin)
    source = repr(str(file))
    metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, source=source)
    if metadata.tokenizer != TOKENIZER_NAME:
        raise MetadataError(
            f"{source} needs tokenizer {metadata.tokenizer!r}; this runtime ships only "
            f"{TOKENIZER_NAME!r}"
        )
    if precision is not None and metadata.precision != precision:
        raise ModelLoadError(
            f"{source} holds a {metadata.precision} model but precision={precision!r} was "
            "requested; pass the matching file or the export directory"
        )
    _check_signature(session, file, len(metadata.labels))
    return session, metadata, file


def run_logits(
    session: ort.InferenceSession, input_ids: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """One plain ``session.run`` of the graph contract: (B, T) int64 right-padded ids and (B,)
    int64 lengths -> (B, num_labels) float32 logits."""
    return session.run([LOGITS], {INPUT_IDS: input_ids, LENGTHS: lengths})[0]
