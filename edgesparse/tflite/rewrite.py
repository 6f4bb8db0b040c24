"""Flatbuffer rewrites that the converter cannot be asked for.

:func:`float16_kernels` stores the float32 kernels of the float ops of an otherwise integer model (the ops
``quantization.keep_float`` leaves float) in float16, each behind a DEQUANTIZE op: the layout the converter
itself writes for ``mode: float16``, which LiteRT's builtin kernels and XNNPACK read (XNNPACK and the builtin
DEQUANTIZE turn a constant float16 tensor into float32 once, at load). The file loses half of those kernels'
bytes; the runtime memory does not change (the float32 copy is made at load).

Only ``ai_edge_litert.schema_py_generated`` (which needs just ``flatbuffers``) and numpy are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: ops whose input 1 is the kernel
_KERNEL_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")


@dataclass
class Float16Result:
    """The rewritten flatbuffer and what moved to float16."""

    data: bytes
    tensors: list[str]  # the kernels now stored in float16 (their float32 names)
    saved_bytes: int  # file bytes the kernels no longer take


def float16_kernels(model: bytes, op_indices: list[int] | None = None) -> Float16Result:
    """Store the constant float32 kernels of float ops in float16 (dequantized to float32 at load).

    Args:
        model: A .tflite flatbuffer.
        op_indices: The ops (indices in the first subgraph) whose kernel may move; None: every float op of
            :data:`_KERNEL_OPS` whose kernel is a dense constant float32 tensor. Sparse (CSR or block) kernels and
            kernels shared with an op not listed stay as they are.

    Returns:
        The new flatbuffer (the input unchanged when no kernel qualifies).
    """
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    g = m.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode)) for c in m.operatorCodes]
    users: dict[int, list[int]] = {}
    for i, op in enumerate(g.operators):
        for t in op.inputs if op.inputs is not None else []:
            users.setdefault(int(t), []).append(i)
    allowed = set(range(len(g.operators))) if op_indices is None else set(op_indices)
    found: set[int] = set()  # kernel tensors
    for i, op in enumerate(g.operators):
        if i not in allowed or codes[op.opcodeIndex] not in _KERNEL_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        k = int(op.inputs[1])
        t = g.tensors[k]
        buf = m.buffers[t.buffer] if t.buffer else None
        if (t.type != schema.TensorType.FLOAT32 or t.sparsity is not None or buf is None or buf.data is None
                or not len(buf.data) or not set(users.get(k, [])) <= allowed):
            continue
        found.add(k)
    if not found:
        return Float16Result(data=model, tensors=[], saved_bytes=0)
    kernels = sorted(found)
    saved = _to_float16(m, schema, kernels)
    return Float16Result(data=_pack(m, schema), tensors=[_name(g.tensors[k]) for k in kernels], saved_bytes=saved)


def _to_float16(m: Any, schema: Any, kernels: list[int]) -> int:
    """Move each kernel's values to a new float16 constant and make the kernel DEQUANTIZE's output; bytes saved."""
    g = m.subgraphs[0]
    dq = _opcode(m, schema, schema.BuiltinOperator.DEQUANTIZE)
    new_ops = []
    saved = 0
    for k in kernels:
        t = g.tensors[k]
        values = np.frombuffer(bytes(bytearray(m.buffers[t.buffer].data)), dtype="<f4")
        half = values.astype("<f2")
        buf = schema.BufferT()
        buf.data = np.frombuffer(half.tobytes(), dtype=np.uint8)
        m.buffers.append(buf)
        saved += values.nbytes - half.nbytes
        t16 = schema.TensorT()
        t16.shape, t16.type, t16.buffer = list(t.shape), schema.TensorType.FLOAT16, len(m.buffers) - 1
        t16.name = (t.name.decode() if isinstance(t.name, bytes) else str(t.name)) + "_fp16"
        g.tensors.append(t16)
        m.buffers[t.buffer] = schema.BufferT()  # emptied: the float32 kernel is now DEQUANTIZE's output
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = dq, [len(g.tensors) - 1], [k]
        new_ops.append(op)
    g.operators = new_ops + list(g.operators)  # constants in, so first is in order
    return saved


def _name(t: Any) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _opcode(m: Any, schema: Any, code: int) -> int:
    """The index of ``code``'s operator code in the model, added when missing."""
    for i, c in enumerate(m.operatorCodes):
        if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
            return i
    c = schema.OperatorCodeT()
    c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 3  # version 3: float16 inputs
    m.operatorCodes.append(c)
    return len(m.operatorCodes) - 1


def _pack(m: Any, schema: Any) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
