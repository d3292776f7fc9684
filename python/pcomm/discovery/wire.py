"""The ``/pcomm/kad/1.0.0`` protocol: one request and one response per libp2p stream.

Each message is a 4-byte big-endian length and that many bytes of UTF-8 JSON (at most
``kMaxMessageBytes``). Requests::

    {"op": "find_node", "target": "<64 hex>", "from": [multiaddr, ...]}
    {"op": "get",       "key":    "<64 hex>", "from": [...]}
    {"op": "put",       "key":    "<64 hex>", "record": "<base64 record>", "from": [...]}

``from`` lists the caller's listen addresses when it serves the DHT (clients send none);
its peer id is taken from the Noise-authenticated connection, never from the message.
Responses carry ``peers`` (the closest contacts the answering node knows, as
``{"id": base58, "addrs": [...]}``), ``records`` (base64, for ``get``), and ``ok`` /
``error`` for ``put``. Anything that does not parse closes that stream and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import struct
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .signed import parse_json

PROTOCOL = TProtocol("/pcomm/kad/1.0.0")
kMaxMessageBytes = 256 * 1024
kMaxAddrsPerPeer = 8
kMaxPeersPerReply = 32
kMaxRecordsPerReply = 64


class WireError(Exception):
    """A message broke the protocol; the stream carrying it is reset."""


@dataclass(frozen=True)
class Request:
    op: str
    key: bytes  # target of find_node, or the record key
    record: bytes | None
    caller_addrs: tuple[str, ...]


async def read_message(stream: Any, limit: int = kMaxMessageBytes) -> Any:
    header = await _read_exactly(stream, 4)
    (length,) = struct.unpack(">I", header)
    if length > limit:
        raise WireError(f"message of {length} bytes exceeds {limit}")
    body = await _read_exactly(stream, length)
    try:
        return parse_json(body)
    except ValueError as e:
        raise WireError(f"message is not usable JSON: {e}") from None


async def write_message(stream: Any, message: Any, limit: int = kMaxMessageBytes) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > limit:
        raise WireError(f"message of {len(body)} bytes exceeds {limit}")
    await stream.write(struct.pack(">I", len(body)) + body)


async def close_quietly(stream: Any, reset: bool = False) -> None:
    """Closes (or resets) a stream within 1 s, even inside an expired deadline; a
    stream that cannot be closed cleanly is reset."""
    with trio.move_on_after(1.0) as scope:
        scope.shield = True
        try:
            if not reset:
                await stream.close()
                return
        except Exception:
            pass
        try:
            await stream.reset()
        except Exception:
            pass


async def _read_exactly(stream: Any, n: int) -> bytes:
    parts = bytearray()
    while len(parts) < n:
        chunk = await stream.read(n - len(parts))
        if not chunk:
            raise WireError(f"stream ended after {len(parts)} of {n} bytes")
        parts += chunk
    return bytes(parts)


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise WireError(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise WireError(f"{what} must be 64 hex digits") from None


def _addrs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > kMaxAddrsPerPeer:
        raise WireError(f"addresses must be a list of at most {kMaxAddrsPerPeer}")
    if not all(isinstance(a, str) and 0 < len(a) <= 256 for a in value):
        raise WireError("each address must be a short string")
    return tuple(value)


def parse_request(message: Any) -> Request:
    if not isinstance(message, dict) or message.get("op") not in ("find_node", "get", "put"):
        raise WireError("request must be an object with op find_node, get or put")
    op = message["op"]
    caller = _addrs(message.get("from", []))
    if op == "find_node":
        return Request(op, _hex32(message.get("target"), "target"), None, caller)
    key = _hex32(message.get("key"), "key")
    record = None
    if op == "put":
        record = _b64(message.get("record"), "record")
    return Request(op, key, record, caller)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) > kMaxMessageBytes:
        raise WireError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise WireError(f"{what} must be a base64 string") from None


def encode_peers(contacts: list[Any]) -> list[dict[str, Any]]:
    return [{"id": c.peer_id, "addrs": list(c.addrs[:kMaxAddrsPerPeer])} for c in contacts]


def parse_peers(message: Any) -> list[tuple[str, tuple[str, ...]]]:
    """(base58 id, addrs) pairs from a response; ids are checked to be real peer ids."""
    peers = message.get("peers", []) if isinstance(message, dict) else None
    if not isinstance(peers, list) or len(peers) > kMaxPeersPerReply:
        raise WireError(f"peers must be a list of at most {kMaxPeersPerReply}")
    out = []
    for p in peers:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str):
            raise WireError("each peer must be an object with an id")
        try:
            _check_peer_id(p["id"])
        except Exception:
            raise WireError(f"bad peer id {p['id'][:60]!r}") from None
        out.append((p["id"], _addrs(p.get("addrs", []))))
    return out


@functools.lru_cache(maxsize=4096)
def _check_peer_id(text: str) -> None:
    ID.from_base58(text)  # raises on anything that is not a peer id


def parse_records(message: Any) -> list[bytes]:
    records = message.get("records", []) if isinstance(message, dict) else None
    if not isinstance(records, list) or len(records) > kMaxRecordsPerReply:
        raise WireError(f"records must be a list of at most {kMaxRecordsPerReply}")
    return [_b64(r, "record") for r in records]
