"""Export attention as onnxruntime's fused ``com.microsoft.MultiHeadAttention``.

The dynamo exporter decomposes ``F.scaled_dot_product_attention`` into a Split of the packed
query/key/value projection, head reshapes and transposes, a causal mask built per block
(Expand / Trilu / Equal / Where), two scale Muls, two MatMuls and a Softmax: about 60 small
nodes per forward pass of GPT-2 small, most of them copies. onnxruntime's CPU
``MultiHeadAttention`` takes query, key and value as ``(B, T, C)`` tensors, splits heads and
adds the projection bias while it rearranges them, and applies the causal mask itself
(``unidirectional=1``) or a key padding mask given as one valid length per row.

Nothing changes for training: :func:`fused_attention` swaps
:class:`clf_train.model.CausalSelfAttention`'s two forwards, for the duration of one trace
only, for versions that call two torch custom ops (eager implementations: the same
``scaled_dot_product_attention`` calls as the model); :data:`TRANSLATIONS` maps those ops to
the contrib op for ``torch.onnx.export(custom_translation_table=...)``. The traced forwards
project query, key and value with three weight slices instead of one packed weight and a
Split: three MatMuls over the same input (which the int8 quantizer quantizes once) and no
copy of a ``(B, T, 3 C)`` tensor; the last block's query projection reads only the query
columns.

Why no mask in the causal blocks: inputs are right-padded, so under the causal mask a real
token never sees padding (the pooling contract), exactly as in the model. The last block's
single query (``forward_one``) sees every real key and no padding key: the key padding mask
``lengths`` (int32, shape ``(B,)``) says that, and onnxruntime skips the padding keys. Every
(row, head) pair is computed on its own, so a text's result does not depend on its batch
mates.

Importing this module imports torch and registers the ops (once per process); import it
lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnxscript import FLOAT, INT64
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

from clf_train.model import CausalSelfAttention

from .fusions import MS_DOMAIN

__all__ = ["TRANSLATIONS", "causal_attention", "fused_attention", "padded_attention"]


def _mha_schema() -> onnx.defs.OpSchema:
    """The inputs and attributes of onnxruntime's ``MultiHeadAttention`` that are used here.

    onnx registers no schema for onnxruntime's contrib ops, and the exporter's onnxscript
    evaluator needs one to emit a node.
    """
    schema = onnx.defs.OpSchema
    opt = schema.FormalParameterOption.Optional
    attr = schema.AttrType
    return schema(
        "MultiHeadAttention",
        MS_DOMAIN,
        1,
        inputs=[
            schema.FormalParameter("query", "T"),
            schema.FormalParameter("key", "T", param_option=opt),
            schema.FormalParameter("value", "T", param_option=opt),
            schema.FormalParameter("bias", "T", param_option=opt),
            schema.FormalParameter("key_padding_mask", "M", param_option=opt),
        ],
        outputs=[schema.FormalParameter("output", "T")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)"], "float tensors"),
            ("M", ["tensor(int32)"], "key lengths"),
        ],
        attributes=[
            schema.Attribute("num_heads", attr.INT, "number of heads", required=True),
            schema.Attribute("unidirectional", attr.INT, "causal mask", required=False),
        ],
    )


_MHA = Op(Opset(MS_DOMAIN, 1), "MultiHeadAttention", _mha_schema())


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.view(b, n, num_heads, c // num_heads).transpose(1, 2)  # (B, H, n, hd)


def _merge(y: torch.Tensor) -> torch.Tensor:
    b, h, n, hd = y.shape
    return y.transpose(1, 2).reshape(b, n, h * hd)  # (B, H, n, hd) -> (B, n, C)


def _add_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if bias is None:
        return q, k, v
    bq, bk, bv = bias.split(q.shape[-1])  # (3 C,) -> (C,) each
    return q + bq, k + bk, v + bv


@torch.library.custom_op("clf_export::causal_attention", mutates_args=())
def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    """Causal multi-head attention on ``(B, T, C)`` query/key/value -> ``(B, T, C)``; ``bias``
    ``(3 C,)``, when given, is added to ``[q | k | v]`` first."""
    q, k, v = _add_bias(q, k, v, bias)
    y = F.scaled_dot_product_attention(
        _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads), is_causal=True
    )
    return _merge(y)


@causal_attention.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, num_heads: int
) -> torch.Tensor:
    return torch.empty_like(q)


@torch.library.custom_op("clf_export::padded_attention", mutates_args=())
def padded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    """Attention of ``q`` (B, S, C) over the first ``lengths[b]`` keys of ``k``/``v`` (B, T, C);
    ``bias`` as in :func:`causal_attention`."""
    q, k, v = _add_bias(q, k, v, bias)
    key_pos = torch.arange(k.shape[1], device=k.device)
    mask = (key_pos[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T)
    y = F.scaled_dot_product_attention(
        _heads(q, num_heads), _heads(k, num_heads), _heads(v, num_heads), attn_mask=mask
    )
    return _merge(y)


@padded_attention.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    return torch.empty_like(q)


def _onnx_causal_attention(
    q: FLOAT, k: FLOAT, v: FLOAT, bias: FLOAT | None, num_heads: int
) -> FLOAT:
    return _MHA(q, k, v, bias, num_heads=num_heads, unidirectional=1)


def _onnx_padded_attention(
    q: FLOAT, k: FLOAT, v: FLOAT, bias: FLOAT | None, lengths: INT64, num_heads: int
) -> FLOAT:
    # key_padding_mask of shape (B,): the valid key count of each row, int32.
    valid = op.Cast(lengths, to=onnx.TensorProto.INT32)
    return _MHA(q, k, v, bias, valid, num_heads=num_heads)


TRANSLATIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    torch.ops.clf_export.causal_attention.default: _onnx_causal_attention,
    torch.ops.clf_export.padded_attention.default: _onnx_padded_attention,
}
"""``custom_translation_table`` for ``torch.onnx.export`` when tracing under
:func:`fused_attention`."""


def _projections(
    attn: CausalSelfAttention,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The packed (3 C, C) projection weight cut into its query, key and value rows."""
    c = attn.d_model
    w = attn.qkv.weight  # (3 C, C): rows [q | k | v]
    return w[:c], w[c : 2 * c], w[2 * c :]


