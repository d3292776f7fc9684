"""Replicated run metadata that needs no consensus: CRDTs (LWW map, add-wins OR-set,
PN- and G-counters) in named stores, replicated by delta anti-entropy over the
discovery node's libp2p host, signed per writer (in runs with a secret, taken only from
writers it admits), durable in SQLite. See docs/crdt.md.
"""

from .clock import HLC
from .deltas import InvalidDeltaError, RefusedDeltaError
from .progress import ProgressBoard, progress_table
from .store import Change, CounterView, MapView, SetView, Store
from .types import GCounter, LWWMap, ORSet, PNCounter

__all__ = [
    "Change", "CounterView", "GCounter", "HLC", "InvalidDeltaError", "LWWMap", "MapView",
    "ORSet", "PNCounter", "ProgressBoard", "RefusedDeltaError", "SetView", "Store", "progress_table",
]
