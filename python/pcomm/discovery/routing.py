"""Kademlia bookkeeping: node ids, the routing table and the record store.

Pure data structures (no sockets, no trio), driven by ``node.py`` and unit-tested.

Node ids are SHA-256 of the libp2p peer id bytes; distance is XOR. The routing table
keeps up to ``kBucketSize`` contacts per bucket (one bucket per shared-prefix length),
most recently seen last; a contact that fails an RPC is removed at once, and a full
bucket refuses newcomers (old contacts that keep answering are the most reliable ones,
which also makes the table hard to flood with fresh identities).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from libp2p.peer.id import ID

from .records import Record

kBucketSize = 20
kMaxRecordsPerKey = 64  # publishers kept per (kind, run); the longest-lived go first
kMaxKeys = 4096  # keys one node stores; beyond this, new keys are refused


def node_id(peer_id_bytes: bytes) -> int:
    return int.from_bytes(hashlib.sha256(peer_id_bytes).digest(), "big")


@functools.lru_cache(maxsize=4096)
def peer_node_id(peer_id: str) -> int:
    """node_id of a base58 peer id (cached: lookups see the same ids over and over)."""
    return node_id(ID.from_base58(peer_id).to_bytes())


def key_id(key: bytes) -> int:
    return int.from_bytes(key, "big")


@dataclass
class Contact:
    peer_id: str  # base58
    addrs: tuple[str, ...]  # multiaddrs without /p2p
    id: int = field(compare=False)


class RoutingTable:
    def __init__(self, own_id: int, bucket_size: int = kBucketSize) -> None:
        self.own_id = own_id
        self.bucket_size = bucket_size
        self._buckets: list[list[Contact]] = [[] for _ in range(257)]

    def _bucket(self, ident: int) -> list[Contact]:
        return self._buckets[(ident ^ self.own_id).bit_length()]

    def seen(self, contact: Contact) -> bool:
        """Records that ``contact`` answered or called; returns False if its bucket is full."""
        if contact.id == self.own_id:
            return False
        bucket = self._bucket(contact.id)
        for i, c in enumerate(bucket):
            if c.peer_id == contact.peer_id:
                del bucket[i]
                bucket.append(contact if contact.addrs else c)
                return True
        if len(bucket) >= self.bucket_size:
            return False
        bucket.append(contact)
        return True

    def failed(self, peer_id: str) -> None:
        for bucket in self._buckets:
            bucket[:] = [c for c in bucket if c.peer_id != peer_id]

    def closest(self, target: int, count: int) -> list[Contact]:
        every = [c for bucket in self._buckets for c in bucket]
        every.sort(key=lambda c: c.id ^ target)
        return every[:count]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)


class RecordStore:
    """Records by DHT key, one per publisher (highest ``seq`` wins), dropped at expiry."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, dict[str, Record]] = {}

    def put(self, key: bytes, record: Record, now: float) -> bool:
        """Stores ``record`` unless an equal or newer one from its publisher is kept."""
        self._expire_key(key, now)
        entries = self._by_key.get(key)
        if entries is None:
            if len(self._by_key) >= kMaxKeys:
                self.expire(now)  # full: make room from expired keys first
            if len(self._by_key) >= kMaxKeys:
                return False
            entries = self._by_key[key] = {}
        old = entries.get(record.publisher)
        if old is not None and old.seq >= record.seq:
            return False
        entries[record.publisher] = record
        if len(entries) > kMaxRecordsPerKey:
            # Honest publishers use short ttls and refresh; a flood of day-long records
            # should not push them out, so the record that claims to live longest goes.
            del entries[max(entries.values(), key=lambda r: (r.expires, r.publisher)).publisher]
        return record.publisher in entries

    def get(self, key: bytes, now: float) -> list[Record]:
        self._expire_key(key, now)
        return list(self._by_key.get(key, {}).values())

    def expire(self, now: float) -> None:
        """Drops every expired record (the node sweeps periodically; put and get only
        look at their own key)."""
        for key in list(self._by_key):
            self._expire_key(key, now)

    def _expire_key(self, key: bytes, now: float) -> None:
        entries = self._by_key.get(key)
        if entries is None:
            return
        for publisher in [p for p, r in entries.items() if r.expired(now)]:
            del entries[publisher]
        if not entries:
            del self._by_key[key]

    def __len__(self) -> int:
        return sum(len(e) for e in self._by_key.values())
