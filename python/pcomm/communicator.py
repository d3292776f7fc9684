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

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from . import _pcomm, _secret
from ._timeouts import default_timeout, to_seconds
from .errors import InvalidArgumentError, PcommError, TimeoutError
from .state import STRATEGIES, SharedState, SyncInfo
from .tensors import Staged, as_buffer, op_code, quantization_code

__all__ = ["Communicator", "ReduceInfo", "AllReduceHandle", "LinkInfo"]

_MAX_TAG = 2**32 - 1
_SLICE = 0.1  # seconds between Ctrl-C checks while waiting for a collective


@dataclass(frozen=True)
class ReduceInfo:
    """What an all-reduce did: peers that took part, wire bytes, wall time."""

    world_size: int
    bytes_sent: int
    bytes_received: int
    seconds: float


@dataclass(frozen=True)
class LinkInfo:
    """One neighbour's link pool: how this peer reaches it.

    ``kind`` is ``"direct"`` (a TCP dial), ``"punched"`` (TCP hole punch through NATs) or
    ``"relayed"`` (through a relay; ``remote`` then names the relay), or ``"broken"``
    until the next epoch replaces it; ``connections`` is the pool size; ``rtt`` the
    kernel's smoothed round-trip time of its first connection in seconds (for a relayed
    link: to the relay)."""

    peer_id: str
    kind: str
    remote: str
    connections: int
    rtt: float


class AllReduceHandle:
    """An all-reduce in flight. ``wait()`` returns its ReduceInfo or raises; ``done()``
    polls; ``await handle`` works in asyncio. The arrays stay referenced until it ends."""

    def __init__(self, impl: Any, keepalive: tuple, staged: list, default_timeout: float) -> None:
        self._impl = impl
        self._keepalive = keepalive
        self._staged = staged
        self._timeout = default_timeout
        self._info: ReduceInfo | None = None

    @property
    def tag(self) -> int:
        return self._impl.tag

    def done(self) -> bool:
        return self._impl.done()

    def wait(self, timeout: float | timedelta | None = None) -> ReduceInfo:
        """Waits for the outcome. On failure (including a timeout) the op is over on
        every peer and the input and ``out`` hold exactly what they held before."""
        if self._info is not None:
            return self._info
        seconds = to_seconds(timeout, "timeout")
        limit = self._timeout if seconds is None else seconds
        # Wait in slices so Ctrl-C works; an interrupted wait gives the op up (on every
        # peer, with the input intact) before KeyboardInterrupt propagates.
        end = time.monotonic() + limit
        try:
            while not self._impl.wait_done(min(_SLICE, max(0.0, end - time.monotonic()))):
                if time.monotonic() >= end:
                    break
        except KeyboardInterrupt:
            try:
                self._impl.wait(timeout=1e-6)
            except PcommError:
                pass
            raise
        world, sent, received, elapsed = self._impl.wait(timeout=max(1e-6, end - time.monotonic()))
        for staged in self._staged:
            staged.finish()
        self._info = ReduceInfo(world, sent, received, elapsed)
        self._keepalive = ()
        return self._info

    def __await__(self):
        return asyncio.get_running_loop().run_in_executor(None, self.wait).__await__()


