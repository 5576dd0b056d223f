"""int8 quantization of an exported fp32 graph, for onnxruntime on CPU.

The fp32 graph's weight-only Split / Slice / Transpose nodes are already folded into plain
weights (:func:`clf_export.fusions.fold_weight_transforms`), so every weight MatMul reads an
initializer. :func:`clf_export.rowwise_int8.quantize_rowwise_int8` rewrites each one as a
u8 x s8 integer GEMM with one weight scale per output channel, and stores the embedding
tables as int8 with one scale per row. Every activation scale is one that no batch mate can
move: computed per row (token) at run time, or fixed at export from calibration texts
(:mod:`clf_export.static_int8`), so a text's int8 logits do not depend on its batch mates or
its padding, which onnxruntime's ``quantize_dynamic`` (one scale per tensor) breaks.
:func:`quantize_int8` picks the scheme (the fastest whose held-out quality is no worse than
per-row's). The classification head stays fp32: it is tiny, and it is where rounding would
flip a decision. :func:`export_int8` stages ``model.int8.onnx`` and compares it with the fp32
graph on the parity probes.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clf_runtime.contract import LOGITS
from clf_runtime.tokenizer import END_OF_TEXT_ID

from .errors import ExportError
from .options import INT8, INT8_FORMATS, ExportOptions
from .parity import compare_logits, make_session

if TYPE_CHECKING:
    from .fp32 import Fp32Export
    from .staging import StagedModels

__all__ = ["cpu_has_vnni", "export_int8", "quantize_int8", "resolve_int8_format"]

_WHY = {
    "u8s8": (
        "uint8 activations x int8 weights (QInt8, full 8-bit range): onnxruntime's recommended "
        "and fastest CPU format; with VNNI (VPDPBUSD) the u8 x s8 products accumulate straight "
        "into int32, so nothing saturates"
    ),
    "u8s8-reduce-range": (
        "uint8 activations x 7-bit int8 weights (reduce_range): onnxruntime's guide warns that "
        "on x86 without VNNI the U8S8 kernels (VPMADDUBSW) sum pairs of products into int16, "
        "which can saturate; 7-bit weights leave the headroom, at the price of one bit of "
        "weight precision"
    ),
}


def cpu_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has AVX-512 VNNI or AVX-VNNI (Linux ``/proc/cpuinfo`` flags)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_vnni", "avx_vnni"})
    return False


def resolve_int8_format(int8_format: str, *, vnni: bool | None = None) -> tuple[str, str]:
    """Turn ``auto`` into a concrete format for the exporting machine; return (format, why)."""
    if int8_format not in INT8_FORMATS:
        raise ExportError(
            f"unknown int8 format {int8_format!r}; choose one of {', '.join(INT8_FORMATS)} "
            "(--int8-format)"
        )
    if int8_format != "auto":
        return int8_format, _WHY[int8_format] + " (chosen with --int8-format)"
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        # ARM and others have no VPMADDUBSW: U8S8 carries no saturation risk there.
        return "u8s8", _WHY["u8s8"] + f" (auto: {machine} CPU, no x86 saturation issue)"
    if cpu_has_vnni() if vnni is None else vnni:
        return "u8s8", _WHY["u8s8"] + " (auto: this CPU has AVX-512 VNNI or AVX-VNNI)"
    return "u8s8-reduce-range", _WHY["u8s8-reduce-range"] + " (auto: this x86 CPU has no VNNI)"


def _head_nodes(graph: Any) -> list[str]:
    """Names of the nodes that compute ``logits`` from the pooled (B, C) state (the head)."""
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get(LOGITS)
    names = []
    # Walk back over Add/Gemm/MatMul/Identity: the head is Gemm, or MatMul + Add.
    while node is not None and node.op_type in ("Gemm", "MatMul", "Add", "Identity"):
        names.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            break
        inputs = [producers.get(i) for i in node.input]
        node = next((n for n in inputs if n is not None), None)
    return names


def _quality(ref: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    cmp = compare_logits(ref, logits)
    return {k: round(v, 6) for k, v in cmp.items() if k != "max_abs_logit_diff"}


def _no_worse(candidate: dict[str, float], reference: dict[str, float]) -> bool:
    """Held-out agreement with fp32 no lower and max |prob diff| no higher than the reference."""
    return (
        candidate["argmax_agreement"] >= reference["argmax_agreement"]
        and candidate["max_abs_prob_diff"] <= reference["max_abs_prob_diff"]
    )


def quantize_int8(
    fp32_path: Path,
    *,
    int8_format: str = "auto",
    quantize_embeddings: bool = True,
    scheme: str = "auto",
    calibration_ids: Sequence[Sequence[int]] | None = None,
    eval_ids: Sequence[Sequence[int]] | None = None,
    pad_token_id: int = END_OF_TEXT_ID,
    threads: int | None = None,
    fp32_session: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Quantize the fp32 graph at ``fp32_path``; return the int8 ``ModelProto`` and its settings.

    ``scheme`` (see :mod:`clf_export.static_int8`): ``auto`` builds every scheme the data
    allows, fastest first, and keeps the first whose held-out quality (``eval_ids``, scored
    against the fp32 graph) is no worse than per-row ``rowwise``'s: argmax agreement no lower,
    max |prob diff| no higher. Static schemes need ``calibration_ids`` (training texts, token
    ids); without them, or without held-out texts to check them on, ``auto`` is ``rowwise``.
    ``fp32_session``, an onnxruntime session the caller already has on the fp32 graph, scores
    the reference (else one is opened on ``fp32_path``). The caller adds metadata and saves
    the returned model (with external data when large).
    """
    import onnx

    from clf_runtime.batching import batched_logits
    from clf_runtime.session import run_logits

    from .rowwise_int8 import quantize_rowwise_int8, weight_matmuls
    from .static_int8 import (
        CALIBRATION_TEXTS,
        INT8_SCHEMES,
        SMOOTH_ALPHA,
        calibrate,
        cpu_session,
        layer_norm_inputs,
        smooth_layer_norms,
        static_params,
    )

    fmt, why = resolve_int8_format(int8_format)
    if scheme not in ("auto", *INT8_SCHEMES):
        raise ExportError(
            f"unknown int8 scheme {scheme!r}; choose one of auto, {', '.join(INT8_SCHEMES)} "
            "(--int8-scheme)"
        )
    calibration_ids = list(calibration_ids or [])[:CALIBRATION_TEXTS]
    if scheme == "auto":
        if calibration_ids and eval_ids:
            candidates: tuple[str, ...] = INT8_SCHEMES
            choice_why = ""
        else:
            candidates = ("rowwise",)
            missing = "calibration (training) texts" if not calibration_ids else "held-out texts"
            choice_why = f"rowwise: no {missing} to calibrate and check a static scheme with"
    elif scheme != "rowwise" and not calibration_ids:
        raise ExportError(
            f"int8 scheme {scheme!r} needs calibration texts: export a run directory with a "
            "train split, or choose --int8-scheme rowwise"
        )
    else:
        candidates, choice_why = (scheme,), f"{scheme}: chosen with --int8-scheme"

    fp32 = onnx.load(str(fp32_path))  # external data, if any, is read from beside the file
    head = _head_nodes(fp32.graph)
    inits = {t.name: t for t in fp32.graph.initializer}
    activations = sorted({n.input[0] for n in weight_matmuls(fp32.graph.node, inits, head)})
    reduce_range = fmt == "u8s8-reduce-range"
    calibration: dict[str, Any] | None = None
    quality: dict[str, dict[str, float]] = {}
    static = [c for c in candidates if c != "rowwise"]
    try:
        ranges = {}
        if static:
            ranges = calibrate(fp32, calibration_ids, activations, threads=threads)

        def build(name: str) -> tuple[Any, Any]:
            if name == "static":
                inputs = set(activations)
            elif name == "static-ln":
                inputs = layer_norm_inputs(fp32.graph, activations)
            else:
                inputs = set()
            return quantize_rowwise_int8(
                fp32,
                exclude_nodes=head,
                quantize_embedding=quantize_embeddings,
                reduce_range=reduce_range,
                static_inputs={x: static_params(ranges[x]) for x in inputs},
            )

        def smooth() -> None:
            # In place on the graph loaded above (nobody else holds it): no second copy of
            # the weights. The function is unchanged; only the static schemes need it.
            nonlocal calibration
            calibration = {
                "texts": len(calibration_ids),
                "statistic": "min / max of each activation over the calibration texts",
                "smoothquant_alpha": SMOOTH_ALPHA,
                "smoothed_layer_norms": smooth_layer_norms(fp32, ranges, exclude_nodes=head),
            }

        if len(candidates) == 1:
            chosen = candidates[0]
            if static:
                smooth()
            model, stats = build(chosen)
        else:
            assert eval_ids is not None  # candidates > 1 only with held-out texts

            def held_out(session: Any) -> np.ndarray:
                run = functools.partial(run_logits, session)
                return batched_logits(run, eval_ids, pad_id=pad_token_id)

            reference = fp32_session
            if reference is None:
                reference = cpu_session(fp32_path, threads=threads)
            ref = held_out(reference)
            model, stats = build("rowwise")  # before smoothing: the graph as exported
            quality["rowwise"] = _quality(ref, held_out(cpu_session(model, threads=threads)))
            chosen = "rowwise"
            smooth()
            for name in static:  # fastest first
                candidate, candidate_stats = build(name)
                quality[name] = _quality(ref, held_out(cpu_session(candidate, threads=threads)))
                if _no_worse(quality[name], quality["rowwise"]):
                    chosen, model, stats = name, candidate, candidate_stats
                    break
                del candidate
            choice_why = _choice_why(chosen, quality, len(eval_ids))
    except (ValueError, KeyError) as e:
        raise ExportError(f"could not quantize {fp32_path.name} to int8: {e}") from e
    n_float = sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)
    info: dict[str, Any] = {
        "format": fmt,
        "why": why,
        "cpu_has_vnni": cpu_has_vnni(),
        "scheme": chosen,
        "scheme_why": choice_why,
        "scheme_description": _SCHEME_TEXT[chosen],
        "candidates_on_held_out": quality or None,
        "calibration": calibration,
        "weight_bits": stats.weight_bits,
        "int8_matmuls": stats.matmuls_quantized,
        "activations_static": stats.activations_static,
        "activations_per_row": stats.activations_dynamic,
        "biases_in_gemm": stats.biases_folded,
        # activation x activation (attention) products and the head stay float
        "float_matmuls": n_float,
        "excluded_nodes": head,
        "embedding_tables_int8": stats.gathers_quantized,
    }
    return model, info


