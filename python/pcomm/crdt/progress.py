"""Training progress of every peer, in the run's CRDT store.

Each peer writes one entry of the map ``progress`` under its writer id: step, samples,
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
        self.store.map("progress")[self.store.writer] = entry
        self._last = (now, step)
        return True


def progress_table(store: Any, now: float | None = None) -> str:
    """The ``progress`` map as an aligned text table, most advanced peer first."""
    now = time.time() if now is None else now
    rows = sorted(store.map("progress").items(), key=lambda kv: (-(kv[1].get("step") or 0), kv[0]))
    header = f"{'peer':14} {'step':>9} {'samples':>11} {'throughput':>11} {'outer':>6} {'age s':>7}"
    lines = [header]
    for writer, e in rows:
        samples = "-" if e.get("samples") is None else str(e["samples"])
        speed = "-" if e.get("throughput") is None else f"{e['throughput']:.1f}"
        outer = "-" if e.get("outer_step") is None else str(e["outer_step"])
        lines.append(f"{'…' + writer[-12:]:14} {e.get('step', 0):>9} {samples:>11} {speed:>11} {outer:>6} {now - e.get('time', now):>7.1f}")
    return "\n".join(lines)
