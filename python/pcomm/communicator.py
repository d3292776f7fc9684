"""Communicator: one peer of a pcomm run.

Typical use::

    with pcomm.Communicator(coordinator="127.0.0.1:29500") as comm:
        comm.connect()
        for step in range(steps):
            comm.update_topology()     # admit peers waiting to join
            ...

Every blocking call takes ``timeout`` (seconds or ``timedelta``); ``None`` means the
communicator's default (constructor, else ``PCOMM_TIMEOUT``, else 30 s). The GIL is
released while a call waits.
"""

from __future__ import annotations

from datetime import timedelta

from . import _pcomm
from ._timeouts import default_timeout, to_seconds
from .errors import InvalidArgumentError

__all__ = ["Communicator"]


class Communicator:
    """A peer of a pcomm run.

    Args:
        coordinator: the coordinator's ``"host:port"``.
        timeout: default deadline of every blocking call, in seconds.
        connections_per_peer: TCP connections in each data link pool (1 to 64).
        run: the run name; the coordinator refuses a peer of another run.
        data_listen: ``"host:port"`` where this peer accepts data links; the default
            listens on every interface and advertises the address it reaches the
            coordinator from.
    """

    def __init__(
        self,
        coordinator: str,
        timeout: float | timedelta | None = None,
        connections_per_peer: int = 4,
        *,
        run: str = "default",
        data_listen: str = "0.0.0.0:0",
    ) -> None:
        if not isinstance(coordinator, str):
            raise InvalidArgumentError(f"coordinator must be a 'host:port' string, got {coordinator!r}")
        if isinstance(connections_per_peer, bool) or not isinstance(connections_per_peer, int):
            raise InvalidArgumentError(f"connections_per_peer must be an int, got {connections_per_peer!r}")
        if not 1 <= connections_per_peer <= 64:
            raise InvalidArgumentError(f"connections_per_peer must be between 1 and 64, got {connections_per_peer}")
        self.timeout = default_timeout(timeout)
        self._impl = _pcomm.Communicator(
            coordinator=coordinator,
            run=run,
            connections_per_peer=connections_per_peer,
            timeout=self.timeout,
            data_listen=data_listen,
        )
        self.coordinator = coordinator
        self.run = run

    def _deadline(self, timeout: float | timedelta | None) -> float:
        seconds = to_seconds(timeout, "timeout")
        return self.timeout if seconds is None else seconds

    def connect(self, timeout: float | timedelta | None = None) -> "Communicator":
        """Joins the run; returns once the coordinator accepted this peer.

        The first peer is accepted at once; later peers wait as pending until the
        accepted peers call ``update_topology()``. Also used to rejoin, as a new peer,
        after this peer was dropped.
        """
        self._impl.connect(timeout=self._deadline(timeout))
        return self

    def update_topology(self, timeout: float | timedelta | None = None) -> None:
        """Collective among accepted peers: admits pending peers and opens the data
        links of the new epoch. One round trip when nobody is pending."""
        self._impl.update_topology(timeout=self._deadline(timeout))

    def close(self) -> None:
        """Leaves the run at once and releases every socket. Idempotent."""
        self._impl.close()

    @property
    def world_size(self) -> int:
        """Number of accepted peers in the current epoch (0 before connect)."""
        return self._impl.world_size

    @property
    def rank(self) -> int:
        """This peer's position in the ring (-1 before connect)."""
        return self._impl.rank

    @property
    def epoch(self) -> int:
        """Membership epoch; advances whenever peers are admitted or dropped."""
        return self._impl.epoch

    @property
    def peer_id(self) -> str:
        """This peer's id, assigned by the coordinator ("" before connect)."""
        return self._impl.peer_id

    @property
    def peers(self) -> list[str]:
        """Peer ids in ring order."""
        return list(self._impl.peers)

    @property
    def pending_peers(self) -> int:
        """How many peers wait to be admitted at the next ``update_topology()``."""
        return self._impl.pending_peers

    @property
    def connected(self) -> bool:
        """True while this peer is an accepted member of the run."""
        return self._impl.connected

    @property
    def data_address(self) -> str:
        """The ``"host:port"`` this peer advertises for data links ("" before connect)."""
        return self._impl.data_address

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Communicator(coordinator={self.coordinator!r}, peer_id={self.peer_id!r}, "
            f"rank={self.rank}, world_size={self.world_size}, epoch={self.epoch})"
        )
