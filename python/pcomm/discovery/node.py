"""A discovery node: one libp2p host in a private Kademlia DHT, on its own trio thread.

    node = Node(listen="/ip4/0.0.0.0/tcp/4001", bootstrap=["/ip4/.../p2p/12D3..."]).start()
    node.publish("coordinator", "llama-tiny", ["203.0.113.5:29500"])   # refreshed until stopped
    records = node.lookup("coordinator", "llama-tiny")                  # from any node

A *server* node answers DHT requests and stores records; a client (``server=False``,
what a Communicator uses for one lookup) only asks. Lookups are iterative: ask the
``kAlpha`` closest unasked contacts at once, merge the closer contacts they return,
and stop when the ``kReplication`` closest that answer have all been asked (for a
record lookup, the ``kGetQuorum`` closest: each of them holds every publisher's
record, so asking more only costs time). A publish stores the signed record on those
``kReplication`` nodes and is repeated every ``ttl / 3`` so records outlive churn and
vanish ``ttl`` after the publisher stops.

A node given the run secret (``secret=``, else ``$PCOMM_SECRET_FILE``) publishes records
that prove it, and its lookups return only records that prove it; a node without one
publishes and returns only records without a proof (runs without a secret). Records a
lookup leaves out are counted in ``ignored_records``. Storing records for others needs
no secret: a server node checks what any node can (records.verify_record) and stores
records of every run.
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import timedelta
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .. import _secret
from .._timeouts import default_timeout, to_seconds
from ..errors import DiscoveryError, InvalidArgumentError, InvalidRecordError
from . import wire
from ._runner import TrioThread, has_cancelled
from .host import load_or_create_key, make_host, parse_bootstrap, parse_listen, stop_auto_dialing
from .records import Record, check_addrs, check_kind, check_proof, check_run, dht_key, kMaxTtl, sign_record, verify_record
from .routing import Contact, RecordStore, RoutingTable, key_id, node_id, peer_node_id

log = logging.getLogger("pcomm.discovery")

kAlpha = 4  # requests in flight per lookup round
kReplication = 8  # nodes that store each record (and a node lookup's answer size)
kGetQuorum = 4  # a record lookup ends once this many of the closest nodes answered
kRpcTimeout = 3.0  # seconds for one request/response, dial included
kServeTimeout = 5.0  # seconds an inbound stream may take to send its request
kRefreshInterval = 60.0  # seconds between routing-table refreshes (self lookups)
kDefaultTtl = 300.0  # seconds a published record lives without a refresh
kRetryInterval = 1.0  # seconds before a publish that no node took is tried again


class Announcement:
    """A record this node keeps publishing; ``stop()`` ends the refreshes (the record
    then expires on the DHT within its ttl)."""

    def __init__(self, node: "Node", kind: str, run: str, addrs: tuple[str, ...], ttl: float) -> None:
        self.kind, self.run, self.addrs, self.ttl = kind, run, addrs, ttl
        self.stored_on = 0  # nodes that took the latest refresh
        self._node = node
        self._scope: trio.CancelScope | None = None

    def stop(self) -> None:
        scope = self._scope
        if scope is not None and self._node._runner.running:
            try:
                self._node._runner.call(_cancel, scope, timeout=5.0, what="stop announcement")
            except DiscoveryError:
                pass  # the node closed first: the loop is gone already


async def _cancel(scope: trio.CancelScope) -> None:
    scope.cancel()


class Node:
    """A pcomm discovery node. See the module docstring.

    Args:
        listen: ``/ip4/HOST/tcp/PORT`` to listen on (port 0 picks one).
        bootstrap: full multiaddrs (with ``/p2p/PEER_ID``) of nodes already in the DHT;
            empty for the first node of a private DHT.
        key_file: where the node's identity key lives; created if missing. None: a new
            identity each start.
        announce: multiaddrs to advertise instead of the listen address.
        server: answer DHT requests and store records (False: only ask).
        timeout: default deadline for start, publish and lookup (seconds).
        secret: the run secret (bytes or str) this node's records prove and its lookups
            ask for; None: the one in ``$PCOMM_SECRET_FILE``, else none (a run without a
            secret). See the module docstring.
    """

    def __init__(
        self,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        bootstrap: list[str] | tuple[str, ...] = (),
        *,
        key_file: str | None = None,
        announce: list[str] | None = None,
        server: bool = True,
        timeout: float | timedelta | None = None,
        secret: bytes | str | None = None,
    ) -> None:
        if isinstance(bootstrap, str):
            raise InvalidArgumentError("bootstrap must be a list of multiaddrs, not one string")
        self._listen = parse_listen(listen)
        self._bootstrap = [parse_bootstrap(b) for b in bootstrap]
        self._announce = [str(parse_listen(a, "each announce address")) for a in announce] if announce else None
        self.server = bool(server)
        self.timeout = default_timeout(timeout)
        self._secret = _secret.resolve(secret)
        self._key = load_or_create_key(key_file)
        self.peer_id = ID.from_pubkey(self._key.public_key).to_base58()
        self._table = RoutingTable(node_id(ID.from_base58(self.peer_id).to_bytes()))
        self._store = RecordStore()
        self._runner = TrioThread(f"pcomm-dht-{self.peer_id[-6:]}")
        self._host: Any = None
        self.rejected_records = 0  # invalid records received (forged, malformed, expired, from the future)
        self.ignored_records = 0  # copies of valid records lookups left out: they do not fit this node's run secret

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float | timedelta | None = None) -> "Node":
        """Listens, contacts the bootstrap nodes and fills the routing table. Raises
        DiscoveryError if bootstrap nodes were given and none answered."""
        self._runner.start(self._main, timeout=self._deadline(timeout))
        return self

    def close(self) -> None:
        """Stops refreshing announcements and closes every connection. Idempotent."""
        self._runner.stop()

    def stop(self) -> None:
        """The same as ``close()`` (servers, nodes and stores all take both verbs)."""
        self.close()

    def __enter__(self) -> "Node":
        if not self._runner.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def addrs(self) -> list[str]:
        """Full multiaddrs (``.../p2p/PEER_ID``) other nodes can bootstrap from."""
        if self._host is None:
            return []
        return [f"{a}/p2p/{self.peer_id}" for a in self._plain_addrs()]

    @property
    def running(self) -> bool:
        """Started and not closed."""
        return self._runner.running

    @property
    def routing_table_size(self) -> int:
        return len(self._table)

    @property
    def stored_records(self) -> int:
        return len(self._store)

    @property
    def has_secret(self) -> bool:
        """True if this node proves and checks a run secret."""
        return self._secret is not None

    # -- public operations (any thread; `a`-prefixed ones from asyncio) -------------

    def publish(self, kind: str, run: str, addrs: list[str], ttl: float = kDefaultTtl, timeout: float | timedelta | None = None) -> Announcement:
        """Publishes ``addrs`` as this node's ``kind`` for ``run`` and keeps refreshing
        it every ttl/3. Returns once the first copy is stored on at least one node."""
        announcement = self._announcement(kind, run, addrs, ttl)
        return self._runner.call(self._publish_first, announcement, timeout=self._deadline(timeout), what=f"publish {kind} for run '{run}'")

    async def apublish(self, kind: str, run: str, addrs: list[str], ttl: float = kDefaultTtl, timeout: float | timedelta | None = None) -> Announcement:
        announcement = self._announcement(kind, run, addrs, ttl)
        return await self._runner.acall(self._publish_first, announcement, timeout=self._deadline(timeout), what=f"publish {kind} for run '{run}'")

    def lookup(self, kind: str, run: str, timeout: float | timedelta | None = None) -> list[Record]:
        """Every live, correctly signed record of ``kind`` for ``run`` that fits this
        node's run secret (see the module docstring), newest first (empty if none)."""
        key = dht_key(check_kind(kind), check_run(run))
        return self._runner.call(self._get, key, timeout=self._deadline(timeout), what=f"look up {kind} for run '{run}'")

    async def alookup(self, kind: str, run: str, timeout: float | timedelta | None = None) -> list[Record]:
        key = dht_key(check_kind(kind), check_run(run))
        return await self._runner.acall(self._get, key, timeout=self._deadline(timeout), what=f"look up {kind} for run '{run}'")

    def put_raw(self, kind: str, run: str, raw: bytes, timeout: float | timedelta | None = None) -> int:
        """Sends ``raw`` bytes as a record to the nodes that would store (kind, run);
        returns how many accepted it. For tests of the validators and for tools."""
        key = dht_key(check_kind(kind), check_run(run))
        return self._runner.call(self._put, key, raw, timeout=self._deadline(timeout), what="put record")

    def _deadline(self, timeout: float | timedelta | None) -> float:
        seconds = to_seconds(timeout, "timeout")
        return self.timeout if seconds is None else seconds

    def _announcement(self, kind: str, run: str, addrs: list[str], ttl: float) -> Announcement:
        ttl_s = to_seconds(ttl, "ttl")
        assert ttl_s is not None
        if ttl_s > kMaxTtl:
            raise InvalidArgumentError(f"ttl is {ttl_s:g} s; DHT nodes refuse records that live over {kMaxTtl:g} s "
                                       "(the record is refreshed every ttl/3 anyway)")
        return Announcement(self, check_kind(kind), check_run(run), check_addrs(addrs), ttl_s)

    # -- trio side ------------------------------------------------------------------

    async def _main(self, nursery: trio.Nursery) -> None:
        self._host = make_host(self._key, self._announce, self._bootstrap)
        await nursery.start(self._run_host)
        await stop_auto_dialing(self._host)
        if self.server:
            self._host.set_stream_handler(wire.PROTOCOL, self._serve)
        if self._bootstrap:
            await self._join()
        nursery.start_soon(self._refresh_loop)

    async def _run_host(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with self._host.run([self._listen]):
            task_status.started()
            await trio.sleep_forever()

    async def _join(self) -> None:
        answered = 0
        errors = []
        for info in self._bootstrap:
            contact = Contact(info.peer_id.to_base58(), tuple(_strip_p2p(a) for a in info.addrs), node_id(info.peer_id.to_bytes()))
            try:
                reply = await self._rpc(contact, {"op": "find_node", "target": _hex(self._table.own_id)})
                self._table.seen(contact)
                self._learn(reply)
                answered += 1
            except Exception as e:  # reported below if no bootstrap node answered
                errors.append(f"{contact.peer_id[-8:]}: {e}")
        if answered == 0:
            raise DiscoveryError("no bootstrap node answered (" + "; ".join(errors) + ")")
        if len(self._table) > 0:
            await self._iterate(self._table.own_id, None)

    async def _refresh_loop(self) -> None:
        while True:
            await trio.sleep(kRefreshInterval)
            self._store.expire(time.time())
            try:
                await self._iterate(self._table.own_id, None)
            except Exception as e:
                log.info("routing table refresh failed: %s", e)

    def _plain_addrs(self) -> list[str]:
        return list(dict.fromkeys(_strip_p2p(a) for a in self._host.get_addrs()))

    def _request(self, op: str, **fields: Any) -> dict[str, Any]:
        message = {"op": op, **fields}
        if self.server:
            message["from"] = self._plain_addrs()[: wire.kMaxAddrsPerPeer]
        return message

    async def _rpc(self, contact: Contact, message: dict[str, Any]) -> Any:
        """One request/response; a contact that fails is dropped from the table."""
        peer = ID.from_base58(contact.peer_id)
        try:
            with trio.fail_after(kRpcTimeout):
                await self._host.connect(PeerInfo(peer, [multiaddr.Multiaddr(a) for a in contact.addrs]))
                stream = await self._host.new_stream(peer, [wire.PROTOCOL])
                try:
                    await wire.write_message(stream, message)
                    reply = await wire.read_message(stream)
                finally:
                    await wire.close_quietly(stream)
            return reply
        except BaseException as e:
            if has_cancelled(e):
                raise  # the caller gave up (its deadline): says nothing about the contact
            self._table.failed(contact.peer_id)
            raise DiscoveryError(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None

    def _learn(self, reply: Any) -> list[Contact]:
        contacts = []
        for peer_id, addrs in wire.parse_peers(reply):
            if peer_id == self.peer_id or not addrs:
                continue
            contacts.append(Contact(peer_id, addrs, peer_node_id(peer_id)))
        return contacts

    async def _iterate(self, target: int, get_key: bytes | None) -> tuple[list[Contact], list[Record]]:
        """Iterative lookup towards ``target``; with ``get_key`` also collects records.
        Returns the closest contacts that answered and the records found."""
        width = kReplication if get_key is None else kGetQuorum
        if len(self._table) == 0 and self._bootstrap:
            await self._join()  # every contact failed: start over from the bootstrap nodes
        if len(self._table) == 0 and not self.server:
            raise DiscoveryError("no DHT node is reachable (the routing table is empty and no bootstrap node was given)")
        known: dict[str, Contact] = {c.peer_id: c for c in self._table.closest(target, kReplication * 2)}
        asked: set[str] = set()
        answered: dict[str, Contact] = {}
        found: dict[str, Record] = {}
        if get_key is not None and self.server:
            for r in self._store.get(get_key, time.time()):
                if self._believed(r, "this node's store"):
                    found[r.publisher] = r
        while True:
            order = sorted(known.values(), key=lambda c: c.id ^ target)
            live = [c for c in order if c.peer_id not in asked or c.peer_id in answered][:width]
            batch = [c for c in live if c.peer_id not in asked][:kAlpha]
            if not batch:
                break
            async with trio.open_nursery() as nursery:
                for contact in batch:
                    asked.add(contact.peer_id)
                    nursery.start_soon(self._ask, contact, target, get_key, known, answered, found)
        closest = sorted(answered.values(), key=lambda c: c.id ^ target)[:kReplication]
        records = sorted(found.values(), key=lambda r: (r.seq, r.expires), reverse=True)
        return closest, records

    async def _ask(self, contact: Contact, target: int, get_key: bytes | None, known: dict, answered: dict, found: dict) -> None:
        if get_key is None:
            message = self._request("find_node", target=_hex(target))
        else:
            message = self._request("get", key=get_key.hex())
        try:
            reply = await self._rpc(contact, message)
            learned = self._learn(reply)
            raws = wire.parse_records(reply) if get_key is not None else []
        except (DiscoveryError, wire.WireError) as e:  # _rpc dropped a contact that failed
            log.debug("lookup: %s failed: %s", contact.peer_id[-8:], e)
            if isinstance(e, wire.WireError):
                self._table.failed(contact.peer_id)  # it answered, with garbage
            return
        answered[contact.peer_id] = contact
        self._table.seen(contact)
        for c in learned:
            known.setdefault(c.peer_id, c)
        now = time.time()
        for raw in raws:
            try:
                record = verify_record(raw, now)
            except (InvalidRecordError, ValueError, OverflowError, TypeError) as e:  # one bad record, not the lookup
                self.rejected_records += 1
                log.warning("dropping a bad record from %s: %s", contact.peer_id[-8:], e)
                continue
            if dht_key(record.kind, record.run) != get_key:
                self.rejected_records += 1
                continue
            if not self._believed(record, contact.peer_id[-8:]):
                continue
            old = found.get(record.publisher)
            if old is None or old.seq < record.seq:
                found[record.publisher] = record

    def _believed(self, record: Record, source: str) -> bool:
        """True if a lookup may return ``record`` (records.check_proof with this node's
        secret); counts and logs (debug) the ones it may not."""
        try:
            check_proof(record, self._secret)
        except InvalidRecordError as e:
            self.ignored_records += 1
            log.debug("lookup: ignoring a record from %s: %s", source, e)
            return False
        return True

    async def _get(self, key: bytes) -> list[Record]:
        _, records = await self._iterate(key_id(key), key)
        return records

    async def _put(self, key: bytes, raw: bytes) -> int:
        closest, _ = await self._iterate(key_id(key), None)
        accepted = 0
        if self.server:
            try:
                record = verify_record(raw, time.time())
                accepted += int(dht_key(record.kind, record.run) == key and self._store.put(key, record, time.time()))
            except InvalidRecordError:
                self.rejected_records += 1

        async def put_one(contact: Contact) -> None:
            nonlocal accepted
            try:
                reply = await self._rpc(contact, self._request("put", key=key.hex(), record=_b64(raw)))
            except DiscoveryError:
                return
            if isinstance(reply, dict) and reply.get("ok") is True:
                accepted += 1

        async with trio.open_nursery() as nursery:
            for contact in closest:
                nursery.start_soon(put_one, contact)
        return accepted

    async def _publish_first(self, announcement: Announcement) -> Announcement:
        stored = await self._publish_once(announcement)
        if stored == 0:
            raise DiscoveryError(
                f"no DHT node stored the {announcement.kind} record for run '{announcement.run}' "
                "(no reachable server nodes: give a bootstrap address)"
            )
        scope = trio.CancelScope()
        announcement._scope = scope
        self._runner.spawn(self._refresh_in, scope, announcement)
        return announcement

    async def _refresh_in(self, scope: trio.CancelScope, announcement: Announcement) -> None:
        with scope:
            await trio.sleep(announcement.ttl / 3)
            await self.keep_published(announcement)

    async def _publish_once(self, announcement: Announcement) -> int:
        now = time.time()
        record = sign_record(self._key.private_key, announcement.kind, announcement.run, announcement.addrs, time.time_ns(),
                             now + announcement.ttl, secret=self._secret)
        announcement.stored_on = await self._put(dht_key(announcement.kind, announcement.run), record.raw)
        return announcement.stored_on

    async def keep_published(self, announcement: Announcement) -> None:
        """Publishes ``announcement`` now and every ttl/3 until cancelled (trio side; the
        caller's cancel scope ends it). A publish that no node took is retried after
        ``kRetryInterval`` instead."""
        while True:
            stored = 0
            try:
                with trio.fail_after(max(kRpcTimeout * 3, announcement.ttl / 3)):
                    stored = await self._publish_once(announcement)
            except Exception as e:
                log.warning("publishing the %s record for run '%s' failed: %r", announcement.kind, announcement.run, e)
            await trio.sleep(announcement.ttl / 3 if stored else min(kRetryInterval, announcement.ttl / 3))

    async def _serve(self, stream: Any) -> None:
        """Answers one inbound request; a broken request resets this stream only."""
        try:
            caller = stream.muxed_conn.peer_id
            with trio.fail_after(kServeTimeout):
                request = wire.parse_request(await wire.read_message(stream))
                if request.caller_addrs:
                    self._table.seen(Contact(caller.to_base58(), request.caller_addrs, node_id(caller.to_bytes())))
                await wire.write_message(stream, self._answer(request))
            await wire.close_quietly(stream)
        except Exception as e:
            log.info("dropping a DHT stream: %s: %s", type(e).__name__, e)
            await wire.close_quietly(stream, reset=True)

    def _answer(self, request: wire.Request) -> dict[str, Any]:
        closest = wire.encode_peers(self._table.closest(key_id(request.key), kReplication * 2))
        now = time.time()
        if request.op == "find_node":
            return {"peers": closest}
        if request.op == "get":
            records, size = [], 0
            for r in sorted(self._store.get(request.key, now), key=lambda r: r.expires)[: wire.kMaxRecordsPerReply]:
                size += len(r.raw) * 4 // 3 + 4
                if size > wire.kMaxMessageBytes // 2:
                    break  # keep the reply well under the message limit
                records.append(_b64(r.raw))
            return {"peers": closest, "records": records}
        assert request.record is not None
        try:
            record = verify_record(request.record, now)
        except InvalidRecordError as e:
            self.rejected_records += 1
            log.warning("rejecting a record: %s", e)
            return {"ok": False, "error": str(e)}
        if dht_key(record.kind, record.run) != request.key:
            self.rejected_records += 1
            return {"ok": False, "error": "record stored under a key that is not its own"}
        return {"ok": self._store.put(request.key, record, now)}


def _strip_p2p(addr: Any) -> str:
    return str(addr).split("/p2p/")[0]


def _hex(ident: int) -> str:
    return ident.to_bytes(32, "big").hex()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
