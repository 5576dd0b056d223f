"""Shared helpers of the benchmark programs: command-line options, work directory, environment
record, timing, percentiles, tables, JSON output, the SMS test texts, the model presets under
other libraries' names and an offline Hugging Face GPT-2 tokenizer.

Benchmarks are programs, not tests: they print a table and write one JSON file per program
into ``benchmarks/results/``. Every JSON carries :func:`environment` so that a number can
always be traced to the machine, the library versions and the thread settings that gave it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
# Benchmark the packages of this work tree even if the installed (editable) copy is stale: a
# script's own folder is sys.path[0], so the repository root must be added explicitly.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
GPT2_BPE_DIR = SHARED_DATA / "gpt2"
SMS_DIR = SHARED_DATA / "sms_spam"
SMS_TEST_SOURCE = "prepare_data('sms-spam', balance=True, seed=123).test"  # see sms_test_split
# The architectures a benchmark can build (random seeded weights); gpt2 = GPT-2 small.
PRESET_CHOICES = ("gpt2", "gpt2-mini", "gpt2-tiny")

# Distributions whose versions go into every result file.
_PACKAGES = (
    "torch",
    "onnxruntime-gpu",
    "onnxruntime",
    "onnx",
    "optimum",
    "optimum-onnx",
    "transformers",
    "tokenizers",
    "numpy",
    "tiktoken",
    "safetensors",
    "llms-from-scratch",
    "pandas",
    "gpt-clf",
)
_CPU_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


# ----------------------------------------------------------------------------- command line


def arg_parser(
    doc: str,
    result_name: str,
    *,
    preset_help: str = "architecture (weights random, seeded); gpt2 = GPT-2 small",
    work_dir_help: str = "keep the built models here and reuse them next time (default: temp)",
    seed_default: int = 0,
    seed_help: str = "seed of the random weights",
) -> argparse.ArgumentParser:
    """A benchmark program's parser, described by the first paragraph of its docstring ``doc``,
    with the options every program has: ``--preset`` (architecture of the model it builds),
    ``--seed``, ``--work-dir`` (default: a temporary directory), ``--out`` and ``--name``
    (``result_name`` says the default file stem)."""
    ap = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="gpt2", choices=PRESET_CHOICES, help=preset_help)
    ap.add_argument("--seed", type=int, default=seed_default, help=seed_help)
    ap.add_argument("--work-dir", type=Path, default=None, help=work_dir_help)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    ap.add_argument("--name", default=None, help=f"result file stem (default: {result_name})")
    return ap


def int_list(text: str) -> list[int]:
    """argparse type of options such as ``--batch-sizes 1,32,128``: positive integers."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,32,128, got {text!r}")
    return [int(part) for part in parts]


@contextlib.contextmanager
def work_dir(path: Path | None, *, prefix: str) -> Iterator[Path]:
    """``path`` (created if missing, kept), or a temporary directory removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def run_program(
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace, Path], tuple[str, dict[str, Any]]],
    *,
    prefix: str,
) -> int:
    """``measure(args, work)`` in ``--work-dir`` (else a temporary directory named ``prefix``...),
    then write the payload it returns as ``--out``/``<name>.json``, ``name`` being ``--name`` or
    the default it returns. The exit status: 0 (failures raise)."""
    with work_dir(args.work_dir, prefix=prefix) as work:
        name, payload = measure(args, work)
        write_result(args.name or name, payload, out_dir=args.out)
    return 0


# ----------------------------------------------------------------------------- environment


def cpu_info() -> dict[str, Any]:
    """CPU model, the ISA flags that matter for int8/bf16 kernels, and core counts."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", "x86_64", ""):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": model,
        "flags": {f: f in flags for f in _CPU_FLAGS},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
    }


def package_versions() -> dict[str, str | None]:
    """Installed version of each benchmarked distribution (None when absent)."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def command_output(*cmd: str, timeout: float = 20) -> str | None:
    """The stripped standard output of ``cmd``, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_commit() -> str | None:
    """The repository's HEAD commit (plus ``-dirty`` when the work tree has changes)."""
    head = command_output("git", "-C", str(REPO_ROOT), "rev-parse", "HEAD")
    dirty = command_output(
        "git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"
    )
    if head is None or dirty is None:
        return None
    return head + ("-dirty" if dirty else "")


def gpu_name() -> str | None:
    """The GPUs' names, driver and memory from nvidia-smi (works without torch CUDA)."""
    query = "--query-gpu=name,driver_version,memory.total"
    return command_output("nvidia-smi", query, "--format=csv,noheader") or None


def environment(**settings: Any) -> dict[str, Any]:
    """Everything needed to interpret a result: machine, versions, providers, settings.

    ``settings`` (threads, providers, flags of the run) are stored as given.
    """
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "memory_gib": _memory_gib(),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["torch_threads"] = torch.get_num_threads()
        env["torch_interop_threads"] = torch.get_num_interop_threads()
    env["settings"] = settings
    return env


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- timing


