"""Anti-entropy between replicas of a store, over the discovery node's libp2p host.

Protocol ``/pcomm/crdt/1.0.0``, one exchange per stream (messages framed as in
discovery/wire.py, at most ``kMaxMessageBytes``)::

    A -> B  {"store": name, "digest": {writer: seq}}     what A holds, per writer
    B -> A  {"digest": {...}, "deltas": [base64, ...]}   what A lacks, then B's digest
    A -> B  {"deltas": [base64, ...]}                    what B lacks

A digest entry is the highest seq up to which a replica holds every delta of that
writer, so a lost message or a broken stream only means the next round sends the same
deltas again, and a duplicate is ignored. A round runs every ``sync_interval`` with each
known replica, and right after a local write. Replicas are found through the DHT: each
store publishes a ``peer`` record under the run name ``crdt:<store name>``.

Everything here runs on the node's trio thread, except ``Store.receive`` (signature
checks and the SQLite commit), which runs on a worker thread so the loop keeps serving.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from ..discovery import wire
from ..discovery.host import parse_bootstrap
from ..errors import DiscoveryError

log = logging.getLogger("pcomm.crdt")

PROTOCOL = TProtocol("/pcomm/crdt/1.0.0")
kMaxMessageBytes = 4 * 1024 * 1024
kBatchBytes = 3 * 1024 * 1024  # deltas per message; the rest goes in the next round
kExchangeTimeout = 5.0  # seconds for one exchange, dial included
kLookupInterval = 5.0  # seconds between DHT lookups for replicas
kRecordTtl = 60.0
kMaxWriters = 100_000  # digest entries accepted from a remote replica


def _record_run(store_name: str) -> str:
    return f"crdt:{store_name}"


def _handler_registry(node: Any) -> dict:
    """Stores sharing a node share one protocol handler, dispatching by store name."""
    registry = getattr(node, "_crdt_stores", None)
    if registry is None:
        registry = node._crdt_stores = {}

        async def handle(stream: Any) -> None:
            try:
                with trio.fail_after(kExchangeTimeout):
                    await _serve(registry, stream)
                await stream.close()
            except Exception as e:
                log.info("dropping a CRDT stream: %s: %s", type(e).__name__, e)
                try:
                    await stream.reset()
                except Exception:
                    pass

        node._runner.call(_set_handler, node, handle, timeout=5.0, what="register the CRDT protocol")
    return registry


async def _set_handler(node: Any, handle: Any) -> None:
    node._host.set_stream_handler(PROTOCOL, handle)


async def _serve(registry: dict, stream: Any) -> None:
    hello = await wire.read_message(stream, kMaxMessageBytes)
    if not isinstance(hello, dict) or hello.get("store") not in registry:
        raise wire.WireError("unknown store")
    replicator = registry[hello["store"]]
    theirs = _parse_digest(hello.get("digest"))
    store = replicator.store
    await wire.write_message(stream, {"digest": store.digest(), "deltas": _encode(store.missing_for(theirs, kBatchBytes))}, kMaxMessageBytes)
    reply = await wire.read_message(stream, kMaxMessageBytes)
    await trio.to_thread.run_sync(store.receive, _decode(reply))
    replicator.learn(stream.muxed_conn.peer_id)


def _parse_digest(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > kMaxWriters:
        raise wire.WireError("digest must be an object of writer -> seq")
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise wire.WireError("digest must map writer ids to non-negative ints")
    return value


def _encode(raws: list[bytes]) -> list[str]:
    return [base64.b64encode(r).decode() for r in raws]


def _decode(message: Any) -> list[bytes]:
    deltas = message.get("deltas") if isinstance(message, dict) else None
    if not isinstance(deltas, list):
        raise wire.WireError("deltas must be a list")
    try:
        return [base64.b64decode(d, validate=True) for d in deltas if isinstance(d, str)]
    except (ValueError, binascii.Error):
        raise wire.WireError("deltas must be base64 strings") from None


class Replicator:
    def __init__(self, store: Any, node: Any, sync_interval: float, announce: bool) -> None:
        self.store = store
        self._announce = announce
        self._node = node
        self._interval = sync_interval
        self._replicas: dict[str, PeerInfo] = {}  # base58 peer id -> how to reach it
        self._wake: trio.Event | None = None
        self._scope: trio.CancelScope | None = None

    def start(self) -> None:
        registry = _handler_registry(self._node)
        if self.store.name in registry:
            raise DiscoveryError(f"store '{self.store.name}' is already open on this node")
        registry[self.store.name] = self
        self._node._runner.call(self._start, timeout=5.0, what="start CRDT replication")

    async def _start(self) -> None:
        self._scope = trio.CancelScope()
        self._wake = trio.Event()
        self._node._runner._nursery.start_soon(self._run, self._scope)

    def stop(self) -> None:
        self._node._crdt_stores.pop(self.store.name, None)
        if self._node._runner.running and self._scope is not None:
            try:
                self._node._runner.call(self._cancel, timeout=5.0, what="stop CRDT replication")
            except DiscoveryError:
                pass

    async def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def wake(self) -> None:
        """Asks for a round soon (after a local write). Any thread."""
        runner = self._node._runner
        if runner.running and runner._token is not None:
            try:
                runner._token.run_sync_soon(self._set_wake)
            except Exception:
                pass

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def add(self, multiaddr: str) -> None:
        info = parse_bootstrap(multiaddr)
        self._replicas[info.peer_id.to_base58()] = info

    def learn(self, peer_id: Any) -> None:
        """A replica that synced with us: dial it back by the addresses the host knows."""
        key = peer_id.to_base58()
        if key not in self._replicas and key != self._node.peer_id:
            addrs = self._node._host.get_peerstore().addrs(peer_id)
            if addrs:
                self._replicas[key] = PeerInfo(peer_id, addrs)

    @property
    def replica_count(self) -> int:
        return len(self._replicas)

    def sync_now(self, timeout: float) -> int:
        return self._node._runner.call(self._round, timeout=timeout, what=f"sync store '{self.store.name}'")

    async def _run(self, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._discover)
                await self._sync_loop()

    async def _sync_loop(self) -> None:
        while True:
            with trio.move_on_after(self._interval):
                assert self._wake is not None
                await self._wake.wait()
            self._wake = trio.Event()
            await self._round()
            await trio.sleep(0.01)  # coalesce bursts of writes into one round

    async def _discover(self) -> None:
        """Publishes this replica and looks the others up, every kLookupInterval."""
        node = self._node
        published = not self._announce
        while True:
            try:
                if not published:
                    await node._publish_first(_announcement(node, self.store.name))
                    published = True
                for record in await node._get(_dht_key(self.store.name)):
                    if record.publisher != node.peer_id:
                        for addr in record.addrs[:1]:
                            info = parse_bootstrap(addr)
                            self._replicas[info.peer_id.to_base58()] = info
            except Exception as e:
                log.info("store %s: replica discovery: %s", self.store.name, e)
            await trio.sleep(kLookupInterval if self._replicas else 0.5)

    async def _round(self) -> int:
        answered = 0

        async def one(info: PeerInfo) -> None:
            nonlocal answered
            try:
                with trio.fail_after(kExchangeTimeout):
                    await self._exchange(info)
                answered += 1
            except Exception as e:
                log.debug("store %s: sync with %s failed: %s", self.store.name, info.peer_id, e)

        async with trio.open_nursery() as nursery:
            for info in list(self._replicas.values()):
                nursery.start_soon(one, info)
        return answered

    async def _exchange(self, info: PeerInfo) -> None:
        host = self._node._host
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [PROTOCOL])
        try:
            store = self.store
            await wire.write_message(stream, {"store": store.name, "digest": store.digest()}, kMaxMessageBytes)
            reply = await wire.read_message(stream, kMaxMessageBytes)
            theirs = _parse_digest(reply.get("digest") if isinstance(reply, dict) else None)
            await trio.to_thread.run_sync(store.receive, _decode(reply))
            await wire.write_message(stream, {"deltas": _encode(store.missing_for(theirs, kBatchBytes))}, kMaxMessageBytes)
        finally:
            await stream.close()


def _dht_key(store_name: str) -> bytes:
    from ..discovery.records import dht_key

    return dht_key("peer", _record_run(store_name))


def _announcement(node: Any, store_name: str) -> Any:
    from ..discovery.node import Announcement

    return Announcement(node, "peer", _record_run(store_name), tuple(node.addrs[:1]), kRecordTtl)
