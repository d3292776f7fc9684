"""pcomm: fault-tolerant peer-to-peer collective communication for training across the
internet. See README.md and docs/ for the guide."""

from . import errors
from ._pcomm import PROTOCOL_VERSION
from .communicator import AllReduceHandle, Communicator, LinkInfo, ReduceInfo
from .coordinator import Coordinator
from .relay import Relay
from .state import SharedState, SyncInfo
from .tensors import ReduceOp

__version__ = "0.1.0"

__all__ = [
    "AllReduceHandle",
    "Communicator",
    "Coordinator",
    "LinkInfo",
    "ReduceInfo",
    "Relay",
    "ReduceOp",
    "SharedState",
    "SyncInfo",
    "crdt",
    "discovery",
    "errors",
    "optim",
    "PROTOCOL_VERSION",
    "__version__",
]


def __getattr__(name: str):
    # pcomm.optim needs torch, pcomm.discovery and pcomm.crdt need py-libp2p: import them
    # on first use so `import pcomm` stays light.
    if name in ("optim", "discovery", "crdt"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pcomm' has no attribute {name!r}")
