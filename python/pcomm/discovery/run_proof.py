"""Proofs of the run secret: HMAC-SHA256 tags that only members of a run can make.

The overlay trusts the run, not whoever publishes: a discovery record or a CRDT writer
is believed only if it carries a tag made with a key derived from the run secret
(``_secret.derive(secret, purpose)``, one key per purpose)::

    tag = hex(HMAC-SHA256(derive(secret, purpose), kDomain + canonical JSON of fields))

``fields`` always start with a name of what is proved (``"dht record"``, ``"crdt
writer"``) followed by everything the proof must pin (run, kind, publisher, ...), so a
tag made for one thing verifies for nothing else. Canonical JSON (no spaces, ASCII,
no NaN) of values parsed back from the network gives the same bytes as the values
signed, so the tag checks values, not encodings. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from .._secret import derive

kDomain = b"pcomm-run-proof/v1\n"
kTagHexChars = 64


def make_tag(secret: bytes, purpose: bytes, fields: list) -> str:
    """The hex tag of ``fields`` under the run secret's key for ``purpose``."""
    message = kDomain + json.dumps(fields, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    return hmac.new(derive(secret, purpose), message, hashlib.sha256).hexdigest()


def tag_matches(secret: bytes, purpose: bytes, fields: list, tag: object) -> bool:
    """True if ``tag`` is the tag of ``fields`` (compared in constant time)."""
    if not is_tag(tag):
        return False
    return hmac.compare_digest(make_tag(secret, purpose, fields), tag)  # type: ignore[arg-type]


def is_tag(value: object) -> bool:
    """64 lowercase hex digits: the shape of a tag (what a receiver checks before the MAC)."""
    return isinstance(value, str) and len(value) == kTagHexChars and all(c in "0123456789abcdef" for c in value)