_SCHEME_TEXT = {
    "rowwise": (
        "activations: uint8 per row (token), symmetric (zero point 128), scale computed per "
        "call from that row alone, one quantization shared by the MatMuls reading it; "
        "weights: int8 per output channel, symmetric"
    ),
    "static-ln": (
        "LayerNorm outputs (query/key/value and MLP-input projections): uint8 with one scale "
        "and zero point fixed at export from calibration texts, outlier channels migrated "
        "into the weights (SmoothQuant); attention and GELU outputs: uint8 per row as in "
        "rowwise; weights: int8 per output channel, symmetric"
    ),
    "static": (
        "every activation: uint8 with one scale and zero point fixed at export from "
        "calibration texts, LayerNorm outliers migrated into the weights (SmoothQuant); "
        "weights: int8 per output channel, symmetric"
    ),
}


def _choice_why(chosen: str, quality: dict[str, dict[str, float]], n: int) -> str:
    def show(name: str) -> str:
        q = quality[name]
        return (
            f"{name} agreement {q['argmax_agreement']:.4f}, max |prob diff| "
            f"{q['max_abs_prob_diff']:.4f}"
        )

    rejected = [name for name in quality if name not in (chosen, "rowwise")]
    text = f"{chosen}: the fastest scheme whose held-out quality ({n} texts vs fp32) is no worse "
    text += f"than rowwise's ({show('rowwise')})"
    if chosen != "rowwise":
        text += f"; {show(chosen)}"
    if rejected:
        text += "; rejected: " + "; ".join(show(r) for r in rejected)
    return text