class Communicator:
    """A peer of a pcomm run.

    Args:
        coordinator: the coordinator's ``"host:port"``, or a list of them (the primary
            first, then standbys: ``pcomm coordinator --standby``); or None to find it by
            ``run`` through the discovery DHT (``bootstrap``).
        timeout: default deadline of every blocking call, in seconds.
        connections_per_peer: TCP connections in each data link pool (1 to 64).
        run: the run name; the coordinator refuses a peer of another run.
        data_listen: ``"host:port"`` where this peer accepts data links; the default
            listens on every interface and advertises the address it reaches the
            coordinator from.
        bootstrap: multiaddrs (``/ip4/HOST/tcp/PORT/p2p/PEER_ID``) of discovery nodes;
            with ``coordinator=None`` the constructor looks up the coordinator (and the
            relays) announced for ``run`` (needs the ``discovery`` extra).
        secret: the run secret (bytes or str, at least 16 bytes), the same as the
            coordinator's; default: the file named by ``PCOMM_SECRET_FILE``, else none.
            With it the coordinator link and every data link are TLS 1.3 (docs/security.md).
        coordinator_grace: seconds to keep looking for a coordinator after this peer lost
            its own (docs/failover.md): it keeps its peer id, links and state and tries
            the same address, the other addresses, then the DHT (when found by ``run``).
            A call in progress then raises ``AbortedError`` (input intact; call again);
            ``CoordinatorLostError`` comes only when the grace ends. 0: fail at once.
    """

    def __init__(
        self,
        coordinator: str | None = None,
        timeout: float | timedelta | None = None,
        connections_per_peer: int = 4,
        *,
        run: str = "default",
        data_listen: str = "0.0.0.0:0",
        bootstrap: list[str] | None = None,
        secret: bytes | str | None = None,
        coordinator_grace: float | timedelta = 30.0,
    ) -> None:
        self.relays: tuple[str, ...] = ()
        key = _secret.resolve(secret)
        zero = not isinstance(coordinator_grace, (bool, timedelta)) and coordinator_grace == 0
        grace = 0.0 if zero else to_seconds(coordinator_grace, "coordinator_grace")
        if grace is None or grace < 0:
            raise InvalidArgumentError(f"coordinator_grace must be a number of seconds >= 0, got {coordinator_grace!r}")
        find_coordinator = None
        if coordinator is not None and bootstrap:
            raise InvalidArgumentError("give coordinator='host:port' or bootstrap=[...] to find it by run name, not both")
        if coordinator is None:
            if not bootstrap:
                raise InvalidArgumentError("give coordinator='host:port', or run='name' with bootstrap=[multiaddr, ...]")
            from .discovery.runs import find_run  # imports py-libp2p: only when asked for

            found = find_run(run, bootstrap, default_timeout(timeout), secret=key)
            coordinator, self.relays = found.coordinator, found.relays
            boot = list(bootstrap)

            def find_coordinator() -> str | None:  # the reconnect thread's last resort
                return find_run(run, boot, 5.0, secret=key).coordinator

        addresses = [coordinator] if isinstance(coordinator, str) else coordinator
        if not isinstance(addresses, (list, tuple)) or not addresses or not all(isinstance(a, str) for a in addresses):
            raise InvalidArgumentError(f"coordinator must be a 'host:port' string or a list of them, got {coordinator!r}")
        if isinstance(connections_per_peer, bool) or not isinstance(connections_per_peer, int):
            raise InvalidArgumentError(f"connections_per_peer must be an int, got {connections_per_peer!r}")
        if not 1 <= connections_per_peer <= 64:
            raise InvalidArgumentError(f"connections_per_peer must be between 1 and 64, got {connections_per_peer}")
        self.timeout = default_timeout(timeout)
        self._impl = _pcomm.Communicator(
            coordinator=addresses[0],
            more_coordinators=list(addresses[1:]),
            coordinator_grace=grace,
            find_coordinator=find_coordinator,
            run=run,
            connections_per_peer=connections_per_peer,
            timeout=self.timeout,
            data_listen=data_listen,
            secret=key or b"",
        )
        self.secure = key is not None
        self.coordinators = tuple(addresses)
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

    def wait_for_peers(self, n: int, timeout: float | timedelta | None = None) -> int:
        """The rendezvous before training: returns once at least ``n`` peers (this one
        included) are in the ring, admitting joiners meanwhile. Every accepted peer calls
        it (it runs ``update_topology()``, a barrier among them, until the world is big
        enough). Returns the world size; raises TimeoutError saying how many are in."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgumentError(f"n must be a positive int, got {n!r}")
        limit = self._deadline(timeout)
        end = time.monotonic() + limit
        def timed_out() -> TimeoutError:
            return TimeoutError(f"wait_for_peers({n}): {self.world_size} peer(s) in the ring and "
                                f"{self.pending_peers} pending after {limit:g} s")

        while self.world_size < n:
            left = end - time.monotonic()
            if left <= 0:
                raise timed_out()
            try:
                self.update_topology(timeout=left)
            except TimeoutError as e:  # the barrier ran into our deadline: say what we waited for
                raise timed_out() from e
            if self.world_size < n:
                time.sleep(min(0.02, max(0.0, end - time.monotonic())))  # nobody new yet
        return self.world_size

    def update_topology(self, timeout: float | timedelta | None = None) -> None:
        """Collective among accepted peers: admits pending peers and opens the data
        links of the new epoch. One round trip when nobody is pending."""
        self._impl.update_topology(timeout=self._deadline(timeout))

    def all_reduce(
        self,
        x: Any,
        *,
        op: str = "sum",
        out: Any = None,
        tag: int = 0,
        quantization: str | None = None,
        timeout: float | timedelta | None = None,
    ) -> ReduceInfo:
        """All-reduces ``x`` over every accepted peer, in place unless ``out`` is given.

        Every peer must call it with the same tag, element count, dtype, op and
        quantization (otherwise InvalidArgumentError everywhere). All peers get the same
        outcome; on success their results are bit-identical. On failure (PeerLostError,
        AbortedError, TimeoutError) ``x`` and ``out`` are unchanged, so the caller can
        retry at once with the smaller world.
        """
        return self.all_reduce_async(
            x, op=op, out=out, tag=tag, quantization=quantization, timeout=timeout
        ).wait()

    def all_reduce_async(
        self,
        x: Any,
        *,
        op: str = "sum",
        out: Any = None,
        tag: int = 0,
        quantization: str | None = None,
        timeout: float | timedelta | None = None,
    ) -> AllReduceHandle:
        """Starts an all-reduce and returns its handle. Several may be in flight with
        different tags; a tag already in flight raises InvalidArgumentError."""
        if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag <= _MAX_TAG:
            raise InvalidArgumentError(f"tag must be an int in [0, 2**32), got {tag!r}")
        src = as_buffer(x, "x")
        dst = None
        if out is not None:
            dst = as_buffer(out, "out")
            if dst.shape != src.shape or dst.dtype != src.dtype:
                raise InvalidArgumentError(
                    f"out must have the shape and dtype of x: x is {src.shape} dtype code {src.dtype}, "
                    f"out is {dst.shape} dtype code {dst.dtype}"
                )
            if dst.ptr == src.ptr and dst.nbytes:
                dst = None  # out is x: in place
        staged = []  # CUDA tensors are staged through host memory, copied once each way
        if src.cuda:
            stage_x = Staged(x)
            src = as_buffer(stage_x.host, "x")
            if dst is None:
                staged.append(stage_x)  # in place: the result goes back into x
        if dst is not None and dst.cuda:
            stage_out = Staged(out)
            staged.append(stage_out)
            dst = as_buffer(stage_out.host, "out")
        deadline = self._deadline(timeout)
        impl = self._impl.all_reduce_start(
            data=src.ptr,
            out=dst.ptr if dst is not None else 0,
            count=src.count,
            dtype=src.dtype,
            op=op_code(op),
            quantization=quantization_code(quantization),
            tag=tag,
            timeout=deadline,
        )
        keepalive = (src.obj, dst.obj if dst is not None else None, x, out)
        # By default wait() waits as long as the op may run: its own deadline bounds it.
        return AllReduceHandle(impl, keepalive, staged, deadline)

    def sync_shared_state(
        self, state: SharedState, *, strategy: str = "enforce_popular", timeout: float | timedelta | None = None
    ) -> SyncInfo:
        """Collective among accepted peers: afterwards every participant holds the same
        bytes in every tensor and the same revision.

        Each peer votes with its revision and per-tensor hashes; the most popular content
        wins (ties: higher revision). Peers that differ fetch exactly the tensors whose hash
        differs, from the peers holding the chosen content, verify the hashes, and only then
        update the tensors. strategy: "enforce_popular" (default), "receive_only" (never a
        source, not counted in the vote), "send_only" (authoritative: its content wins and
        it is never overwritten) or "offer" (a resumed checkpoint, or state that carries
        progress: the offer with the highest revision wins over the others' content,
        unless a peer is further ahead). On failure the state keeps its previous content
        exactly. docs/state.md has the whole rule.
        """
        if not isinstance(state, SharedState):
            raise InvalidArgumentError(f"state must be a pcomm.SharedState, got {type(state).__name__}")
        if strategy not in STRATEGIES:
            raise InvalidArgumentError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
        received, got, sent, revision, content = self._impl.sync_shared_state(
            tensors=state._layout(), revision=state.revision, strategy=STRATEGIES[strategy],
            timeout=self._deadline(timeout),
        )
        state.revision = revision
        return SyncInfo(received, got, sent, revision, content)

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
    def run_id(self) -> str:
        """This incarnation of the run, drawn by its coordinator ("" before connect). A run
        whose peers all stopped and started again under a new coordinator has a new one."""
        return self._impl.run_id

    @property
    def term(self) -> int:
        """The coordinator term this peer follows (0 before connect). It grows each time a
        coordinator takes over the run (a restart, a standby); peers refuse older terms."""
        return self._impl.term

    @property
    def coordinator(self) -> str:
        """The ``"host:port"`` of the coordinator this peer follows now (or last)."""
        return self._impl.coordinator

    def set_step(self, step: int) -> None:
        """Tells the coordinator this peer's training step (``pcomm status`` shows it; the
        DiLoCo optimizers report their outer step). Cheap: sent with the next report."""
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**63:
            raise InvalidArgumentError(f"step must be a non-negative int, got {step!r}")
        self._impl.set_step(step)

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

    def links(self) -> list[LinkInfo]:
        """This peer's links to its ring neighbours, as they stand now: one entry per
        neighbour with a pool open (none before the first epoch's links are up)."""
        return [LinkInfo(**d) for d in self._impl.links()]

    def __enter__(self) -> "Communicator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Communicator(coordinator={self.coordinator!r}, peer_id={self.peer_id!r}, "
            f"rank={self.rank}, world_size={self.world_size}, epoch={self.epoch})"
        )
