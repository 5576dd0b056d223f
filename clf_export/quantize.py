"""int8 quantization of an exported fp32 graph, for onnxruntime on CPU.

The fp32 graph's weight-only Split / Transpose nodes are already folded into plain weights
(:func:`clf_export.fusions.fold_weight_transforms`), so every weight MatMul reads an
initializer. :func:`clf_export.rowwise_int8.quantize_rowwise_int8` rewrites each one as a
u8 x s8 integer GEMM with one activation scale per row (token) and one weight scale per
output channel, and stores the embedding tables as int8 with one scale per row. Per-row
activation scales keep the pooling contract: a text's int8 logits do not depend on its batch
mates or its padding, which onnxruntime's ``quantize_dynamic`` (one scale per tensor) breaks.
The classification head stays fp32: it is tiny, and it is where rounding would flip a
decision. :func:`export_int8` stages ``model.int8.onnx`` and compares it with the fp32 graph
on the parity probes.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clf_runtime.contract import LOGITS

from .errors import ExportError
from .options import INT8, INT8_FORMATS, ExportOptions
from .parity import make_session

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


def quantize_int8(
    fp32_path: Path,
    *,
    int8_format: str = "auto",
    quantize_embeddings: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Quantize the fp32 graph at ``fp32_path``; return the int8 ``ModelProto`` and its settings.

    The caller adds metadata and saves the returned model (with external data when large).
    """
    import onnx

    from .rowwise_int8 import quantize_rowwise_int8

    fmt, why = resolve_int8_format(int8_format)
    fp32 = onnx.load(str(fp32_path))  # external data, if any, is read from beside the file
    head = _head_nodes(fp32.graph)
    try:
        model, stats = quantize_rowwise_int8(
            fp32,
            exclude_nodes=head,
            quantize_embedding=quantize_embeddings,
            reduce_range=fmt == "u8s8-reduce-range",
        )
    except (ValueError, KeyError) as e:
        raise ExportError(f"could not quantize {fp32_path.name} to int8: {e}") from e
    n_float = sum(n.op_type in ("MatMul", "Gemm") for n in model.graph.node)
    info: dict[str, Any] = {
        "format": fmt,
        "why": why,
        "cpu_has_vnni": cpu_has_vnni(),
        "scheme": (
            "activations: uint8 per row (token), symmetric (zero point 128), scale computed per "
            "call from that row alone; weights: int8 per output channel, symmetric"
        ),
        "weight_bits": stats.weight_bits,
        "int8_matmuls": stats.matmuls_quantized,
        # activation x activation (attention) products and the head stay float
        "float_matmuls": n_float,
        "excluded_nodes": head,
        "embedding_tables_int8": stats.gathers_quantized,
    }
    return model, info


def export_int8(
    staged: StagedModels, fp32: Fp32Export, options: ExportOptions
) -> tuple[dict[str, Any], Any]:
    """Quantize the checked fp32 graph, stage ``model.int8.onnx``, compare it with fp32 on the
    probes; return its report entry and a CPU session on it.

    Raises :class:`ExportError` when the int8 graph answers a non-finite logit.
    """
    proto, info = quantize_int8(
        fp32.path,
        int8_format=options.int8_format,
        quantize_embeddings=options.quantize_embeddings,
    )
    path = staged.write(proto, INT8)
    del proto
    session = make_session(path, threads=options.threads)
    vs_fp32 = fp32.probes.compare(session)
    if vs_fp32 is None:
        raise ExportError("the int8 graph produced non-finite logits on the probes")
    info["vs_fp32_on_probes"] = vs_fp32
    return info, session