def _forward(self: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    # Same computation as CausalSelfAttention.forward in eval mode (no dropout); the qkv
    # bias is added inside MultiHeadAttention (during its head split) instead of in a pass
    # of its own over (B, T, 3 C).
    wq, wk, wv = _projections(self)
    q, k, v = F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)  # (B, T, C) each
    return self.proj(causal_attention(q, k, v, self.qkv.bias, self.n_head))


def _forward_one(
    self: CausalSelfAttention, x: torch.Tensor, x_query: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    # Same computation as CausalSelfAttention.forward_one: the query of one position per
    # row, keys and values of every position.
    wq, wk, wv = _projections(self)
    q = F.linear(x_query, wq)  # (B, 1, C)
    k, v = F.linear(x, wk), F.linear(x, wv)  # (B, T, C) each
    return self.proj(padded_attention(q, k, v, self.qkv.bias, lengths, self.n_head))


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Within the block, every ``CausalSelfAttention`` computes attention through the custom
    ops of this module (same numbers; traced as ``MultiHeadAttention``). Not thread-safe:
    it patches the class."""
    saved = CausalSelfAttention.forward, CausalSelfAttention.forward_one
    CausalSelfAttention.forward = _forward  # type: ignore[method-assign]
    CausalSelfAttention.forward_one = _forward_one  # type: ignore[method-assign]
    try:
        yield
    finally:
        CausalSelfAttention.forward, CausalSelfAttention.forward_one = saved  # type: ignore[method-assign]
