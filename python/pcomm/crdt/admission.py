"""Which deltas a replica takes: from writers the run admitted, stamped no later than
a minute ahead.

In a store of a run with a secret, a writer is admitted by a certificate: the tag of
the run secret (discovery/run_proof.py, key ``derive(secret, b"crdt writer")``) over
the store name and the writer's peer id. A store given the secret certifies its own key
and puts the certificate in every delta it signs (``cert``), so a delta carries its
admission wherever it is relayed, and is checked by every replica that receives it.
The certificate names the writer's key, and the delta must be signed by that key, so a
certificate copied into another writer's delta, another store's or another run's is
worthless. A store without a secret takes deltas from anyone (the run has no secret
to prove).

Whatever the secret, a last-writer-wins stamp more than ``clock.kMaxAheadMs`` ahead of
the receiver's clock is refused, not stored: it would beat every honest write to its
key until real time caught up (for ever, at 2^53 ms). A writer's later deltas wait
behind a refused one (replicas take each writer's deltas in seq order), so a writer
with a far-ahead clock is cut off; one a little ahead is taken once it is within the
minute.
"""

from __future__ import annotations

from ..discovery.run_proof import make_tag, tag_matches
from .clock import HLC, kMaxAheadMs
from .deltas import Delta, RefusedDeltaError

kPurpose = b"crdt writer"


def writer_cert(secret: bytes, store: str, peer_id: str) -> str:
    """The certificate that admits the key ``peer_id`` (base58) as a writer of ``store``."""
    return make_tag(secret, kPurpose, ["crdt writer", store, peer_id])


def check_admitted(delta: Delta, secret: bytes | None) -> None:
    """Raises RefusedDeltaError unless a store holding ``secret`` (None: no secret)
    takes writes from ``delta``'s writer."""
    if secret is None:
        return
    if delta.cert is None:
        raise RefusedDeltaError(f"writer {delta.peer_id[-8:]} of store '{delta.store}' is not admitted: its delta carries "
                                "no certificate of the run secret (give that writer's Store the run secret)")
    if not tag_matches(secret, kPurpose, ["crdt writer", delta.store, delta.peer_id], delta.cert):
        raise RefusedDeltaError(f"writer {delta.peer_id[-8:]} of store '{delta.store}' is not admitted: its certificate "
                                "is not this run secret's for this store and key")


def check_not_ahead(delta: Delta, clock: HLC) -> None:
    """Raises RefusedDeltaError if ``delta`` is stamped more than a minute ahead of ``clock``."""
    if delta.type == "lww" and clock.too_far_ahead(delta.d["ts"][0]):
        raise RefusedDeltaError(f"writer {delta.peer_id[-8:]} stamped a write {delta.d['ts'][0]} ms, more than "
                                f"{kMaxAheadMs // 1000} s ahead of this replica's clock: refused (check that writer's clock)")
