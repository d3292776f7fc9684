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
store publishes a ``peer`` record under the run name ``crdt:<store name>`` whose
address names the publisher's own peer id (proving the node's run secret, when it has
one: such a node finds only replicas that prove it too); a replica that fails
``kMaxFailures`` exchanges in a row is forgotten until the DHT (or a new exchange)
brings it back. Which deltas a replica takes is the store's decision (admission.py).

Everything here runs on the node's trio thread, except the store calls (signature
checks, the SQLite commit, digests under the store's lock), which run on worker
threads so the loop keeps serving while a write holds the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from ..discovery import wire
from ..discovery.host import parse_bootstrap
from ..discovery.node import Announcement
from ..discovery.records import dht_key
from ..errors import InvalidArgumentError, PcommError

log = logging.getLogger("pcomm.crdt")

PROTOCOL = TProtocol("/pcomm/crdt/1.0.0")
kMaxMessageBytes = 4 * 1024 * 1024
kBatchBytes = 2 * 1024 * 1024  # raw deltas per message: base64 makes 8/3 MiB, under the limit
kMaxWriters = 20_000  # digest entries accepted from a remote replica (about 1.3 MiB)
kMaxDeltasPerMessage = 20_000
kMessageSlack = 64 * 1024  # bytes kept free in a message beside the digest and deltas
kExchangeTimeout = 5.0  # seconds for one exchange, dial included
kLookupInterval = 5.0  # seconds between DHT lookups for replicas (1 s while none is known)
kLookupTimeout = 10.0  # seconds for one lookup
kRecordTtl = 60.0
kMaxFailures = 3  # exchanges in a row a replica may fail before it is forgotten


def _record_run(store_name: str) -> str:
    return f"crdt:{store_name}"


_registry_lock = threading.Lock()  # stores opened on one node from several threads


def _handler_registry(node: Any) -> dict:
    """Stores sharing a node share one protocol handler, dispatching by store name.
    Called with ``_registry_lock`` held."""
    registry = getattr(node, "_crdt_stores", None)
    if registry is not None:
        return registry
    registry = {}

    async def handle(stream: Any) -> None:
        try:
            with trio.fail_after(kExchangeTimeout):
                await _serve(registry, stream)
            await wire.close_quietly(stream)
        except Exception as e:
            log.info("dropping a CRDT stream: %s: %s", type(e).__name__, e)
            await wire.close_quietly(stream, reset=True)

    node._runner.call(_set_handler, node, handle, timeout=5.0, what="register the CRDT protocol")
    node._crdt_stores = registry  # only once the handler is in place
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
    ours = await trio.to_thread.run_sync(store.digest)
    missing = await trio.to_thread.run_sync(store.missing_for, theirs, _batch_budget(ours))
    await wire.write_message(stream, {"digest": ours, "deltas": _encode(missing)}, kMaxMessageBytes)
    reply = await wire.read_message(stream, kMaxMessageBytes)
    await trio.to_thread.run_sync(store.receive, _decode(reply))
    replicator.learn(stream.muxed_conn.peer_id)