def percentiles(samples_s: Sequence[float]) -> dict[str, float | int]:
    """Summary of durations given in seconds, reported in milliseconds."""
    if not samples_s:
        raise ValueError("percentiles() needs at least one sample")
    ms = sorted(x * 1e3 for x in samples_s)

    def pct(q: float) -> float:
        # Linear interpolation between closest ranks (numpy's default "linear" method).
        pos = (len(ms) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(ms) - 1)
        return ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)

    return {
        "n": len(ms),
        "p50_ms": round(pct(0.50), 3),
        "p90_ms": round(pct(0.90), 3),
        "p99_ms": round(pct(0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def repeat_timed(fn: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return the durations."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(repeats)]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


# ----------------------------------------------------------------------------- output


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str = "") -> None:
    """Print ``rows`` as an aligned text table with the given ``columns``."""
    if title:
        print(f"\n== {title}")
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
        for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_values(values: dict[str, Any], header: str, *, title: str) -> None:
    """Print ``{name: value}`` as a two-column table whose first column is called ``header``."""
    print_table(
        [{header: k, "value": v} for k, v in values.items()], [header, "value"], title=title
    )


def judge_targets(
    checks: dict[str, tuple[float | None, float, str]],
) -> dict[str, dict[str, Any]]:
    """``{target: (value, threshold, ">=" or "<=")}`` -> ``{target: {"value", "threshold",
    "met"}}``; ``met`` is None when the value could not be measured."""
    judge = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}
    return {
        k: {"value": v, "threshold": t, "met": None if v is None else judge[op](v, t)}
        for k, (v, t, op) in checks.items()
    }


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    """Print ``{target: {"value", "threshold", "met"}}`` as the "targets" table."""
    rows = [{"target": k, **v} for k, v in targets.items()]
    print_table(rows, ["target", "value", "threshold", "met"], title="targets")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def write_result(name: str, payload: dict[str, Any], *, out_dir: Path | None = None) -> Path:
    """Write ``payload`` as ``<out_dir>/<name>.json`` atomically, say where; return the path."""
    from clf_runtime.atomic import atomic_write_json

    path = (out_dir or RESULTS_DIR) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, payload)
    print(f"\nwrote {path}")
    return path


# ----------------------------------------------------------------------------- data


def sms_test_split(seed: int = 123) -> tuple[list[str], list[str], list[str]]:
    """The balanced SMS spam test split: (texts, label names, sorted label list).

    ``prepare_data("sms-spam", balance=True, seed=123)`` gives 1,045 / 149 / 300 texts; the
    300 test texts keep the real length mix of SMS messages (median ~ 25 GPT-2 tokens).
    """
    os.environ.setdefault("CLF_DATA_DIR", str(SMS_DIR))
    from clf_train.splits import prepare_data

    data = prepare_data("sms-spam", balance=True, seed=seed)
    return list(data.test.texts), list(data.test.labels), list(data.label_names)


# Our GPTConfig fields and their names in Hugging Face's GPT2Config and in the book's ch04 config
# dict (None: that side has no such setting).
_CONFIG_NAMES = (
    ("vocab_size", "vocab_size", "vocab_size"),
    ("context_length", "n_positions", "context_length"),
    ("d_model", "n_embd", "emb_dim"),
    ("n_layer", "n_layer", "n_layers"),
    ("n_head", "n_head", "n_heads"),
    ("layer_norm_eps", "layer_norm_epsilon", None),
    ("qkv_bias", None, "qkv_bias"),
)


def preset_config(preset: str, names: Literal["hf", "ch04"]) -> dict[str, Any]:
    """The architecture of ``PRESETS[preset]`` as keyword arguments of ``GPT2Config`` ("hf") or
    as the book's ``GPTModel`` config dict ("ch04"; GPT_CONFIG_124M for "gpt2")."""
    from clf_train.model import PRESETS

    column = ("hf", "ch04").index(names) + 1
    return {
        row[column]: getattr(PRESETS[preset], row[0])
        for row in _CONFIG_NAMES
        if row[column] is not None
    }


def hf_gpt2_tokenizer(save_dir: Path | None = None) -> Any:
    """A ``GPT2TokenizerFast`` built offline from ``shared/data/gpt2`` (pad token = eos).

    With ``save_dir`` the tokenizer files are also written there, so that
    ``AutoTokenizer.from_pretrained(save_dir)`` works as in any Hugging Face model directory.
    """
    from transformers import GPT2TokenizerFast

    vocab, merges = GPT2_BPE_DIR / "encoder.json", GPT2_BPE_DIR / "vocab.bpe"
    missing = [str(p) for p in (vocab, merges) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GPT-2 BPE files {missing} not found; expected OpenAI's encoder.json and vocab.bpe "
            f"in {GPT2_BPE_DIR}"
        )
    tok = GPT2TokenizerFast(vocab_file=str(vocab), merges_file=str(merges))
    tok.pad_token = tok.eos_token
    if save_dir is not None:
        tok.save_pretrained(str(save_dir))
    return tok


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive slices of ``size`` (the last one may be shorter), in input order."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON file."""
    return json.loads(Path(path).read_text("utf-8"))
