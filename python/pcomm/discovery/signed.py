"""Signed envelopes: a text signed with a libp2p Ed25519 identity key.

    {"p": "<text>", "k": "<base64 public key>", "s": "<base64 signature>"}

The signature covers ``prefix + text`` byte for byte (the prefix names what the text
is, so a signature for one purpose can never be replayed as another). Used by discovery
records and by CRDT deltas.
"""

from __future__ import annotations

import base64
import binascii
import json

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import KeyType, PrivateKey
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from ..errors import InvalidArgumentError


kMaxDepth = 32  # nesting of JSON values pcomm accepts from the network


def parse_json(data: bytes | str) -> object:
    """json.loads for bytes from the network: ValueError (never RecursionError) for
    anything that does not parse or nests deeper than ``kMaxDepth``."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if depth(value) > kMaxDepth:
        raise ValueError(f"JSON nested deeper than {kMaxDepth} levels")
    return value


def depth(value: object) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            d += 1
            deepest = max(deepest, d)
            stack.extend((x, d) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


class BadEnvelope(ValueError):
    """The envelope is malformed, unsigned or its signature does not verify."""


def seal(key: PrivateKey, prefix: bytes, text: str) -> bytes:
    if key.get_type() != KeyType.Ed25519:
        raise InvalidArgumentError("pcomm signs with Ed25519 identity keys only")
    envelope = {
        "p": text,
        "k": base64.b64encode(key.get_public_key().serialize()).decode(),
        "s": base64.b64encode(key.sign(prefix + text.encode())).decode(),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def unseal(raw: object, prefix: bytes, max_bytes: int) -> tuple[str, str]:
    """Returns (text, signer's base58 peer id) or raises BadEnvelope saying why."""
    if not isinstance(raw, (bytes, bytearray)):
        raise BadEnvelope("must be bytes")
    if len(raw) > max_bytes:
        raise BadEnvelope(f"{len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        envelope = parse_json(bytes(raw))
        text, key_b64, sig_b64 = envelope["p"], envelope["k"], envelope["s"]
        if not all(isinstance(v, str) for v in (text, key_b64, sig_b64)):
            raise TypeError("envelope fields must be strings")
        public_bytes = base64.b64decode(key_b64, validate=True)
        signature = base64.b64decode(sig_b64, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise BadEnvelope(f"malformed envelope: {e}") from None
    if not signature:
        raise BadEnvelope("unsigned")
    try:
        public = deserialize_public_key(public_bytes)
    except Exception as e:  # the key decoder raises several unrelated types
        raise BadEnvelope(f"malformed public key: {e}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise BadEnvelope("must be signed with an Ed25519 key")
    try:
        good = public.verify(prefix + text.encode(), signature)
    except Exception:
        good = False
    if not good:
        raise BadEnvelope("bad signature: not signed by the key it carries")
    return text, ID.from_pubkey(public).to_base58()