def export_int8(
    staged: StagedModels,
    fp32: Fp32Export,
    options: ExportOptions,
    *,
    calibration_ids: Sequence[Sequence[int]] | None = None,
    eval_ids: Sequence[Sequence[int]] | None = None,
    fp32_session: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Quantize the checked fp32 graph with ``options.int8_scheme`` (see :func:`quantize_int8`:
    ``calibration_ids`` are training texts for the static scales, ``eval_ids`` the held-out
    texts that judge them against ``fp32_session``, the caller's session on the fp32 graph),
    stage ``model.int8.onnx``, compare it with fp32 on the probes;
    return its report entry and a CPU session on it.

    Raises :class:`ExportError` when the int8 graph answers a non-finite logit.
    """
    proto, info = quantize_int8(
        fp32.path,
        int8_format=options.int8_format,
        quantize_embeddings=options.quantize_embeddings,
        scheme=options.int8_scheme,
        calibration_ids=calibration_ids,
        eval_ids=eval_ids,
        threads=options.threads,
        fp32_session=fp32_session,
    )
    path = staged.write(proto, INT8)
    del proto
    session = make_session(path, threads=options.threads)
    vs_fp32 = fp32.probes.compare(session)
    if vs_fp32 is None:
        raise ExportError("the int8 graph produced non-finite logits on the probes")
    info["vs_fp32_on_probes"] = vs_fp32
    return info, session
