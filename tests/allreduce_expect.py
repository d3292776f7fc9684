"""Expected all-reduce results, computed independently of pcomm with numpy (and torch
for bfloat16), for the inputs of harness.make_input."""

from __future__ import annotations

import numpy as np
from harness import make_input


def _to_numpy_f32(x):
    return x.float().numpy() if hasattr(x, "data_ptr") else x


def expected(dtype: str, op: str, count: int, world: int, indices=None):
    """The exact result of all-reducing make_input(dtype, count, i, op) over the given
    peer indices (default 0..world-1), in pcomm's documented semantics."""
    indices = list(range(world)) if indices is None else indices
    inputs = [make_input(dtype, count, i, op) for i in indices]
    n = len(inputs)
    if dtype == "bfloat16":
        import torch

        stack = torch.stack([x.float() for x in inputs])
        if op in ("sum", "avg"):
            r = stack.sum(0)
            if op == "avg":
                r = r / n
        elif op == "min":
            r = stack.min(0).values
        elif op == "max":
            r = stack.max(0).values
        else:
            r = stack.prod(0)
        return r.to(torch.bfloat16)
    wide = np.int64 if np.dtype(dtype).kind in "iu" else np.float64
    stack = np.stack([x.astype(wide) for x in inputs])
    if op in ("sum", "avg"):
        r = stack.sum(0)
        if op == "avg":
            if np.dtype(dtype).kind in "iu":
                r = np.sign(r) * (np.abs(r) // n)  # truncation toward zero
            elif dtype == "float16":
                return (r.astype(np.float32) / np.float32(n)).astype(np.float16)
            else:
                return (r.astype(dtype) / np.array(n, dtype=dtype)).astype(dtype)
    elif op == "min":
        r = stack.min(0)
    elif op == "max":
        r = stack.max(0)
    else:
        r = stack.prod(0)
    return r.astype(dtype)
