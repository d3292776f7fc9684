"""Discovery: find a run's coordinator, relays and peers by name through a private
Kademlia DHT on libp2p (Noise-encrypted TCP, yamux), with signed, expiring records that
prove the run secret when the run has one.

Needs the ``discovery`` extra (``pip install 'pcomm[discovery]'``, py-libp2p). See
docs/discovery.md.
"""

from __future__ import annotations

try:
    import libp2p  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError("pcomm.discovery needs py-libp2p: pip install 'pcomm[discovery]'") from e

from .node import Announcement, Node
from .records import KINDS, Record, check_proof, dht_key, sign_record, verify_record

__all__ = ["Announcement", "KINDS", "Node", "Record", "check_proof", "dht_key", "sign_record", "verify_record"]
