"""``Store``: a named set of replicated objects (maps, sets, counters).

    node = pcomm.discovery.Node(bootstrap=[...]).start()
    store = pcomm.crdt.Store("llama-tiny", node=node, path="meta.db")
    store.map("config")["lr"] = 3e-4
    store.set("shards").add("shard-17")
    store.counter("tokens").increment(4096)

A write is applied locally, made durable (with ``path``) and returns; replication
(replication.py) carries it to the other replicas of the same store name. Reads see the
local state at once. Replicas that saw the same writes hold the same state, whatever
the order, loss or duplication of messages.

With the run secret a store takes deltas only from writers the run admitted, and any
store refuses writes stamped more than a minute ahead of its clock (admission.py);
``refused_writers`` and ``refused_future`` count the deltas refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from libp2p.peer.id import ID

from .._secret import resolve as resolve_secret
from ..discovery.host import load_or_create_key
from ..discovery.records import check_run
from .._timeouts import to_seconds
from ..errors import InvalidArgumentError
from .admission import check_admitted, check_not_ahead, writer_cert
from .clock import HLC
from .deltas import Delta, InvalidDeltaError, RefusedDeltaError, check_name, make_writer, sign_delta, verify_delta
from .storage import DeltaLog
from .types import TYPES, canonical

log = logging.getLogger("pcomm.crdt")

kMaxRefusedIds = 65536  # refused deltas remembered (each is counted once); the memory is reset when full


@dataclass(frozen=True)
class Change:
    """One visible change: ``key`` is the map key, the set element, or "value" for a
    counter; ``value`` the new value (None for a deleted key; True/False for a set
    element added/removed). ``local`` is True for this replica's own writes."""

    obj: str
    type: str
    key: Any
    value: Any
    writer: str
    local: bool


