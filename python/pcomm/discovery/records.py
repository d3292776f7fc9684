"""Signed discovery records: who serves a run, and where.

A record says "publisher P offers <kind> for run R at these addresses until time T". It
is signed with P's libp2p identity key, so a DHT node can store and forward it without
trusting whoever handed it over, and a reader can check it without trusting the DHT.
A signature proves who published, not that the publisher belongs to the run: a record
of a run with a secret also carries ``proof``, a tag of the run secret (run_proof.py)
over every other field, and readers that know the secret believe only such records.

Encoding: a signed envelope (signed.py) of at most ``kMaxRecordBytes`` around the
payload JSON; the signature covers ``kSignaturePrefix + payload`` exactly as sent, so
verification never depends on re-serializing JSON. The payload holds ``kind``, ``run``, ``publisher`` (the
base58 peer id of ``k``), ``addrs``, ``seq`` (the publish time in ns: a higher one
replaces a lower one), ``expires`` (Unix seconds) and, in runs with a secret, ``proof``.
Only Ed25519 keys are accepted.

What any node checks (``verify_record``, also on records it stores for others) bounds
what a record can claim, so nobody can pin the newest slot of a run: ``seq`` at most
``kClockSkew`` ahead of the receiver's clock, ``expires`` at most ``kMaxTtl`` (+ skew)
ahead. What a reader checks on top (``check_proof``) needs the run secret.

Everything here is pure (no sockets, no trio) and unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace

from libp2p.crypto.keys import PrivateKey
from libp2p.peer.id import ID

from ..errors import InvalidArgumentError, InvalidRecordError
from .run_proof import is_tag, make_tag, tag_matches
from .signed import BadEnvelope, parse_json, seal, unseal

KINDS = ("coordinator", "relay", "peer")
kMaxRecordBytes = 4096
kMaxAddrs = 16
kMaxAddrChars = 256
kMaxRunChars = 128
kMaxTtl = 3600.0  # a record may not claim to live longer than an hour (publishers refresh every ttl/3)
kClockSkew = 60.0  # seconds a publisher's clock may run ahead of the receiver's ("seq", "expires")
kSignaturePrefix = b"pcomm-dht-record/v1\n"
kProofPurpose = b"dht record"  # the run-secret key that proves records (_secret.derive)


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
    proof: str | None = None  # tag of the run secret (None: a record of a run without one)

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


def sign_record(key: PrivateKey, kind: str, run: str, addrs: list[str] | tuple[str, ...], seq: int, expires: float,
                *, secret: bytes | None = None) -> Record:
    """Builds and signs a record with ``key`` (the publisher's libp2p identity); with
    ``secret`` (the run secret, bytes) it also carries the proof readers of the run ask for."""
    unsigned = Record(check_kind(kind), check_run(run), ID.from_pubkey(key.get_public_key()).to_base58(),
                      check_addrs(addrs), int(seq), float(expires), b"")
    proof = None if secret is None else make_tag(secret, kProofPurpose, _proved_fields(unsigned))
    payload = {"kind": unsigned.kind, "run": unsigned.run, "publisher": unsigned.publisher, "addrs": list(unsigned.addrs),
               "seq": unsigned.seq, "expires": unsigned.expires}
    if proof is not None:
        payload["proof"] = proof
    raw = seal(key, kSignaturePrefix, json.dumps(payload, separators=(",", ":"), sort_keys=True))
    if len(raw) > kMaxRecordBytes:
        raise InvalidArgumentError(f"record is {len(raw)} bytes, over the {kMaxRecordBytes}-byte limit: fewer or shorter addresses")
    return replace(unsigned, raw=raw, proof=proof)


def _proved_fields(record: Record) -> list:
    """What a record's proof covers: every field but the proof, after what it is."""
    return ["dht record", record.kind, record.run, record.publisher, list(record.addrs), record.seq, record.expires]


def check_proof(record: Record, secret: bytes | None) -> None:
    """Raises InvalidRecordError unless ``record`` may be believed by a reader holding
    ``secret`` (None: a reader of a run without a secret).

    With a secret the record must carry the proof of exactly this secret over its kind,
    run, publisher, addresses, seq and expiry, so a proof copied from another record,
    run or kind fails. Without a secret the record must carry no proof: a proof the
    reader cannot check says nothing, and the run it belongs to has a secret this reader
    lacks (it could not join it anyway)."""
    if secret is None:
        if record.proof is not None:
            raise InvalidRecordError(f"the {record.kind} record for run '{record.run}' proves a run secret this reader "
                                     "was not given (pass secret= or set PCOMM_SECRET_FILE)")
        return
    if record.proof is None:
        raise InvalidRecordError(f"the {record.kind} record for run '{record.run}' from {record.publisher[-8:]} "
                                 "carries no proof of the run secret")
    if not tag_matches(secret, kProofPurpose, _proved_fields(record), record.proof):
        raise InvalidRecordError(f"the {record.kind} record for run '{record.run}' from {record.publisher[-8:]} "
                                 "does not prove this run secret (another secret, or copied from another record)")


def verify_record(raw: object, now: float) -> Record:
    """Parses and checks a record received from anyone (the proof of the run secret is
    ``check_proof``'s). Raises InvalidRecordError naming the first problem: oversized,
    malformed, unsigned, forged, expired, living too long, or from the future."""
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
        raise InvalidRecordError(f"record claims to live {record.expires - now:.0f} s, over the {kMaxTtl:.0f} s limit")
    if record.seq > int((now + kClockSkew) * 1e9):
        raise InvalidRecordError(f"record seq {record.seq} is more than {kClockSkew:.0f} s ahead of this node's clock "
                                 "(seq is the publish time in ns)")
    return record


def _parse_payload(text: str, raw: bytes | bytearray) -> Record:
    try:
        p = parse_json(text)
        fields = (p["kind"], p["run"], p["publisher"], p["addrs"], p["seq"], p["expires"], p.get("proof"))
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidRecordError(f"malformed record payload: {e}") from None
    kind, run, publisher, addrs, seq, expires, proof = fields
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
    if proof is not None and not is_tag(proof):
        raise InvalidRecordError("malformed record payload: proof must be 64 lowercase hex digits")
    return Record(kind, run, publisher, addrs, seq, float(expires), bytes(raw), proof)
