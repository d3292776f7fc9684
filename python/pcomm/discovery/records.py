"""Signed discovery records: who serves a run, and where.

A record says "publisher P offers <kind> for run R at these addresses until time T". It
is signed with P's libp2p identity key, so a DHT node can store and forward it without
trusting whoever handed it over, and a reader can check it without trusting the DHT.

Encoding (UTF-8 JSON, at most ``kMaxRecordBytes``)::

    {"p": "<payload JSON text>", "k": "<base64 public key>", "s": "<base64 signature>"}

The signature covers ``kSignaturePrefix + p`` exactly as sent, so verification never
depends on re-serializing JSON. The payload holds ``kind``, ``run``, ``publisher`` (the
base58 peer id of ``k``), ``addrs``, ``seq`` (publisher's counter: a higher one replaces
a lower one) and ``expires`` (Unix seconds). Only Ed25519 keys are accepted.

Everything here is pure (no sockets, no trio) and unit-tested.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyType, PrivateKey
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from ..errors import InvalidArgumentError, InvalidRecordError

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
    if key.get_type() != KeyType.Ed25519:
        raise InvalidArgumentError("records are signed with Ed25519 identity keys only")
    public = key.get_public_key()
    payload = {
        "kind": check_kind(kind),
        "run": check_run(run),
        "publisher": ID.from_pubkey(public).to_base58(),
        "addrs": list(check_addrs(addrs)),
        "seq": int(seq),
        "expires": float(expires),
    }
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    raw = _encode(text, public.serialize(), key.sign(kSignaturePrefix + text.encode()))
    if len(raw) > kMaxRecordBytes:
        raise InvalidArgumentError(f"record is {len(raw)} bytes, over the {kMaxRecordBytes}-byte limit: fewer or shorter addresses")
    return Record(payload["kind"], payload["run"], payload["publisher"], tuple(payload["addrs"]), payload["seq"], payload["expires"], raw)


def _encode(text: str, public: bytes, signature: bytes) -> bytes:
    envelope = {"p": text, "k": base64.b64encode(public).decode(), "s": base64.b64encode(signature).decode()}
    return json.dumps(envelope, separators=(",", ":")).encode()


def verify_record(raw: object, now: float) -> Record:
    """Parses and checks a record received from anyone. Raises InvalidRecordError naming
    the first problem: oversized, malformed, unsigned, forged, expired, or living too long."""
    if not isinstance(raw, (bytes, bytearray)):
        raise InvalidRecordError("record must be bytes")
    if len(raw) > kMaxRecordBytes:
        raise InvalidRecordError(f"record is {len(raw)} bytes, over the {kMaxRecordBytes}-byte limit")
    try:
        envelope = json.loads(bytes(raw))
        text, key_b64, sig_b64 = envelope["p"], envelope["k"], envelope["s"]
        if not all(isinstance(v, str) for v in (text, key_b64, sig_b64)):
            raise TypeError("envelope fields must be strings")
        public_bytes = base64.b64decode(key_b64, validate=True)
        signature = base64.b64decode(sig_b64, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise InvalidRecordError(f"malformed record envelope: {e}") from None
    if not signature:
        raise InvalidRecordError("record is unsigned")
    try:
        public = deserialize_public_key(public_bytes)
    except Exception as e:  # the key decoder raises several unrelated types
        raise InvalidRecordError(f"malformed public key: {e}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise InvalidRecordError("records must be signed with an Ed25519 key")
    try:
        good = public.verify(kSignaturePrefix + text.encode(), signature)
    except Exception:
        good = False
    if not good:
        raise InvalidRecordError("bad signature: the record was not signed by the key it carries")
    record = _parse_payload(text, raw)
    if record.publisher != ID.from_pubkey(public).to_base58():
        raise InvalidRecordError(f"forged record: publisher {record.publisher} is not the signing key's peer id")
    if record.expired(now):
        raise InvalidRecordError(f"expired record ({now - record.expires:.1f} s ago)")
    if record.expires > now + kMaxTtl + kClockSkew:
        raise InvalidRecordError("record claims to live longer than the 24 h limit")
    return record


def _parse_payload(text: str, raw: bytes | bytearray) -> Record:
    try:
        p = json.loads(text)
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
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        raise InvalidRecordError("malformed record payload: expires must be a finite number")
    return Record(kind, run, publisher, addrs, seq, float(expires), bytes(raw))
