"""What the C++ servers (Coordinator, Relay) share in Python: start, stop (or close), the bound
address and the context manager. Each runs on its own C++ threads and never holds the
GIL while it waits."""

from __future__ import annotations

from typing import Any


class NativeServer:
    _impl: Any

    def start(self):
        """Binds the listening socket and starts serving; returns self."""
        self._impl.start()
        return self

    def stop(self) -> None:
        """Closes every connection and stops. Idempotent."""
        self._impl.stop()

    def close(self) -> None:
        """The same as ``stop()``: ``close()`` ends everything in pcomm (communicators,
        discovery nodes, stores, servers)."""
        self.stop()

    @property
    def address(self) -> str:
        """The ``"host:port"`` actually bound (after ``start()``)."""
        return self._impl.address

    def __enter__(self):
        if not self._impl.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
