"""Training progress of every peer, in the run's CRDT store.

Each peer writes one entry of the map ``progress`` under its peer id: step, samples,
throughput, time, and anything extra. It flows to every replica without the
coordinator, survives partitions, and ``pcomm progress`` prints it as a table.

    board = ProgressBoard(store, samples_per_step=32)
    opt = pcomm.optim.DiLoCo(model, inner, comm, sync_every=50, progress=board)
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import InvalidArgumentError

kMinInterval = 1.0  # seconds: reports closer together than this are coalesced


class ProgressBoard:
    """Publishes this peer's progress into ``store`` (a ``pcomm.crdt.Store``).

    Args:
        store: the run's store (by convention named after the run).
        samples_per_step: if given, ``samples`` is derived as step x this.
        min_interval: reports within this many seconds of the last are skipped (the
            store keeps every write, so this bounds its growth over long runs).
    """

    def __init__(self, store: Any, samples_per_step: int | None = None, min_interval: float = kMinInterval) -> None:
        if samples_per_step is not None and (isinstance(samples_per_step, bool) or not isinstance(samples_per_step, int) or samples_per_step < 1):
            raise InvalidArgumentError(f"samples_per_step must be a positive int, got {samples_per_step!r}")
        self.store = store
        self.samples_per_step = samples_per_step
        self.min_interval = min_interval
        self._last: tuple[float, int] | None = None

    def report(self, step: int, samples: int | None = None, throughput: float | None = None, *, force: bool = False, **extra: Any) -> bool:
        """Publishes step, samples and throughput (samples/s if samples are known, else
        steps/s; derived from the previous report when not given). Returns False when
        skipped by ``min_interval``."""
        now = time.time()
        if self._last is not None and not force and now - self._last[0] < self.min_interval:
            return False
        if samples is None and self.samples_per_step is not None:
            samples = step * self.samples_per_step
        if throughput is None and self._last is not None and now > self._last[0]:
            per_step = self.samples_per_step or 1
            throughput = (step - self._last[1]) * per_step / (now - self._last[0])
        entry = {"step": step, "samples": samples, "throughput": throughput, "time": now, **extra}
        self.store.map("progress")[self.store.peer_id] = entry  # one row per peer, across restarts
        self._last = (now, step)
        return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return value


def progress_table(store: Any, now: float | None = None) -> str:
    """The ``progress`` map as an aligned text table, most advanced peer first. Entries
    that are not progress reports (any admitted writer, or anyone in a store without a
    run secret, can write to the map) are shown as '?'."""
    now = time.time() if now is None else now
    rows = []
    for writer, e in store.map("progress").items():
        e = e if isinstance(e, dict) else {}
        step, samples, speed = _number(e.get("step")), _number(e.get("samples")), _number(e.get("throughput"))
        outer, at = _number(e.get("outer_step")), _number(e.get("time"))
        rows.append((-(step or 0), writer, [
            "?" if step is None else f"{step:g}",
            "-" if samples is None else f"{samples:g}",
            "-" if speed is None else f"{speed:.1f}",
            "-" if outer is None else f"{outer:g}",
            "?" if at is None else f"{now - at:.1f}",
        ]))
    lines = [f"{'peer':14} {'step':>9} {'samples':>11} {'throughput':>11} {'outer':>6} {'age s':>7}"]
    for _, writer, (step, samples, speed, outer, age) in sorted(rows):
        lines.append(f"{'…' + str(writer)[-12:]:14} {step:>9} {samples:>11} {speed:>11} {outer:>6} {age:>7}")
    return "\n".join(lines)
