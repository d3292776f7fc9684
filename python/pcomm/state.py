"""Shared state: named tensors every peer must hold bit-identically, plus a revision.

    state = pcomm.SharedState({"weight": w, "momentum": m}, revision=0)
    info = comm.sync_shared_state(state)          # everyone ends with the same bytes

See docs/state.md for how the content is chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidArgumentError
from .tensors import as_buffer

STRATEGIES = {"enforce_popular": 0, "receive_only": 1, "send_only": 2, "offer": 3}


@dataclass(frozen=True)
class SyncInfo:
    """What a sync did on this peer."""

    tensors_received: int
    bytes_received: int
    bytes_sent: int
    revision: int
    content_hash: int


class SharedState:
    """Named C-contiguous CPU torch tensors or numpy arrays (dtype and shape fixed) and a
    revision counter. Syncs update the tensors in place and set the revision."""

    def __init__(self, tensors: Mapping[str, Any], revision: int = 0) -> None:
        if not isinstance(tensors, Mapping) or not tensors:
            raise InvalidArgumentError("SharedState needs a non-empty dict of name -> tensor or array")
        self._tensors: dict[str, Any] = {}
        for name in sorted(tensors):
            if not isinstance(name, str) or not name or len(name.encode()) > 4096:
                raise InvalidArgumentError(f"tensor names must be non-empty strings, got {name!r}")
            buf = as_buffer(tensors[name], f"tensor '{name}'")
            if buf.cuda:
                raise InvalidArgumentError(f"tensor '{name}' is on a CUDA device; shared state holds CPU tensors")
            self._tensors[name] = tensors[name]
        self.revision = revision

    @property
    def revision(self) -> int:
        return self._revision

    @revision.setter
    def revision(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise InvalidArgumentError(f"revision must be an int in [0, 2**64), got {value!r}")
        self._revision = value

    @property
    def tensors(self) -> dict[str, Any]:
        """The tensors by name (the same objects that were passed in)."""
        return dict(self._tensors)

    def __getitem__(self, name: str) -> Any:
        return self._tensors[name]

    def _layout(self) -> list[tuple]:
        """(name, pointer, nbytes, dtype code, shape) in name order, for the C++ core."""
        items = []
        for name, t in self._tensors.items():
            buf = as_buffer(t, f"tensor '{name}'")
            items.append((name, buf.ptr, buf.nbytes, buf.dtype, [int(d) for d in buf.shape]))
        return items

    def __repr__(self) -> str:
        return f"SharedState({list(self._tensors)}, revision={self._revision})"
