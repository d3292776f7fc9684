"""The run's coordinator: admits peers, orders the ring, detects failures.

It runs on its own C++ thread and never holds the GIL while it waits, so it can live
inside a training process or stand alone (``pcomm coordinator``).
"""

from __future__ import annotations

import os
from datetime import timedelta

from . import _pcomm, _secret
from ._server import NativeServer
from ._timeouts import to_seconds
from .errors import InvalidArgumentError

__all__ = ["Coordinator"]


class Coordinator(NativeServer):
    """A pcomm coordinator. ``start()`` binds and serves (also as a context manager);
    ``stop()`` closes every connection; peers look for a coordinator for their
    ``coordinator_grace`` (a restart on the same address, a standby) and raise
    ``CoordinatorLostError`` when none takes them back.

    Args:
        listen: ``"host:port"`` to listen on; port 0 picks a free port (see ``address``).
        heartbeat_timeout: seconds of silence after which a peer is dropped (peers also
            drop a coordinator silent for this long).
        run: the run name peers must give in their hello.
        relays: ``"host:port"`` of relays (``pcomm relay``) for peers that can reach
            each other neither directly nor by hole punching; more can be added with
            ``add_relay`` (the CLI adds those announced in the DHT).
        secret: the run secret (bytes or str, at least 16 bytes); default: the file
            named by ``PCOMM_SECRET_FILE``, else none. Peers and relays must hold the same.
        insecure: allow listening on a non-loopback address without a secret (anyone
            who reaches the port can then join and read the run).
        straggler_timeout: when some ring members wait in update_topology, an all_reduce
            or a sync_shared_state and others have been idle (in no call) that long while
            it waited (seconds), every one of those idle peers is dropped at once
            (a hung data loader, a stuck GPU) and the rest go on with the smaller world;
            the dropped peer gets ``PeerLostError`` saying why. ``None``: never.
        state_dir: a directory where the coordinator keeps its term and last ring
            (written atomically), so a restart never reuses a term and gathers the
            ring's peers before it admits anyone (docs/failover.md). None: nothing kept.
        standby: serve nobody while the coordinator at ``peer_of`` answers; take over
            (a new term, formed from the peers that re-register) once it has been silent
            for ``heartbeat_timeout``, or as soon as a majority of its ring comes here.
        peer_of: the other coordinator's ``"host:port"``: the primary a standby
            watches. A serving coordinator that watches one steps down when the other
            serves a newer term, and fences an older one that comes back.
        gather_window: seconds a new term waits for the last ring's peers to
            re-register (at once when all are back; a majority after the window;
            whoever came after 3 windows).
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        heartbeat_timeout: float | timedelta = 5.0,
        run: str = "default",
        relays: list[str] | tuple[str, ...] = (),
        *,
        secret: bytes | str | None = None,
        insecure: bool = False,
        straggler_timeout: float | timedelta | None = 10.0,
        state_dir: str | None = None,
        standby: bool = False,
        peer_of: str | None = None,
        gather_window: float | timedelta = 2.0,
    ) -> None:
        seconds = to_seconds(heartbeat_timeout, "heartbeat_timeout")
        straggler = 0.0 if straggler_timeout is None else to_seconds(straggler_timeout, "straggler_timeout")
        if isinstance(relays, str):
            raise InvalidArgumentError("relays must be a list of 'host:port' strings, not one string")
        key = _secret.resolve(secret)
        window = to_seconds(gather_window, "gather_window")
        if standby and not peer_of:
            raise InvalidArgumentError("a standby coordinator needs peer_of='host:port' (the primary it watches)")
        if state_dir is not None:
            os.makedirs(state_dir, exist_ok=True)
        self._impl = _pcomm.Coordinator(listen=listen, run=run, heartbeat_timeout=seconds, relays=list(relays),
                                        secret=key or b"", insecure=bool(insecure), straggler_timeout=straggler,
                                        state_dir=state_dir or "", standby=bool(standby), peer_of=peer_of or "",
                                        gather_window=window)
        self.secure = key is not None
        self.run = run
        self.heartbeat_timeout = seconds
        self.straggler_timeout = straggler_timeout

    def add_relay(self, address: str) -> None:
        """Offers one more relay (``"host:port"``) to peers that need one."""
        self._impl.add_relay(address)

    @property
    def relays(self) -> list[str]:
        """The relays this coordinator knows, in the order it tries them."""
        return list(self._impl.relays)

    @property
    def epoch(self) -> int:
        return self._impl.snapshot()["epoch"]

    @property
    def run_id(self) -> str:
        """This incarnation of the run: drawn when the coordinator is built, told to every
        peer (``comm.run_id``), so progress rows of an earlier incarnation can be told apart."""
        return self._impl.run_id

    @property
    def term(self) -> int:
        """The term this coordinator serves (0 while it is a standby or gathers a new one)."""
        return self._impl.snapshot()["term"]

    @property
    def role(self) -> str:
        """"serving", "gathering" (peers of a lost coordinator re-register) or "standby"."""
        return self._impl.snapshot()["role"]

    @property
    def peers(self) -> list[str]:
        """Accepted peer ids in ring order."""
        return list(self._impl.snapshot()["ring"])

    @property
    def pending_peers(self) -> int:
        return self._impl.snapshot()["pending"]

    @property
    def state_sync_planned(self) -> bool:
        """A shared-state sync has sent its plans and is not decided yet."""
        return self._impl.snapshot()["state_sync_planned"]

    @property
    def path_requests(self) -> dict[str, int]:
        """How many hole punches and relayed paths peers asked this coordinator for."""
        s = self._impl.snapshot()
        return {"punch": s["punch_requests"], "relay": s["relay_requests"]}

    @property
    def collectives_running(self) -> int:
        """Collectives started and not yet committed or aborted."""
        return self._impl.snapshot()["collectives_running"]

    def __repr__(self) -> str:
        return f"Coordinator(address={self.address!r}, run={self.run!r})"