class Store:
    """A replica of the store ``name``.

    Args:
        name: the store's name; replicas with the same name converge (printable, no
            spaces, at most 120 characters).
        node: a started ``pcomm.discovery.Node`` whose host carries replication; None
            keeps the store local (durable with ``path``, not replicated).
        path: SQLite file for durability; None keeps everything in memory.
        sync_interval: seconds between anti-entropy rounds with each replica.
        announce: publish this replica in the DHT so others sync with it (False for a
            short-lived reader such as ``pcomm progress``: it only pulls).
        secret: the run secret (bytes or str). Its writes carry a certificate of it, and
            deltas of writers without one are refused. None: ``$PCOMM_SECRET_FILE``,
            else the node's secret, else none (the store takes deltas from anyone).

    Objects are named per type: ``map("x")`` and ``counter("x")`` are two objects.
    """

    def __init__(self, name: str, node: Any = None, path: str | None = None, *, sync_interval: float = 1.0, announce: bool = True,
                 secret: bytes | str | None = None) -> None:
        try:
            check_run(name)  # the name is also a DHT record name
        except InvalidArgumentError:
            raise InvalidArgumentError(f"store name must be 1..120 printable characters without spaces, got {name!r}") from None
        if len(name) > 120:
            raise InvalidArgumentError(f"store name must be 1..120 printable characters without spaces, got {len(name)} characters")
        sync_interval = to_seconds(sync_interval, "sync_interval")
        if node is not None and not node.running:
            raise InvalidArgumentError("the discovery node must be started (node.start()) before a store uses it")
        self.name = name
        self._node = node
        if node is not None:
            self._key = node._key
        elif path is not None:
            self._key = load_or_create_key(path + ".key")  # keeps the writer id across reopenings
        else:
            self._key = load_or_create_key(None)
        self.peer_id = ID.from_pubkey(self._key.public_key).to_base58()
        self._secret = resolve_secret(secret)
        if self._secret is None and node is not None:
            self._secret = node._secret
        self._cert = writer_cert(self._secret, name, self.peer_id) if self._secret is not None else None
        self._lock = threading.RLock()
        self._closed = False
        self._clock = HLC()
        self._objects: dict[tuple[str, str], Any] = {}  # (name, type) -> CRDT
        # Per writer, its deltas in seq order: deltas[w][i] has seq i + 1. A replica only
        # accepts a writer's next seq, so there are never gaps (a gap would let one
        # writer's stuck tail fill every batch and starve the others).
        self._deltas: dict[str, list[bytes]] = {}
        self._text_ids: dict[str, list[bytes]] = {}  # hashes of the signed payloads, same order
        self._raw_ids: set[bytes] = set()  # hashes of the held deltas' bytes
        self._subscribers: list[Callable[[Change], None]] = []
        self.rejected = 0  # deltas refused (bad signature, malformed, wrong store, equivocation)
        self.refused_writers = 0  # deltas of writers the run did not admit (each counted once)
        self.refused_future = 0  # deltas stamped more than a minute ahead of our clock (each counted once)
        self._refused: dict[bytes, str] = {}  # raw id -> "writer" or "future", for counting once
        self._log = DeltaLog(os.path.expanduser(path)) if path is not None else None
        fresh = secrets.token_hex(8)
        incarnation = self._log.incarnation(name, self.peer_id, fresh) if self._log is not None else fresh
        self._incarnation = incarnation
        self.writer = make_writer(self.peer_id, incarnation)  # this replica's writer id
        if self._log is not None and self._replay(self._log.load(name)):
            # This key wrote here without the secret it has now: every replica refuses
            # those deltas, so it writes on as a new writer rather than reuse their seqs.
            self._incarnation = self._log.renew_incarnation(name, self.peer_id, secrets.token_hex(8))
            self.writer = make_writer(self.peer_id, self._incarnation)
        self._replicator = None
        if node is not None:
            from .replication import Replicator

            replicator = Replicator(self, node, sync_interval, announce)
            try:
                replicator.start()
            except BaseException:
                self.close()
                raise
            self._replicator = replicator

    # -- typed views --------------------------------------------------------------

    def map(self, name: str) -> "MapView":
        return MapView(self, check_name(name, "object name"))

    def set(self, name: str) -> "SetView":
        return SetView(self, check_name(name, "object name"))

    def counter(self, name: str) -> "CounterView":
        """A PN-counter (increments and decrements)."""
        return CounterView(self, check_name(name, "object name"), "pn")

    def gcounter(self, name: str) -> "CounterView":
        """A grow-only counter."""
        return CounterView(self, check_name(name, "object name"), "g")

    def _value(self, name: str, type_name: str) -> Any:
        with self._lock:
            obj = self._objects.get((name, type_name))
            return (obj if obj is not None else TYPES[type_name]()).value()

    # -- reading ------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every object's value, by type then name: {"lww": {"config": {...}}, ...}."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for (name, type_name), obj in sorted(self._objects.items()):
                out.setdefault(type_name, {})[name] = obj.value()
        return out

    def fingerprint(self) -> str:
        """SHA-256 of the full CRDT state (tombstones and per-writer totals included):
        equal fingerprints mean identical replicas."""
        with self._lock:
            state = [[n, t, o.state()] for (n, t), o in sorted(self._objects.items())]
        return hashlib.sha256(canonical(state).encode()).hexdigest()

    def digest(self) -> dict[str, int]:
        """Per writer, the highest seq this replica holds (it holds every one below)."""
        with self._lock:
            return {w: len(d) for w, d in self._deltas.items()}

    @property
    def replicas(self) -> int:
        """Other replicas this one knows and syncs with."""
        replicator = self._replicator
        return replicator.replica_count if replicator is not None else 0

    @property
    def refused(self) -> int:
        """Deltas refused for their writer or their timestamp (``refused_writers`` +
        ``refused_future``; malformed and forged ones are in ``rejected``)."""
        with self._lock:
            return self.refused_writers + self.refused_future

    @property
    def writes(self) -> int:
        """Deltas held (from every writer)."""
        with self._lock:
            return sum(len(d) for d in self._deltas.values())

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Calls ``callback(change)`` after each visible change (local writes on the
        writing thread, remote ones on a replication worker thread: keep it short).
        Returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    async def changes(self) -> AsyncIterator[Change]:
        """``async for change in store.changes():`` every change from now on."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Change] = asyncio.Queue()
        unsubscribe = self.subscribe(lambda c: loop.call_soon_threadsafe(queue.put_nowait, c))
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    # -- writing (views call these) ------------------------------------------------

    def _write(self, obj: str, type_name: str, make: Callable[[Any], dict | None]) -> None:
        """One local write: ``make(current object)`` gives the delta content (None: no
        write). Durable (with a path) before it returns."""
        with self._lock:
            if self._closed:
                raise InvalidArgumentError(f"store '{self.name}' is closed")
            current = self._objects.get((obj, type_name))
            d = make(current if current is not None else TYPES[type_name]())
            if d is None:
                return
            seq = len(self._deltas.get(self.writer, ())) + 1
            delta = sign_delta(self._key.private_key, self.name, seq, obj, type_name, d, self._incarnation, self._cert)
            if self._log is not None:
                self._log.append(self.name, [(delta.writer, delta.seq, delta.raw)])  # durable first
            changes = self._apply(delta, local=True)
        self._notify(changes)
        replicator = self._replicator
        if replicator is not None:
            replicator.wake()

    def receive(self, raws: list[bytes]) -> int:
        """Verifies and applies deltas from another replica; returns how many were new.
        Bad deltas are counted in ``rejected``, deltas of writers the run did not admit
        in ``refused_writers``, deltas from the future in ``refused_future``; all are
        skipped (one warning per batch). A writer's deltas are taken in seq order only:
        one beyond a gap waits for the next round, which brings the missing one first."""
        ids = [_raw_id(r) for r in raws]  # hashed outside the lock
        with self._lock:  # exact copies of held (or unadmitted) deltas arrive often: skip them cheaply
            pending = [(r, i) for r, i in zip(raws, ids) if i not in self._raw_ids and self._refused.get(i) != "writer"]
        checked: list[Delta] = []
        refused: list[tuple[bytes, str, str]] = []  # (raw id, why, message)
        bad, first_error = 0, ""
        for raw, raw_id in pending:  # signature and admission checks: outside the lock
            try:
                delta = verify_delta(raw, self.name)
            except InvalidDeltaError as e:
                bad, first_error = bad + 1, first_error or str(e)
                continue
            why = self._refusal(delta)
            if why is not None:
                refused.append((raw_id, *why))
                continue
            checked.append(delta)
        if bad:
            log.warning("store %s: rejected %d delta(s), first: %s", self.name, bad, first_error)
        checked.sort(key=lambda d: (d.writer, d.seq))
        fresh: list[Delta] = []
        fresh_ids: dict[tuple[str, int], bytes] = {}
        with self._lock:
            self.rejected += bad
            self._count_refused(refused)
            if self._closed:
                return 0
            next_seq: dict[str, int] = {}
            for d in checked:
                n = next_seq.get(d.writer, len(self._deltas.get(d.writer, ())))
                if d.seq <= n:  # held already (or earlier in this batch): same payload?
                    held_ids = self._text_ids.get(d.writer, [])
                    held = held_ids[d.seq - 1] if d.seq <= len(held_ids) else fresh_ids[(d.writer, d.seq)]
                    if held != _text_id(d.text):
                        self.rejected += 1
                        log.warning("store %s: writer %s equivocates on seq %d; keeping the first", self.name, d.writer, d.seq)
                    continue
                if d.seq == n + 1:
                    fresh.append(d)
                    fresh_ids[(d.writer, d.seq)] = _text_id(d.text)
                    next_seq[d.writer] = n + 1
            if fresh and self._log is not None:
                self._log.append(self.name, [(d.writer, d.seq, d.raw) for d in fresh])
            changes: list[Change] = []
            for d in fresh:
                changes += self._apply(d, local=False)
        self._notify(changes)
        return len(fresh)

    def _refusal(self, delta: Delta) -> tuple[str, str] | None:
        """("writer" or "future", why) if this replica does not take ``delta``."""
        try:
            check_admitted(delta, self._secret)
        except RefusedDeltaError as e:
            return "writer", str(e)
        try:
            check_not_ahead(delta, self._clock)
        except RefusedDeltaError as e:
            return "future", str(e)
        return None

    def _count_refused(self, refused: list[tuple[bytes, str, str]]) -> None:
        """Counts each refused delta once (they come back every round). Lock held."""
        new = [(raw_id, why, message) for raw_id, why, message in refused if raw_id not in self._refused]
        if len(self._refused) + len(new) > kMaxRefusedIds:
            self._refused.clear()
        for raw_id, why, _ in new:
            self._refused[raw_id] = why
            if why == "writer":
                self.refused_writers += 1
            else:
                self.refused_future += 1
        if new:
            log.warning("store %s: refused %d delta(s), first: %s", self.name, len(new), new[0][2])

    def missing_for(self, digest: dict[str, int], max_bytes: int) -> list[bytes]:
        """Deltas this replica holds beyond ``digest``, in seq order per writer, up to
        about ``max_bytes`` in total (at least one if any is missing)."""
        out, size = [], 0
        with self._lock:
            for writer, held in sorted(self._deltas.items()):
                for raw in held[digest.get(writer, 0):]:
                    if size + len(raw) > max_bytes and out:
                        return out
                    out.append(raw)
                    size += len(raw)
        return out

    def _apply(self, delta: Delta, local: bool) -> list[Change]:
        """Applies the writer's next delta (callers guarantee the order)."""
        obj = self._objects.get((delta.obj, delta.type))
        if obj is None:
            obj = self._objects[(delta.obj, delta.type)] = TYPES[delta.type]()
        if delta.type == "lww":
            self._clock.observe(tuple(delta.d["ts"]))
        self._deltas.setdefault(delta.writer, []).append(delta.raw)
        self._text_ids.setdefault(delta.writer, []).append(_text_id(delta.text))
        self._raw_ids.add(_raw_id(delta.raw))
        return [Change(delta.obj, delta.type, k, v, delta.writer, local) for k, v in obj.apply(delta.d, delta.writer, delta.seq)]

    def _replay(self, raws: list[bytes]) -> bool:
        """Applies the database's deltas; returns True if rows of this replica's own
        writer were refused (written without the run secret this store has now).
        Timestamps are not checked: each row was taken when it was within the minute."""
        deltas, refused, own_refused = [], [], False
        for raw in raws:
            try:
                delta = verify_delta(raw, self.name)
                check_admitted(delta, self._secret)
            except RefusedDeltaError as e:
                refused.append((_raw_id(raw), "writer", str(e)))
                own_refused = own_refused or delta.writer == self.writer
                continue
            except InvalidDeltaError as e:
                self.rejected += 1
                log.error("store %s: skipping a damaged row of the database: %s", self.name, e)
                continue
            deltas.append(delta)
        self._count_refused(refused)
        deltas.sort(key=lambda d: (d.writer, d.seq))
        for d in deltas:
            if d.seq == len(self._deltas.get(d.writer, ())) + 1:
                self._apply(d, local=d.writer == self.writer)
            else:
                log.error("store %s: the database lacks seq %d of writer %s; later ones are skipped",
                          self.name, len(self._deltas.get(d.writer, ())) + 1, d.writer)
        return own_refused

    def _notify(self, changes: list[Change]) -> None:
        if not changes:
            return
        with self._lock:
            subscribers = list(self._subscribers)
        for change in changes:
            for callback in subscribers:
                try:
                    callback(change)
                except Exception:
                    log.exception("store %s: a subscriber raised", self.name)

    # -- lifecycle ----------------------------------------------------------------

    def sync_now(self, timeout: float = 10.0) -> int:
        """Runs one anti-entropy round with every known replica now; returns how many
        answered."""
        replicator = self._replicator
        return replicator.sync_now(timeout) if replicator is not None else 0

    def add_replica(self, multiaddr: str) -> None:
        """Syncs with the node at ``multiaddr`` (``.../p2p/PEER_ID``) as well as with the
        replicas found through the DHT."""
        replicator = self._replicator
        if replicator is None:
            raise InvalidArgumentError("this store has no node (or is closed): pass node= to replicate")
        replicator.add(multiaddr)

    def close(self) -> None:
        """Stops replication and closes the database; later writes raise. Idempotent."""
        with self._lock:
            self._closed = True
        replicator, self._replicator = self._replicator, None
        try:
            if replicator is not None:
                replicator.stop()
        finally:
            with self._lock:
                if self._log is not None:
                    self._log.close()
                    self._log = None

    def stop(self) -> None:
        """The same as ``close()``."""
        self.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raw_id(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _text_id(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class MapView:
    """A last-writer-wins map of JSON values."""

    def __init__(self, store: Store, name: str) -> None:
        self._store, self.name = store, name

    def __setitem__(self, key: str, value: Any) -> None:
        self._put(key, {"value": value})

    def __delitem__(self, key: str) -> None:
        self._put(key, {"deleted": True})

    def _put(self, key: str, fields: dict) -> None:
        if not isinstance(key, str):
            raise InvalidArgumentError(f"map keys are strings, got {key!r}")
        clock = self._store._clock
        self._store._write(self.name, "lww", lambda _: {"key": key, "ts": list(clock.now()), **fields})

    def __getitem__(self, key: str) -> Any:
        value = self.to_dict()
        if key not in value:
            raise KeyError(key)
        return value[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def __len__(self) -> int:
        return len(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return self._store._value(self.name, "lww")

    def items(self):
        return self.to_dict().items()

    set = __setitem__
    delete = __delitem__


class SetView:
    """An add-wins observed-remove set of JSON values."""

    def __init__(self, store: Store, name: str) -> None:
        self._store, self.name = store, name

    def add(self, element: Any) -> None:
        self._store._write(self.name, "orset", lambda _: {"add": element})

    def remove(self, element: Any) -> None:
        """Removes the adds of ``element`` this replica has seen (a concurrent add
        elsewhere survives). Removing an absent element writes nothing."""

        def make(obj: Any) -> dict | None:
            tags = obj.tags_of(element)
            return {"remove": element, "tags": [list(t) for t in tags]} if tags else None

        self._store._write(self.name, "orset", make)

    def __contains__(self, element: object) -> bool:
        return element in self.to_list()

    def to_list(self) -> list[Any]:
        return self._store._value(self.name, "orset")

    def __iter__(self):
        return iter(self.to_list())

    def __len__(self) -> int:
        return len(self.to_list())


class CounterView:
    """A PN-counter (``store.counter``) or G-counter (``store.gcounter``)."""

    def __init__(self, store: Store, name: str, type_name: str) -> None:
        self._store, self.name, self._type = store, name, type_name

    def increment(self, n: int = 1) -> None:
        self._add(n, "p")

    def decrement(self, n: int = 1) -> None:
        if self._type == "g":
            raise InvalidArgumentError(f"'{self.name}' is a grow-only counter: use store.counter() to decrement")
        self._add(n, "n")

    def _add(self, n: int, side: str) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError(f"counter steps are non-negative ints, got {n!r}")
        writer = self._store.writer

        def make(obj: Any) -> dict:
            d = {"p": obj.p.get(writer, 0)}
            if self._type == "pn":
                d["n"] = obj.n.get(writer, 0)
            d[side] += n
            return d

        self._store._write(self.name, self._type, make)

    @property
    def value(self) -> int:
        return self._store._value(self.name, self._type)
