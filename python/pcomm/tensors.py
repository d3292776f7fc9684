"""Adapters from numpy arrays and torch tensors to what the C++ core takes: a raw data
pointer, an element count and a dtype code. No data is copied for CPU inputs; CUDA
tensors are staged through host memory (see ``Staged``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

# Codes are part of the wire protocol (csrc/core/dtype.h).
_NUMPY_DTYPES = {
    np.dtype(np.float16): 1,
    np.dtype(np.float32): 3,
    np.dtype(np.float64): 4,
    np.dtype(np.int8): 5,
    np.dtype(np.uint8): 6,
    np.dtype(np.int16): 7,
    np.dtype(np.int32): 8,
    np.dtype(np.int64): 9,
}
_TORCH_DTYPE_NAMES = {
    "torch.float16": 1,
    "torch.bfloat16": 2,
    "torch.float32": 3,
    "torch.float64": 4,
    "torch.int8": 5,
    "torch.uint8": 6,
    "torch.int16": 7,
    "torch.int32": 8,
    "torch.int64": 9,
}
SUPPORTED = "float16, bfloat16 (torch), float32, float64, int8, uint8, int16, int32, int64"


class ReduceOp(str, enum.Enum):
    """Reduction of ``all_reduce``; plain strings ("sum", ...) work too."""

    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    PROD = "prod"


_OP_CODES = {"sum": 1, "avg": 2, "min": 3, "max": 4, "prod": 5}
_QUANT_CODES = {None: 0, "none": 0, "minmax_u8": 1}


def op_code(op: Any) -> int:
    key = op.value if isinstance(op, ReduceOp) else op
    if key not in _OP_CODES:
        raise InvalidArgumentError(f"op must be one of {sorted(_OP_CODES)} or a pcomm.ReduceOp, got {op!r}")
    return _OP_CODES[key]


def quantization_code(quantization: Any) -> int:
    if quantization not in _QUANT_CODES:
        raise InvalidArgumentError(f"quantization must be None or 'minmax_u8', got {quantization!r}")
    return _QUANT_CODES[quantization]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


@dataclass
class Buffer:
    """A validated view of an array: pointer, element count, dtype code, size in bytes."""

    obj: Any  # keeps the array alive while the C++ core uses the pointer
    ptr: int
    count: int
    dtype: int
    nbytes: int
    shape: tuple
    cuda: bool = False


def as_buffer(x: Any, name: str = "x", writable: bool = True) -> Buffer:
    """Validates x (C-contiguous numpy array or CPU/CUDA torch tensor) and returns its
    raw view. Raises InvalidArgumentError saying what to fix."""
    if _is_torch(x):
        dtype = _TORCH_DTYPE_NAMES.get(str(x.dtype))
        if dtype is None:
            raise InvalidArgumentError(f"{name} has dtype {x.dtype}; supported: {SUPPORTED}")
        if not x.is_contiguous():
            raise InvalidArgumentError(f"{name} is not contiguous; pass {name}.contiguous() (and copy the result back)")
        if x.device.type not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"{name} is on device {x.device}; only CPU and CUDA tensors are supported")
        if x.requires_grad and x.is_leaf and writable:
            raise InvalidArgumentError(f"{name} requires grad; pass {name}.detach() or use torch.no_grad()")
        return Buffer(x, x.data_ptr(), x.numel(), dtype, x.numel() * x.element_size(), tuple(x.shape),
                      x.device.type == "cuda")
    if isinstance(x, np.ndarray):
        dtype = _NUMPY_DTYPES.get(x.dtype)
        if dtype is None:
            raise InvalidArgumentError(f"{name} has dtype {x.dtype}; supported: {SUPPORTED}")
        if not x.flags.c_contiguous:
            raise InvalidArgumentError(
                f"{name} is not C-contiguous; pass np.ascontiguousarray({name}) (and copy the result back)"
            )
        if writable and not x.flags.writeable:
            raise InvalidArgumentError(f"{name} is read-only; all_reduce writes its result in place")
        return Buffer(x, x.ctypes.data, x.size, dtype, x.nbytes, x.shape)
    raise InvalidArgumentError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


class Staged:
    """Host staging for a CUDA tensor: the op runs on a pinned CPU copy, and ``finish``
    copies the result back to the device."""

    def __init__(self, tensor: Any) -> None:
        self.device_tensor = tensor
        self.host = tensor.detach().to("cpu", copy=True)

    def finish(self) -> None:
        self.device_tensor.copy_(self.host)
