"""Signed deltas: the unit a replica writes, stores, sends and verifies.

One local write = one delta, numbered ``seq`` = 1, 2, ... per writer and signed by the
writer's libp2p key (envelope: ../discovery/signed.py). Its payload::

    {"store": name, "writer": "PEER_ID/INCARNATION", "seq": n, "obj": object name, "t": type, "d": delta,
     "cert": writer certificate (stores of runs with a secret only, see admission.py)}

A writer is one key *and one delta log*: ``INCARNATION`` (16 hex digits) is drawn when a
replica starts without its old log (kept in the log when there is one), so a restarted
peer never reuses a seq its earlier life already spent. ``PEER_ID`` must be the signing
key's peer id, so nobody can write in another replica's name; ``d`` must have the shape
its type expects (types.py). A delta that fails any check is refused with
InvalidDeltaError and never touches the state. Whether its writer is admitted and its
timestamp plausible is the receiving store's decision (RefusedDeltaError, store.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from libp2p.crypto.keys import PrivateKey
from libp2p.peer.id import ID

from ..discovery.run_proof import is_tag
from ..discovery.signed import BadEnvelope, depth, kMaxDepth, parse_json, seal, unseal
from ..errors import InvalidArgumentError, PcommError
from .types import TYPES

kPrefix = b"pcomm-crdt-delta/v1\n"
kMaxDeltaBytes = 64 * 1024
kMaxNameChars = 256
kMaxCount = 2**62  # counter totals stay exact in every JSON implementation we care about
kMaxSeq = 2**62  # fits SQLite's 64-bit integers
kMaxWallMs = 2**53  # HLC wall clock (ms); year 287396, still exact as a float
kMaxCounter = 2**32


class InvalidDeltaError(PcommError, ValueError):
    """A delta is malformed, unsigned, forged or for another store."""


class RefusedDeltaError(InvalidDeltaError):
    """A well-formed, correctly signed delta that a replica does not take: its writer is
    not admitted by the run secret, or its timestamp is too far ahead of the replica's
    clock."""


@dataclass(frozen=True)
class Delta:
    store: str
    writer: str
    seq: int
    obj: str
    type: str
    d: dict
    raw: bytes
    text: str  # the signed payload (two envelopes of one payload are the same delta)
    cert: str | None = None  # the writer's certificate (admission.py), if it has one

    @property
    def peer_id(self) -> str:
        """The writer's peer id (its key), without the incarnation."""
        return self.writer.partition("/")[0]


def make_writer(peer_id: str, incarnation: str) -> str:
    return f"{peer_id}/{incarnation}"


def _good_writer(writer: object, signer: str) -> bool:
    if not isinstance(writer, str):
        return False
    peer, _, incarnation = writer.partition("/")
    return peer == signer and len(incarnation) == 16 and all(c in "0123456789abcdef" for c in incarnation)


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > kMaxNameChars or not name.isprintable():
        raise InvalidArgumentError(f"{what} must be 1..{kMaxNameChars} printable characters, got {name!r}")
    return name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_content(type_name: str, d: Any) -> None:
    """Raises ValueError unless ``d`` is a well-formed delta of ``type_name``."""
    if not isinstance(d, dict):
        raise ValueError("delta content must be an object")
    if type_name == "lww":
        ts = d.get("ts")
        if not isinstance(d.get("key"), str) or not (isinstance(ts, list) and len(ts) == 2 and all(_is_int(x) and x >= 0 for x in ts)):
            raise ValueError("lww delta needs a string key and ts [wall_ms, counter]")
        if ts[0] >= kMaxWallMs or ts[1] >= kMaxCounter:
            raise ValueError("lww timestamp out of range")
        if set(d) - {"key", "ts", "value", "deleted"} or ("deleted" in d and d["deleted"] is not True):
            raise ValueError("lww delta has unknown fields")
        _check_finite(d.get("value"))
    elif type_name == "orset":
        if "add" in d and set(d) == {"add"}:
            _check_finite(d["add"])
        elif set(d) == {"remove", "tags"} and isinstance(d["tags"], list):
            _check_finite(d["remove"])
            for tag in d["tags"]:
                if not (isinstance(tag, list) and len(tag) == 2 and isinstance(tag[0], str) and _is_int(tag[1]) and tag[1] > 0):
                    raise ValueError("orset remove tags must be [writer, seq] pairs")
        else:
            raise ValueError("orset delta is {add: x} or {remove: x, tags: [...]}")
    elif type_name in ("pn", "g"):
        fields = {"p", "n"} if type_name == "pn" else {"p"}
        if set(d) != fields or not all(_is_int(d[f]) and 0 <= d[f] <= kMaxCount for f in fields):
            raise ValueError(f"{type_name} delta needs non-negative integer totals {sorted(fields)}")
    else:
        raise ValueError(f"unknown type {type_name!r}")


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("values must be JSON: NaN and infinities are not allowed")
    if isinstance(value, list):
        for v in value:
            _check_finite(v)
    elif isinstance(value, dict):
        for v in value.values():
            _check_finite(v)


