"""Training progress of every peer, in the run's CRDT store.

Each peer writes one row of the map ``progress``: step, samples, throughput, time, and
anything extra. It flows to every replica without the coordinator, survives partitions,
and ``pcomm progress`` prints it as a table.

    board = ProgressBoard(store, samples_per_step=32)
    opt = pcomm.optim.DiLoCo(model, inner, comm, sync_every=50, progress=board)

Given the communicator (the DiLoCo optimizers pass theirs), a row is keyed by
``comm.peer_id`` and names the run incarnation (``comm.run_id``: a run whose peers all
stopped and started again under a new coordinator is a new incarnation), and the peer
at rank 0 adds its ring. The table then shows only the newest incarnation and marks
each peer alive (in the newest ring any peer reported) or gone (a peer that was
dropped or died, or was replaced), without asking the coordinator.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import InvalidArgumentError

kMinInterval = 1.0  # seconds: reports closer together than this are coalesced
kNoReports = "no peer of this run has reported progress yet"


class ProgressBoard:
    """Publishes this peer's progress into ``store`` (a ``pcomm.crdt.Store``).

    Args:
        store: the run's store (by convention named after the run).
        samples_per_step: if given, ``samples`` is derived as step x this.
        min_interval: reports within this many seconds of the last are skipped (the
            store keeps every write, so this bounds its growth over long runs).
        comm: the peer's ``Communicator`` (also accepted per ``report``): rows are
            then keyed by its peer id and carry its run incarnation, epoch and ring.
    """

    def __init__(self, store: Any, samples_per_step: int | None = None, min_interval: float = kMinInterval,
                 comm: Any = None) -> None:
        if samples_per_step is not None and (isinstance(samples_per_step, bool) or not isinstance(samples_per_step, int) or samples_per_step < 1):
            raise InvalidArgumentError(f"samples_per_step must be a positive int, got {samples_per_step!r}")
        self.store = store
        self.samples_per_step = samples_per_step
        self.min_interval = min_interval
        self.comm = comm
        self._last: tuple[float, int] | None = None

    def report(self, step: int, samples: int | None = None, throughput: float | None = None, *, comm: Any = None,
               force: bool = False, **extra: Any) -> bool:
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
        key = self.store.peer_id  # one row per store writer, across restarts
        comm = comm if comm is not None else self.comm
        if comm is not None and comm.peer_id:
            key = comm.peer_id  # one row per peer of the run
            entry.update(peer=comm.peer_id, run_id=comm.run_id, epoch=comm.epoch, world_size=comm.world_size)
            if comm.rank == 0:
                entry["ring"] = comm.peers
        self.store.map("progress")[key] = entry
        self._last = (now, step)
        return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return value


def _ring_of(rows: list[tuple[str, dict]]) -> tuple[float, float, list[str]] | None:
    """The newest ring any row carries: (epoch, time, peers)."""
    best = None
    for _, e in rows:
        ring, epoch, at = e.get("ring"), _number(e.get("epoch")), _number(e.get("time"))
        if not isinstance(ring, list) or not all(isinstance(p, str) for p in ring) or epoch is None or at is None:
            continue
        if best is None or (epoch, at) > best[:2]:
            best = (epoch, at, ring)
    return best


def progress_table(store: Any, now: float | None = None) -> str:
    """The ``progress`` map as an aligned text table, most advanced peer first, after a
    line naming the run incarnation shown. Entries that are not progress reports (any
    admitted writer, or anyone in a store without a run secret, can write to the map)
    are shown as '?'."""
    now = time.time() if now is None else now
    rows = [(str(k), e if isinstance(e, dict) else {}) for k, e in store.map("progress").items()]
    if not rows:
        return kNoReports
    # The newest incarnation: that of the most recent row naming one.
    stamped = [(_number(e.get("time")) or 0.0, e["run_id"]) for _, e in rows if isinstance(e.get("run_id"), str)]
    run_id = max(stamped)[1] if stamped else None
    shown = [(k, e) for k, e in rows if run_id is None or e.get("run_id") == run_id]
    hidden = len(rows) - len(shown)
    ring = _ring_of(shown)
    alive = set(ring[2]) if ring else None
    table = []
    for writer, e in shown:
        step, samples, speed = _number(e.get("step")), _number(e.get("samples")), _number(e.get("throughput"))
        outer, at = _number(e.get("outer_step")), _number(e.get("time"))
        table.append((-(step or 0), writer, [
            "?" if step is None else f"{step:g}",
            "-" if samples is None else f"{samples:g}",
            "-" if speed is None else f"{speed:.1f}",
            "-" if outer is None else f"{outer:g}",
            "?" if at is None else f"{now - at:.1f}",
            "-" if alive is None else ("alive" if writer in alive else "gone"),
        ]))
    if run_id is None:
        title = f"{len(shown)} peers reported (no run incarnation named)"
    else:
        title = f"run incarnation {run_id}: {len(shown)} peers reported"
    if ring:
        title += f"; ring of {len(ring[2])} at epoch {ring[0]:g}, as of {now - ring[1]:.1f} s ago"
    if hidden:
        title += f"; {hidden} rows of earlier incarnations not shown"
    lines = [title, f"{'peer':14} {'step':>9} {'samples':>11} {'throughput':>11} {'outer':>6} {'age s':>7} {'state':>6}"]
    for _, writer, (step, samples, speed, outer, age, state) in sorted(table):
        name = writer if len(writer) <= 14 else "…" + writer[-13:]
        lines.append(f"{name:14} {step:>9} {samples:>11} {speed:>11} {outer:>6} {age:>7} {state:>6}")
    return "\n".join(lines)
