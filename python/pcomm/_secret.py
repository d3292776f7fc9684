"""The run secret: what every member of a run knows and nobody else does.

A run secret is given as ``secret=`` (bytes or str) to ``Coordinator``, ``Communicator``
and ``Relay``, as ``--secret-file PATH`` on the command line, or through the
``PCOMM_SECRET_FILE`` environment variable. Every key pcomm uses is derived from it
with HKDF-SHA256 (RFC 5869), one key per purpose, so a key for one purpose can never be
used for another (the derivation is written down in docs/security.md; the C++ core
derives the same way with OpenSSL):

    prk = HMAC-SHA256(key=b"pcomm run secret v1", msg=secret)
    key(purpose) = HMAC-SHA256(key=prk, msg=purpose + b"\\x01")   # 32 bytes

Purposes: ``b"coordinator psk"`` (TLS between peers and coordinator), ``b"relay token"``
(MACs on relay tokens), ``b"dht record"`` (run records in the DHT), ``b"crdt writer"``
(certificates of CRDT writers).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from .errors import InvalidArgumentError

kMinSecretBytes = 16
kEnvVar = "PCOMM_SECRET_FILE"
kSalt = b"pcomm run secret v1"
kHowToMake = "make one with: openssl rand -hex 32 > run.secret"


def normalize(secret: bytes | bytearray | str | None) -> bytes | None:
    """The secret as bytes (a str is taken as UTF-8), or None when not given.
    Raises InvalidArgumentError for anything else or for a secret that is too short."""
    if secret is None:
        return None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, (bytes, bytearray)):
        raise InvalidArgumentError(f"secret must be bytes or str, got {type(secret).__name__}")
    if len(secret) < kMinSecretBytes:
        raise InvalidArgumentError(
            f"secret is {len(secret)} bytes; give at least {kMinSecretBytes} ({kHowToMake})")
    return bytes(secret)


def read_file(path: str) -> bytes:
    """The secret in ``path`` (trailing whitespace and newlines are not part of it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError as e:
        raise InvalidArgumentError(f"cannot read the secret file {path!r}: {e.strerror}") from None
    secret = normalize(data.rstrip())
    assert secret is not None
    return secret


def resolve(secret: bytes | bytearray | str | None) -> bytes | None:
    """The secret given, else the one in $PCOMM_SECRET_FILE, else None."""
    if secret is not None:
        return normalize(secret)
    path = os.environ.get(kEnvVar)
    return read_file(path) if path else None


def derive(secret: bytes, purpose: bytes) -> bytes:
    """The 32-byte key for ``purpose`` (HKDF-SHA256 with pcomm's salt, one block)."""
    prk = hmac.new(kSalt, secret, hashlib.sha256).digest()
    return hmac.new(prk, purpose + b"\x01", hashlib.sha256).digest()


def is_loopback(address: str) -> bool:
    """True for "127.x.x.x:port", "localhost:port" and "[::1]:port"."""
    host = address.rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")
