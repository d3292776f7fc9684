"""Building pcomm's libp2p host: identity, Noise-only security, yamux, addresses.

Three py-libp2p 0.8.1 defaults are wrong for pcomm and are replaced here:

* security: it offers Noise, TLS, SECIO *and plaintext*; we pass ``sec_opt`` with Noise
  alone, so an unencrypted or unauthenticated connection is never negotiated;
* dialing: with more than one connection allowed per peer, every dial waits a fixed
  250 ms for a second transport; ``max_connections_per_peer=1`` removes the wait;
* background dialling: its auto-connector dials every peer in the peerstore until the
  host has (low + high watermark) / 2 connections; pcomm stops it once the host runs,
  so only the DHT decides whom to dial;
* addresses: a host listening on 0.0.0.0 advertises 0.0.0.0; ``addrs_factory`` replaces
  it with the addresses given in ``announce``, else the local address that routes to the
  bootstrap nodes, else 127.0.0.1.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from ..errors import InvalidArgumentError, IoError

kDialTimeout = 3.0  # seconds to open and upgrade one connection

# py-libp2p logs expected events (a dial to a peer that just left) at ERROR, and with
# no handler of its own they reach stderr. pcomm logs what matters under
# "pcomm.discovery"; libp2p's own logger stays quiet unless LIBP2P_DEBUG (its own switch)
# or PCOMM_LIBP2P_LOG (a level name such as DEBUG) asks for it.
_libp2p_log = logging.getLogger("libp2p")
if os.environ.get("PCOMM_LIBP2P_LOG"):
    _libp2p_log.setLevel(os.environ["PCOMM_LIBP2P_LOG"].upper())
elif not os.environ.get("LIBP2P_DEBUG"):
    _libp2p_log.setLevel(logging.CRITICAL)
    # This module sets its own level (INFO) on import, so the parent's does not apply.
    logging.getLogger("libp2p.network.auto_connector").setLevel(logging.CRITICAL)


def load_or_create_key(path: str | None) -> KeyPair:
    """The node's Ed25519 identity: read from ``path`` if it exists, else created (and
    written to ``path`` with mode 0600 when a path is given)."""
    if path is None:
        return create_new_key_pair()
    path = os.path.expanduser(path)
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                private = deserialize_private_key(f.read())
        except OSError as e:
            raise IoError(f"cannot read key file {path}: {e}") from None
        except Exception as e:
            raise InvalidArgumentError(f"key file {path} does not hold a libp2p private key ({e}); move it away to create a new identity") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise InvalidArgumentError(f"key file {path} holds a {private.get_type().name} key; pcomm uses Ed25519")
        return KeyPair(private, private.get_public_key())
    pair = create_new_key_pair()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pcomm-key-")
        with os.fdopen(fd, "wb") as f:
            f.write(pair.private_key.serialize())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)  # atomic: a crash never leaves half a key
    except OSError as e:
        raise IoError(f"cannot write key file {path}: {e}") from None
    return pair


def parse_listen(listen: str, what: str = "listen") -> multiaddr.Multiaddr:
    """``/ip4/HOST/tcp/PORT`` (port 0 picks a free one)."""
    try:
        addr = multiaddr.Multiaddr(listen)
        names = [p.name for p in addr.protocols()]
    except Exception as e:
        raise InvalidArgumentError(f"{what} must be a multiaddr like /ip4/0.0.0.0/tcp/4001, got {listen!r} ({e})") from None
    if names != ["ip4", "tcp"]:
        raise InvalidArgumentError(f"{what} must be /ip4/HOST/tcp/PORT, got {listen!r}")
    return addr


def parse_bootstrap(address: str) -> PeerInfo:
    """A bootstrap node's full address, ``/ip4/HOST/tcp/PORT/p2p/PEER_ID``."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(address))
    except Exception as e:
        raise InvalidArgumentError(
            f"bootstrap address must look like /ip4/HOST/tcp/PORT/p2p/PEER_ID (as `pcomm dht` prints), got {address!r} ({e})"
        ) from None


def local_ip_towards(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def announce_factory(announce: list[str] | None, bootstrap: list[PeerInfo]):
    """An ``addrs_factory`` that never advertises 0.0.0.0."""
    fixed = [multiaddr.Multiaddr(a) for a in announce] if announce else None
    hosts: list[str] = []
    for info in bootstrap:
        for a in info.addrs:
            try:
                hosts.append(local_ip_towards(a.value_for_protocol("ip4")))
            except Exception:
                continue
    hosts = list(dict.fromkeys(hosts)) or ["127.0.0.1"]

    def factory(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
        if fixed is not None:
            return fixed
        out = []
        for addr in candidates:
            text = str(addr)
            if text.startswith("/ip4/0.0.0.0/"):
                out.extend(multiaddr.Multiaddr(text.replace("/ip4/0.0.0.0/", f"/ip4/{h}/", 1)) for h in hosts)
            else:
                out.append(addr)
        return out

    return factory


async def stop_auto_dialing(host: IHost) -> None:
    """Stops py-libp2p's auto-connector (it would dial every peer it ever heard of)."""
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        await connector.stop()


def make_host(key_pair: KeyPair, announce: list[str] | None, bootstrap: list[PeerInfo]) -> IHost:
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        # No minimum: the DHT decides whom to talk to (see stop_auto_dialing).
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, dial_timeout=kDialTimeout, min_connections=0, low_watermark=0
        ),
        addrs_factory=announce_factory(announce, bootstrap),
    )
