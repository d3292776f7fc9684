"""The replicated data types: LWW map, OR-set (add-wins), PN-counter and G-counter.

State-based CRDTs whose deltas are small states of the same type: ``merge`` is
commutative, associative and idempotent (property-tested with hypothesis), so replicas
may receive deltas in any order, lose some (anti-entropy resends them) or get them
twice. Each type turns one validated delta into a state change (``apply``) and reports
what changed, for subscriptions. Pure: no I/O, no threads.

Delta content (``d`` in a signed delta, see deltas.py), per type:

=========  ===========================================================================
lww        {"key": str, "ts": [wall_ms, counter], "value": JSON}  or  "deleted": true
orset      {"add": elem}  (the delta's own (writer, seq) is the add's unique tag), or
           {"remove": elem, "tags": [[writer, seq], ...]}  (that element's tags observed)
pn         {"p": total increments by this writer, "n": total decrements}
g          {"p": total increments by this writer}
=========  ===========================================================================
"""

from __future__ import annotations

import json
from typing import Any

Tag = tuple[str, int]  # (writer, seq): unique per write


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class LWWMap:
    """Map whose entries resolve by the greatest (wall_ms, counter, writer, seq) stamp.
    The HLC never gives one writer the same timestamp twice; ``seq`` still breaks such a
    tie (from a buggy or hostile writer) the same way on every replica. A delete is an
    entry too (a tombstone), so it wins or loses like a write."""

    type_name = "lww"

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tuple[int, int, str, int], bool, Any]] = {}

    def apply(self, delta: dict, writer: str, seq: int) -> list[tuple[str, Any]]:
        stamp = (delta["ts"][0], delta["ts"][1], writer, seq)
        entry = (stamp, bool(delta.get("deleted", False)), delta.get("value"))
        old = self.entries.get(delta["key"])
        if old is not None and old[0] >= stamp:
            return []
        self.entries[delta["key"]] = entry
        return [(delta["key"], None if entry[1] else entry[2])]

    def merge(self, other: "LWWMap") -> None:
        for key, entry in other.entries.items():
            old = self.entries.get(key)
            if old is None or old[0] < entry[0]:
                self.entries[key] = entry

    def value(self) -> dict[str, Any]:
        return {k: v for k, (_, dead, v) in sorted(self.entries.items()) if not dead}

    def state(self) -> Any:
        return {k: [list(s), d, v] for k, (s, d, v) in sorted(self.entries.items())}


class ORSet:
    """Observed-remove set: a remove deletes only the adds of that element it has seen,
    so an add that is concurrent with a remove survives (add wins)."""

    type_name = "orset"

    def __init__(self) -> None:
        self.adds: dict[str, set[Tag]] = {}  # canonical element -> tags of its adds
        self.removed: dict[str, set[Tag]] = {}  # canonical element -> tags removed
        self._elements: dict[str, Any] = {}

    def tags_of(self, element: Any) -> list[Tag]:
        key = canonical(element)
        return sorted(self.adds.get(key, set()) - self.removed.get(key, set()))

    def apply(self, delta: dict, writer: str, seq: int) -> list[tuple[Any, bool]]:
        element = delta["add"] if "add" in delta else delta["remove"]
        key = canonical(element)
        before = self._contains(key)
        self._elements.setdefault(key, json.loads(key))  # one representation everywhere
        if "add" in delta:
            self.adds.setdefault(key, set()).add((writer, seq))
        else:
            self.removed.setdefault(key, set()).update((w, s) for w, s in delta["tags"])
        after = self._contains(key)
        return [] if before == after else [(self._elements[key], after)]

    def _contains(self, key: str) -> bool:
        return bool(self.adds.get(key, set()) - self.removed.get(key, set()))

    def merge(self, other: "ORSet") -> None:
        for mine, theirs in ((self.adds, other.adds), (self.removed, other.removed)):
            for key, tags in theirs.items():
                mine.setdefault(key, set()).update(tags)
                self._elements.setdefault(key, other._elements[key])

    def value(self) -> list[Any]:
        return [self._elements[k] for k in sorted(self.adds) if self._contains(k)]

    def state(self) -> Any:
        return {
            "adds": {k: sorted(map(list, t)) for k, t in sorted(self.adds.items())},
            "removed": {k: sorted(map(list, t)) for k, t in sorted(self.removed.items())},
        }


class GCounter:
    """Grow-only counter: one running total per writer; the value is their sum."""

    type_name = "g"

    def __init__(self) -> None:
        self.p: dict[str, int] = {}

    def apply(self, delta: dict, writer: str, seq: int) -> list[tuple[str, int]]:
        before = self.value()
        self.p[writer] = max(self.p.get(writer, 0), delta["p"])
        return [] if self.value() == before else [("value", self.value())]

    def merge(self, other: "GCounter") -> None:
        for w, v in other.p.items():
            self.p[w] = max(self.p.get(w, 0), v)

    def value(self) -> int:
        return sum(self.p.values())

    def state(self) -> Any:
        return {"p": dict(sorted(self.p.items()))}


class PNCounter:
    """Counter with increments and decrements: two grow-only totals per writer."""

    type_name = "pn"

    def __init__(self) -> None:
        self.p: dict[str, int] = {}
        self.n: dict[str, int] = {}

    def apply(self, delta: dict, writer: str, seq: int) -> list[tuple[str, int]]:
        before = self.value()
        self.p[writer] = max(self.p.get(writer, 0), delta["p"])
        self.n[writer] = max(self.n.get(writer, 0), delta["n"])
        return [] if self.value() == before else [("value", self.value())]

    def merge(self, other: "PNCounter") -> None:
        for mine, theirs in ((self.p, other.p), (self.n, other.n)):
            for w, v in theirs.items():
                mine[w] = max(mine.get(w, 0), v)

    def value(self) -> int:
        return sum(self.p.values()) - sum(self.n.values())

    def state(self) -> Any:
        return {"p": dict(sorted(self.p.items())), "n": dict(sorted(self.n.items()))}


TYPES = {t.type_name: t for t in (LWWMap, ORSet, GCounter, PNCounter)}
