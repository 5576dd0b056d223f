"""Graph rewrites that onnxruntime's own optimizer misses on the exported graph.

``torch.onnx.export`` (dynamo) decomposes GPT-2's tanh-approximated GELU into eight
elementwise nodes::

    y = x * (0.5 * (1 + tanh(c * (x + 0.044715 * x**3))))     # c = sqrt(2 / pi)

in an operand order that onnxruntime's FastGelu fusion does not recognise, so every MLP paid
eight passes over a ``(tokens, 4 d)`` tensor, a sizeable share of an int8 forward pass.
:func:`fuse_tanh_gelu` replaces the pattern, and the MLP bias add before it, by
onnxruntime's ``com.microsoft.FastGelu``: one pass, the op onnxruntime itself fuses Hugging
Face's GPT-2 into. (The graph then needs onnxruntime, which is what serves it.)

The exporter can also leave weight-only transforms (a transposed or split weight) as nodes
that run on every call; :func:`fold_weight_transforms` turns them into plain weights.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["MS_DOMAIN", "drop_unused_initializers", "fold_weight_transforms", "fuse_tanh_gelu"]

MS_DOMAIN = "com.microsoft"


def _constants(graph: onnx.GraphProto) -> dict[str, float]:
    """Names of scalar (single-element) float constants -> value."""
    out: dict[str, float] = {}
    for t in graph.initializer:
        if np.prod(t.dims, dtype=np.int64) == 1:
            out[t.name] = float(numpy_helper.to_array(t).reshape(-1)[0])
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            arr = numpy_helper.to_array(n.attribute[0].t)
            if arr.size == 1:
                out[n.output[0]] = float(arr.reshape(-1)[0])
    return out


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers that no node reads and no graph output names, in place."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    # Delete by index: comparing large tensor messages for `remove` would be slow.
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in used:
            del graph.initializer[index]


def _bias_of(node: onnx.NodeProto | None, one_d: set[str]) -> tuple[str, str] | None:
    """(input, bias) when ``node`` is ``Add(input, bias)`` with ``bias`` one of ``one_d``,
    the names of the graph's 1-D constants."""
    if node is None or node.op_type != "Add" or len(node.input) != 2:
        return None
    a, b = node.input
    if b in one_d:
        return a, b
    if a in one_d:
        return b, a
    return None


