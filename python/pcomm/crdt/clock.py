"""Hybrid logical clock (Kulkarni et al.): timestamps that follow wall time but never go
backwards and always exceed every timestamp this replica has seen.

A timestamp is ``(wall_ms, counter)``; last-writer-wins compares ``(wall_ms, counter,
writer, seq)``, so no two writes can tie.
"""

from __future__ import annotations

import threading
import time

kMaxCounter = 2**32  # deltas.py refuses counters at or above this
kMaxAheadMs = 60_000  # remote timestamps further ahead of our wall clock are refused (Store.receive)


class HLC:
    def __init__(self, now_ms=lambda: int(time.time() * 1000)) -> None:
        self._now_ms = now_ms
        self._wall = 0
        self._counter = 0
        self._lock = threading.Lock()

    def now(self) -> tuple[int, int]:
        """A timestamp greater than every one returned or observed before."""
        with self._lock:
            wall = self._now_ms()
            if wall > self._wall:
                self._wall, self._counter = wall, 0
            elif self._counter + 1 >= kMaxCounter:
                self._wall, self._counter = self._wall + 1, 0  # counter full: borrow the next ms
            else:
                self._counter += 1
            return self._wall, self._counter

    def too_far_ahead(self, wall_ms: int) -> bool:
        """True if ``wall_ms`` is more than ``kMaxAheadMs`` ahead of our wall clock. A
        replica refuses such writes: a last-writer-wins stamp from the far future would
        beat every honest write to its key for as long as the stamp is ahead."""
        return wall_ms > self._now_ms() + kMaxAheadMs

    def observe(self, ts: tuple[int, int]) -> None:
        """Moves the clock past a timestamp seen in a remote (or replayed) write, unless
        that timestamp is more than ``kMaxAheadMs`` ahead of our wall clock: a broken or
        hostile clock must not drag every later write of ours into the future."""
        with self._lock:
            if self.too_far_ahead(ts[0]):
                return
            if ts > (self._wall, self._counter):
                self._wall, self._counter = ts