def sign_delta(key: PrivateKey, store: str, seq: int, obj: str, type_name: str, d: dict, incarnation: str = "0" * 16,
               cert: str | None = None) -> Delta:
    try:
        check_content(type_name, d)
    except ValueError as e:
        raise InvalidArgumentError(str(e)) from None
    writer = make_writer(ID.from_pubkey(key.get_public_key()).to_base58(), incarnation)
    payload = {"store": store, "writer": writer, "seq": seq, "obj": obj, "t": type_name, "d": d}
    if cert is not None:
        payload["cert"] = cert
    try:
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"values must be JSON (str, int, float, bool, None, lists, dicts): {e}") from None
    if depth(payload) > kMaxDepth:
        raise InvalidArgumentError(f"values may nest at most {kMaxDepth - 3} levels deep")
    raw = seal(key, kPrefix, text)
    if len(raw) > kMaxDeltaBytes:
        raise InvalidArgumentError(f"one write is limited to {kMaxDeltaBytes} bytes encoded; this one is {len(raw)}")
    return Delta(store, writer, seq, obj, type_name, d, raw, text, cert)


def verify_delta(raw: object, store: str) -> Delta:
    try:
        text, signer = unseal(raw, kPrefix, kMaxDeltaBytes)
    except BadEnvelope as e:
        raise InvalidDeltaError(f"delta {e}") from None
    try:
        p = parse_json(text)
        fields = (p["store"], p["writer"], p["seq"], p["obj"], p["t"], p["d"], p.get("cert"))
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidDeltaError(f"malformed delta payload: {e}") from None
    d_store, writer, seq, obj, type_name, d, cert = fields
    if d_store != store:
        raise InvalidDeltaError(f"delta is for store {d_store!r}, not {store!r}")
    if not _good_writer(writer, signer):
        raise InvalidDeltaError(f"forged delta: writer {str(writer)[:80]} is not the signing key's peer id/incarnation")
    if not _is_int(seq) or not 1 <= seq <= kMaxSeq:
        raise InvalidDeltaError("malformed delta payload: seq must be an int in 1..2**62")
    if not isinstance(obj, str) or not obj or len(obj) > kMaxNameChars or not obj.isprintable():
        raise InvalidDeltaError("malformed delta payload: bad object name")
    if not isinstance(type_name, str) or type_name not in TYPES:
        raise InvalidDeltaError("malformed delta payload: unknown type")
    try:
        check_content(type_name, d)
    except ValueError as e:
        raise InvalidDeltaError(f"malformed delta content: {e}") from None
    if cert is not None and not is_tag(cert):
        raise InvalidDeltaError("malformed delta payload: cert must be 64 lowercase hex digits")
    return Delta(store, writer, seq, obj, type_name, d, bytes(raw), text, cert)  # type: ignore[arg-type]
