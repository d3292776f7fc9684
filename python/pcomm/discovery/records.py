"""Signed discovery records: who serves a run, and where.

A record says "publisher P offers <kind> for run R at these addresses until time T". It
is signed with P's libp2p identity key, so a DHT node can store and forward it without
trusting whoever handed it over, and a reader can check it without trusting the DHT.

Encoding: a signed envelope (signed.py) of at most ``kMaxRecordBytes`` around the
payload JSON; the signature covers ``kSignaturePrefix + payload`` exactly as sent, so
verification never depends on re-serializing JSON. The payload holds ``kind``, ``run``, ``publisher`` (the
base58 peer id of ``k``), ``addrs``, ``seq`` (publisher's counter: a higher one replaces
a lower one) and ``expires`` (Unix seconds). Only Ed25519 keys are accepted.

Everything here is pure (no sockets, no trio) and unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from libp2p.crypto.keys import PrivateKey
from libp2p.peer.id import ID

from ..errors import InvalidArgumentError, InvalidRecordError
from .signed import BadEnvelope, parse_json, seal, unseal

KINDS = ("coordinator", "relay", "peer")
kMaxRecordBytes = 4096
kMaxAddrs = 16
kMaxAddrChars = 256
kMaxRunChars = 128
kMaxTtl = 24 * 3600.0  # a record may not claim to live longer than a day
kClockSkew = 60.0  # seconds of publisher clock error tolerated on "expires"
kSignaturePrefix = b"pcomm-dht-record/v1\n"


@dataclass(frozen=True)
class Record:
    """A verified record. ``raw`` is its exact encoding (what the DHT stores and sends)."""

    kind: str
    run: str
    publisher: str
    addrs: tuple[str, ...]
    seq: int
    expires: float
    raw: bytes

    def expired(self, now: float) -> bool:
        return self.expires <= now


def check_run(run: object) -> str:
    """A run name: 1..128 printable characters, no whitespace."""
    if not isinstance(run, str) or not run:
        raise InvalidArgumentError(f"run must be a non-empty string, got {run!r}")
    if len(run) > kMaxRunChars or not run.isprintable() or any(c.isspace() for c in run):
        raise InvalidArgumentError(
            f"run must be at most {kMaxRunChars} printable characters without spaces, got {run!r}"
        )
    return run


def check_kind(kind: object) -> str:
    if kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind  # type: ignore[return-value]


def check_addrs(addrs: object) -> tuple[str, ...]:
    if isinstance(addrs, str) or not isinstance(addrs, (list, tuple)):
        raise InvalidArgumentError(f"addrs must be a list of address strings, got {addrs!r}")
    if not 1 <= len(addrs) <= kMaxAddrs:
        raise InvalidArgumentError(f"a record carries 1 to {kMaxAddrs} addresses, got {len(addrs)}")
    for a in addrs:
        if not isinstance(a, str) or not a or len(a) > kMaxAddrChars or not a.isprintable():
            raise InvalidArgumentError(f"each address must be 1..{kMaxAddrChars} printable characters, got {a!r}")
    return tuple(addrs)


def dht_key(kind: str, run: str) -> bytes:
    """The 32-byte DHT key under which every publisher's record of (kind, run) is kept."""
    return hashlib.sha256(f"pcomm/{kind}/{run}".encode()).digest()


def sign_record(key: PrivateKey, kind: str, run: str, addrs: list[str] | tuple[str, ...], seq: int, expires: float) -> Record:
    """Builds and signs a record with ``key`` (the publisher's libp2p identity)."""
    payload = {
        "kind": check_kind(kind),
        "run": check_run(run),
        "publisher": ID.from_pubkey(key.get_public_key()).to_base58(),
        "addrs": list(check_addrs(addrs)),
        "seq": int(seq),
        "expires": float(expires),
    }
    raw = seal(key, kSignaturePrefix, json.dumps(payload, separators=(",", ":"), sort_keys=True))
    if len(raw) > kMaxRecordBytes:
        raise InvalidArgumentError(f"record is {len(raw)} bytes, over the {kMaxRecordBytes}-byte limit: fewer or shorter addresses")
    return Record(payload["kind"], payload["run"], payload["publisher"], tuple(payload["addrs"]), payload["seq"], payload["expires"], raw)


def verify_record(raw: object, now: float) -> Record:
    """Parses and checks a record received from anyone. Raises InvalidRecordError naming
    the first problem: oversized, malformed, unsigned, forged, expired, or living too long."""
    try:
        text, signer = unseal(raw, kSignaturePrefix, kMaxRecordBytes)
    except BadEnvelope as e:
        raise InvalidRecordError(f"record {e}") from None
    record = _parse_payload(text, raw)  # type: ignore[arg-type]
    if record.publisher != signer:
        raise InvalidRecordError(f"forged record: publisher {record.publisher} is not the signing key's peer id")
    if record.expired(now):
        raise InvalidRecordError(f"expired record ({now - record.expires:.1f} s ago)")
    if record.expires > now + kMaxTtl + kClockSkew:
        raise InvalidRecordError("record claims to live longer than the 24 h limit")
    return record


def _parse_payload(text: str, raw: bytes | bytearray) -> Record:
    try:
        p = parse_json(text)
        fields = (p["kind"], p["run"], p["publisher"], p["addrs"], p["seq"], p["expires"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidRecordError(f"malformed record payload: {e}") from None
    kind, run, publisher, addrs, seq, expires = fields
    try:
        check_kind(kind)
        check_run(run)
        addrs = check_addrs(addrs)
    except InvalidArgumentError as e:
        raise InvalidRecordError(f"malformed record payload: {e}") from None
    if not isinstance(publisher, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidRecordError("malformed record payload: publisher must be a string and seq a non-negative int")
    try:
        finite = not isinstance(expires, bool) and isinstance(expires, (int, float)) and math.isfinite(float(expires))
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise InvalidRecordError("malformed record payload: expires must be a finite number")
    return Record(kind, run, publisher, addrs, seq, float(expires), bytes(raw))