def _batch_budget(digest: dict[str, int]) -> int:
    """Raw delta bytes that fit in a message beside ``digest`` (base64 adds a third)."""
    room = kMaxMessageBytes - len(json.dumps(digest)) - kMessageSlack
    return max(0, min(kBatchBytes, room * 3 // 4))


def _parse_digest(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > kMaxWriters:
        raise wire.WireError(f"digest must be an object of at most {kMaxWriters} writer -> seq entries")
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise wire.WireError("digest must map writer ids to non-negative ints")
    return value


def _encode(raws: list[bytes]) -> list[str]:
    return [base64.b64encode(r).decode() for r in raws]


def _decode(message: Any) -> list[bytes]:
    deltas = message.get("deltas") if isinstance(message, dict) else None
    if not isinstance(deltas, list) or len(deltas) > kMaxDeltasPerMessage:
        raise wire.WireError(f"deltas must be a list of at most {kMaxDeltasPerMessage}")
    if not all(isinstance(d, str) and d for d in deltas):
        raise wire.WireError("deltas must be non-empty base64 strings")
    try:
        return [base64.b64decode(d, validate=True) for d in deltas]
    except (ValueError, binascii.Error):
        raise wire.WireError("deltas must be base64 strings") from None


class Replicator:
    def __init__(self, store: Any, node: Any, sync_interval: float, announce: bool) -> None:
        self.store = store
        self._announce = announce
        self._node = node
        self._interval = sync_interval
        self._replicas: dict[str, PeerInfo] = {}  # base58 peer id -> how to reach it
        self._pinned: set[str] = set()  # added by hand: never forgotten
        self._failures: dict[str, int] = {}
        self._locks: dict[str, trio.Lock] = {}  # one exchange at a time per replica
        self._wake: trio.Event | None = None
        self._scope: trio.CancelScope | None = None
        self._done: trio.Event | None = None

    def start(self) -> None:
        with _registry_lock:
            registry = _handler_registry(self._node)
            if self.store.name in registry:
                raise InvalidArgumentError(f"store '{self.store.name}' is already open on this node: share that Store object")
            registry[self.store.name] = self
        try:
            self._node._runner.call(self._start, timeout=5.0, what="start CRDT replication")
        except BaseException:
            registry.pop(self.store.name, None)
            raise

    async def _start(self) -> None:
        self._scope = trio.CancelScope()
        self._wake = trio.Event()
        self._done = trio.Event()
        self._node._runner.spawn(self._run, self._scope)

    def stop(self) -> None:
        """Ends syncing and the DHT announcement (its record expires within its ttl)."""
        with _registry_lock:
            registry = getattr(self._node, "_crdt_stores", {})
            if registry.get(self.store.name) is self:
                del registry[self.store.name]
        if self._node._runner.running and self._scope is not None:
            try:
                self._node._runner.call(self._cancel, timeout=5.0, what="stop CRDT replication")
            except PcommError as e:  # the node is closing too: nothing left to stop
                log.info("store %s: stopping replication: %s", self.store.name, e)

    async def _cancel(self) -> None:
        if self._scope is not None and self._done is not None:
            self._scope.cancel()
            # Normally stop() returns once nothing of this store runs; a worker thread
            # that calls close() from a change callback is one of those, so do not wait
            # for ever.
            with trio.move_on_after(2.0):
                await self._done.wait()

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
        key = info.peer_id.to_base58()
        self._replicas[key] = info
        self._pinned.add(key)

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
        try:
            with scope:  # cancelled by stop(): ends syncing, discovery and the announcement
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._discover)
                    await self._sync_loop(nursery)
        except Exception:  # a bug here must not take the node (and its other stores) down
            log.exception("store %s: replication stopped by an error", self.store.name)
        finally:
            assert self._done is not None
            self._done.set()

    async def _sync_loop(self, nursery: trio.Nursery) -> None:
        """Starts an exchange with every replica each tick; a replica whose last
        exchange still runs (a slow or black-holed peer) is skipped, not waited for."""
        busy: set[str] = set()

        async def one(key: str, info: PeerInfo) -> None:
            try:
                await self._exchange_counted(key, info)
            finally:
                busy.discard(key)

        while True:
            with trio.move_on_after(self._interval):
                assert self._wake is not None
                await self._wake.wait()
            self._wake = trio.Event()
            for key, info in list(self._replicas.items()):
                if key not in busy:
                    busy.add(key)
                    nursery.start_soon(one, key, info)
            await trio.sleep(0.01)  # coalesce bursts of writes into one round

    async def _discover(self) -> None:
        """Publishes this replica (kept fresh by the node) and looks the others up."""
        node = self._node
        async with trio.open_nursery() as nursery:
            if self._announce:
                record = Announcement(node, "peer", _record_run(self.store.name), tuple(node.addrs[:1]), kRecordTtl)
                nursery.start_soon(node.keep_published, record)
            while True:
                records = []
                try:
                    with trio.fail_after(kLookupTimeout):
                        records = await node._get(dht_key("peer", _record_run(self.store.name)))
                except Exception as e:
                    log.info("store %s: looking up replicas failed: %r", self.store.name, e)
                for found in records:
                    self._consider(found)
                await trio.sleep(kLookupInterval if self._replicas else 1.0)

    def _consider(self, record: Any) -> None:
        """Adds the replica a DHT record names, if the record is usable."""
        if record.publisher == self._node.peer_id:
            return
        try:
            info = parse_bootstrap(record.addrs[0])
        except InvalidArgumentError:
            return  # a record whose address does not parse names no replica
        if info.peer_id.to_base58() != record.publisher:
            return  # a record may only point at its own publisher
        self._replicas.setdefault(record.publisher, info)

    async def _round(self) -> int:
        """One exchange with every known replica, waited for (``sync_now``)."""
        results: list[int] = []

        async def one(key: str, info: PeerInfo) -> None:
            results.append(await self._exchange_counted(key, info))

        async with trio.open_nursery() as nursery:
            for key, info in list(self._replicas.items()):
                nursery.start_soon(one, key, info)
        return sum(results)

    async def _exchange_counted(self, key: str, info: PeerInfo) -> int:
        """One exchange; 1 if it worked. A replica failing kMaxFailures in a row is
        forgotten (unless pinned) until discovery brings it back. Exchanges with one
        replica never overlap (a ``sync_now`` waits for the background round's)."""
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            with trio.fail_after(2 * kExchangeTimeout):
                async with lock:
                    with trio.fail_after(kExchangeTimeout):
                        await self._exchange(info)
        except Exception as e:
            log.debug("store %s: sync with %s failed: %r", self.store.name, key, e)
            self._failures[key] = self._failures.get(key, 0) + 1
            if self._failures[key] >= kMaxFailures and key not in self._pinned:
                self._replicas.pop(key, None)
                self._failures.pop(key, None)
                if not lock.locked():
                    self._locks.pop(key, None)
            return 0
        self._failures.pop(key, None)
        return 1

    async def _exchange(self, info: PeerInfo) -> None:
        host = self._node._host
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [PROTOCOL])
        try:
            store = self.store
            digest = await trio.to_thread.run_sync(store.digest)
            await wire.write_message(stream, {"store": store.name, "digest": digest}, kMaxMessageBytes)
            reply = await wire.read_message(stream, kMaxMessageBytes)
            theirs = _parse_digest(reply.get("digest") if isinstance(reply, dict) else None)
            await trio.to_thread.run_sync(store.receive, _decode(reply))
            missing = await trio.to_thread.run_sync(store.missing_for, theirs, _batch_budget({}))
            await wire.write_message(stream, {"deltas": _encode(missing)}, kMaxMessageBytes)
        finally:
            await wire.close_quietly(stream)
