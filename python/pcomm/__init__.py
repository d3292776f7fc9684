"""pcomm: fault-tolerant peer-to-peer collective communication for training across the
internet. See README.md and docs/ for the guide."""

from . import errors, optim
from ._pcomm import PROTOCOL_VERSION
from .communicator import AllReduceHandle, Communicator, ReduceInfo
from .coordinator import Coordinator
from .state import SharedState, SyncInfo
from .tensors import ReduceOp

__version__ = "0.1.0"

__all__ = [
    "AllReduceHandle",
    "Communicator",
    "Coordinator",
    "ReduceInfo",
    "ReduceOp",
    "SharedState",
    "SyncInfo",
    "errors",
    "optim",
    "PROTOCOL_VERSION",
    "__version__",
]
