"""fp16 conversion of an exported fp32 graph (for CUDA), and the check that it still agrees.

The converter is ``onnxruntime.transformers.float16.convert_float_to_float16``: it ships with
onnxruntime, so fp16 needs no extra dependency. ``keep_io_types=True`` keeps the interface
of the fp32 file: int64 ``input_ids`` / ``lengths`` in, float32 ``logits`` out (a Cast at
each end), so the runtime feeds every precision the same way.

Ops that could overflow in fp16: GPT-2's residual stream has outlier features in the
thousands, whose squares overflow fp16 (max 65504) inside a hand-written LayerNorm. The
exported graph uses the fused ``LayerNormalization`` op with ``stash_type=1``, whose mean and
variance onnxruntime computes in fp32 on CPU and CUDA, and ``Softmax``, whose CUDA kernel
accumulates in fp32; GELU's ``x**3`` overflows only where ``tanh`` saturates anyway (its
result is then exactly ``x`` or ``0``). So the converter's default block list suffices (it keeps
``Range`` and a few int / ML ops in fp32); the check below catches any non-finite logit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from clf_runtime.session import CPU, CUDA, QUIET, cuda_is_usable

from .errors import ExportError
from .options import FP16, ExportOptions
from .parity import ProbeLogits, make_session

if TYPE_CHECKING:
    from .staging import StagedModels

__all__ = ["check_fp16", "convert_fp16", "export_fp16"]


def convert_fp16(fp32_path: Path) -> Any:
    """Convert the fp32 graph at ``fp32_path`` to fp16 with float32 inputs/outputs kept.

    Shape inference runs file-to-file first (``infer_shapes_path`` works past protobuf's
    2 GB limit, the in-memory variant does not). Its output is written beside ``fp32_path``,
    because it refers to the same external-data file by a bare name, and removed once read.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    inferred = fp32_path.with_name(f"inferred.{fp32_path.name}")
    try:
        onnx.shape_inference.infer_shapes_path(str(fp32_path), str(inferred))
        model = onnx.load(str(inferred))
        inferred.unlink()
        return convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    except Exception as e:  # the converter raises asserts / ValueErrors / onnx errors
        raise ExportError(f"could not convert {fp32_path.name} to fp16: {e}") from e


def _cuda_session(path: Path) -> tuple[Any | None, str]:
    """A session that really runs on CUDA, or (None, why not)."""
    if CUDA not in ort.get_available_providers():
        return None, "this onnxruntime build has no CUDAExecutionProvider"
    if not cuda_is_usable():
        return None, (
            "CUDAExecutionProvider is installed but cannot start (no GPU, driver or CUDA libraries)"
        )
    # Quiet for this session only: onnxruntime's process-wide log level belongs to the caller.
    try:
        session = make_session(path, providers=(CUDA, CPU), threads=None, log_severity_level=QUIET)
    except ExportError as e:
        return None, f"a CUDA session could not be created: {e}"
    if session.get_providers()[:1] != [CUDA]:
        return None, (
            "CUDAExecutionProvider is installed but could not start (no GPU, driver or CUDA "
            "libraries); onnxruntime fell back to CPU"
        )
    return session, CUDA


def check_fp16(
    fp16_path: Path, fp32: ProbeLogits, *, threads: int | None
) -> tuple[dict[str, Any], Any | None]:
    """Run the fp16 graph on CUDA when it really runs there, else on CPU; compare with fp32.

    ``fp32`` is the fp32 graph's logits on the probes. Returns the report entry (what was
    checked, on which provider, the numbers) and the session used (or None).
    Raises :class:`ExportError` when the fp16 graph yields non-finite logits.
    """
    session, why_not_cuda = _cuda_session(fp16_path)
    provider = CUDA
    if session is None:
        provider = CPU
        try:
            session = make_session(fp16_path, threads=threads)
        except ExportError as e:
            return {
                "checked": False,
                "reason": f"not run: CUDA unavailable ({why_not_cuda}) and {e}",
            }, None
    cmp = fp32.compare(session)
    if cmp is None:
        raise ExportError(
            f"the fp16 graph produced non-finite logits on {provider}: an activation overflows "
            "fp16 (max 65504). Export without --fp16 and serve fp32 on this model."
        )
    entry = {
        "checked": True,
        "provider": provider,
        "inputs": "the parity probes (seeded random ids)",
        "max_abs_logit_diff_vs_fp32": cmp["max_abs_logit_diff"],
        "argmax_agreement_vs_fp32": cmp["argmax_agreement"],
    }
    if provider != CUDA:
        entry["note"] = f"checked on CPU because {why_not_cuda}; fp16 is meant for CUDA"
    return entry, session


def export_fp16(
    staged: StagedModels, unfused: Path, fp32: ProbeLogits, options: ExportOptions
) -> tuple[dict[str, Any], Any | None]:
    """Convert ``unfused`` (the fp32 graph before the onnxruntime-only fusions) to fp16, stage
    ``model.fp16.onnx`` and check it against ``fp32``'s probe logits (:func:`check_fp16`);
    return its report entry and the session used (or None)."""
    proto = convert_fp16(unfused)
    path = staged.write(proto, FP16)
    del proto
    return check_fp16(path, fp32, threads=options.threads)