def _close(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-4 * max(1.0, abs(target))


def fuse_tanh_gelu(model: onnx.ModelProto) -> int:
    """Replace every decomposed tanh-GELU in ``model`` by ``FastGelu``, in place; return the count.

    Matches the chain Pow(x, 3) -> Mul(0.044715) -> Add(x) -> Mul(sqrt(2/pi)) -> Tanh -> Add(1)
    -> Mul(0.5) -> Mul(x), with either operand order at each binary node, and only when every
    intermediate result has a single consumer (so nothing else reads what is removed).
    """
    graph = model.graph
    consts = _constants(graph)
    nodes = list(graph.node)  # one list of node objects, so identities (id) stay stable
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def sole_consumer(name: str, op: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def other(node: onnx.NodeProto, known: str) -> str | None:
        ins = list(node.input)
        if len(ins) != 2 or known not in ins:
            return None
        return ins[1] if ins[0] == known else ins[0]

    one_d = {t.name for t in graph.initializer if len(t.dims) == 1}
    remove: set[int] = set()
    replacements: dict[int, onnx.NodeProto] = {}
    fused = 0
    for pow_node in nodes:
        if pow_node.op_type != "Pow" or not _close(consts.get(pow_node.input[1]), 3.0):
            continue
        x = pow_node.input[0]
        chain = [pow_node]
        mul_c = sole_consumer(pow_node.output[0], "Mul")
        if mul_c is None or not _close(
            consts.get(other(mul_c, pow_node.output[0]) or ""), 0.044715
        ):
            continue
        add_x = sole_consumer(mul_c.output[0], "Add")
        if add_x is None or other(add_x, mul_c.output[0]) != x:
            continue
        mul_k = sole_consumer(add_x.output[0], "Mul")
        k = math.sqrt(2.0 / math.pi)
        if mul_k is None or not _close(consts.get(other(mul_k, add_x.output[0]) or ""), k):
            continue
        tanh = sole_consumer(mul_k.output[0], "Tanh")
        if tanh is None:
            continue
        add_1 = sole_consumer(tanh.output[0], "Add")
        if add_1 is None or not _close(consts.get(other(add_1, tanh.output[0]) or ""), 1.0):
            continue
        mul_half = sole_consumer(add_1.output[0], "Mul")
        if mul_half is None or not _close(consts.get(other(mul_half, add_1.output[0]) or ""), 0.5):
            continue
        mul_x = sole_consumer(mul_half.output[0], "Mul")
        if mul_x is None or other(mul_x, mul_half.output[0]) != x:
            continue
        chain += [mul_c, add_x, mul_k, tanh, add_1, mul_half, mul_x]
        inputs = [x]
        # FastGelu adds a bias itself: fold the MLP's "x = h + bias" in when only GELU reads x.
        folded = _bias_of(producer.get(x), one_d)
        if folded is not None and len(consumers[x]) == 3:  # Pow, Add and Mul of this chain
            inputs = list(folded)
            chain.insert(0, producer[x])
        ids = [id(n) for n in chain]
        remove.update(ids[:-1])
        replacements[ids[-1]] = helper.make_node(
            "FastGelu",
            inputs,
            [mul_x.output[0]],
            name=f"{mul_x.name or x}/FastGelu",
            domain=MS_DOMAIN,
        )
        fused += 1
    if not fused:
        return 0
    kept = [replacements.get(id(n), n) for n in nodes if id(n) not in remove]
    del graph.node[:]
    graph.node.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    drop_unused_initializers(model)
    return fused


def fold_weight_transforms(model: onnx.ModelProto) -> int:
    """Replace Split / Slice / Transpose nodes whose inputs are all initializers by their results.

    The exporter can leave weight-only transforms (a transposed or split weight) as nodes that
    run on every call; folded, they become plain weights that the int8 quantizer sees (it only
    quantizes MatMuls whose weight is an initializer). Works in memory at any size.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded = 0
    for node in list(graph.node):
        if node.op_type not in ("Split", "Transpose", "Slice"):
            continue
        names = [i for i in node.input if i]
        if not names or not all(i in inits for i in names):
            continue
        x = numpy_helper.to_array(inits[node.input[0]])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            outs = [np.transpose(x, attrs.get("perm"))]
        elif node.op_type == "Slice":  # opset >= 10: starts, ends[, axes[, steps]] as inputs
            starts, ends, *rest = (numpy_helper.to_array(inits[i]) for i in node.input[1:] if i)
            axes = rest[0] if rest else range(len(starts))
            steps = rest[1] if len(rest) > 1 else [1] * len(starts)
            index = [slice(None)] * x.ndim
            for a, b, e, st in zip(axes, starts, ends, steps, strict=True):
                index[int(a)] = slice(int(b), int(e), int(st))
            outs = [x[tuple(index)]]
        else:
            axis = int(attrs.get("axis", 0))
            if len(node.input) > 1 and node.input[1]:
                sizes = [int(s) for s in numpy_helper.to_array(inits[node.input[1]])]
            else:  # opset 18 equal split: ceil-sized chunks, the last one smaller
                n = int(attrs.get("num_outputs", len(node.output)))
                chunk = math.ceil(x.shape[axis] / n)
                sizes = [chunk] * (n - 1) + [x.shape[axis] - chunk * (n - 1)]
            outs = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
        graph.node.remove(node)
        for name, arr in zip(node.output, outs, strict=True):
            if name:
                tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
                graph.initializer.append(tensor)
                inits[name] = tensor
        folded += 1
    drop_unused_initializers(model)
    return folded
