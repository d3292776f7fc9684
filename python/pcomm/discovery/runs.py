"""Runs by name: what ``Communicator(run=..., bootstrap=...)`` and ``pcomm coordinator
--announce`` use on top of the DHT node.

Both take the run secret (``secret=``, bytes or str; None: ``$PCOMM_SECRET_FILE``, else
none): ``announce`` publishes a record that proves it, ``find_run`` believes only such
records (without a secret: only records of runs without one). See node.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import _secret
from ..errors import DiscoveryError, InvalidArgumentError
from .host import local_ip_towards, parse_bootstrap
from .node import Announcement, Node

kCoordinatorTtl = 60.0  # a dead coordinator's record is gone within a minute


@dataclass(frozen=True)
class RunEndpoints:
    """Where a run is served: its coordinator and the relays announced for it."""

    coordinator: str
    relays: tuple[str, ...]


def find_run(run: str, bootstrap: list[str], timeout: float, *, secret: bytes | str | None = None) -> RunEndpoints:
    """Looks ``run`` up through the DHT (a client node that lives for this call only).
    The newest coordinator record that fits ``secret`` wins: a restarted coordinator
    supersedes its predecessor at once."""
    if isinstance(bootstrap, str) or not bootstrap:
        raise InvalidArgumentError("bootstrap must be a non-empty list of multiaddrs like /ip4/HOST/tcp/PORT/p2p/PEER_ID")
    secret = _secret.resolve(secret)
    with Node(bootstrap=list(bootstrap), server=False, timeout=timeout, secret=secret).start() as node:
        coordinators = node.lookup("coordinator", run)
        ignored = node.ignored_records > 0  # any coordinator record left out for its proof
        relays = node.lookup("relay", run)
    if not coordinators:
        raise DiscoveryError(
            f"no coordinator is announced for run '{run}' in the DHT reached through {len(bootstrap)} bootstrap "
            f"node(s){_why_ignored(ignored, secret)}; start one with: pcomm coordinator --announce {run} --bootstrap <multiaddr>"
        )
    return RunEndpoints(coordinators[0].addrs[0], tuple(a for r in relays for a in r.addrs))


def _why_ignored(ignored: bool, secret: bytes | None) -> str:
    """What to fix when the only coordinator records found were left out."""
    if not ignored:
        return ""
    if secret is None:
        return " (the records found prove a run secret: give secret= or set PCOMM_SECRET_FILE)"
    return " (the records found do not prove this run secret: is secret= / PCOMM_SECRET_FILE the run's?)"


def advertised_address(address: str, bootstrap: list[str]) -> str:
    """``address`` with a wildcard host replaced by the local address that reaches the
    first bootstrap node (what other machines can dial)."""
    host, _, port = address.rpartition(":")
    if host not in ("0.0.0.0", ""):
        return address
    for text in bootstrap:
        for addr in parse_bootstrap(text).addrs:
            try:
                return f"{local_ip_towards(addr.value_for_protocol('ip4'))}:{port}"
            except Exception:
                continue
    return f"127.0.0.1:{port}"


def announce(kind: str, run: str, address: str, bootstrap: list[str], *, key_file: str | None = None, ttl: float = kCoordinatorTtl,
             timeout: float = 30.0, secret: bytes | str | None = None) -> tuple[Node, Announcement]:
    """Publishes ``address`` as this process's ``kind`` for ``run`` (with the proof of
    ``secret``) and keeps it fresh until the returned node is closed."""
    node = Node(bootstrap=list(bootstrap), server=False, key_file=key_file, timeout=timeout, secret=secret).start()
    try:
        return node, node.publish(kind, run, [address], ttl=ttl)
    except BaseException:
        node.close()
        raise
