"""A relay: forwards bytes between two peers that cannot reach each other otherwise.

Peers behind port-randomising NATs (and pairs whose hole punch failed) are connected
through a relay. The coordinator pairs them with one-time tokens it registers at the
relay; the relay forwards the bytes without parsing them (splice, in C++). Start one on
a host both can reach (``pcomm relay --listen 0.0.0.0:7000``) and give its address to
the coordinator (``--relay HOST:PORT``, or announce it in the DHT).
"""

from __future__ import annotations

from datetime import timedelta

from . import _pcomm, _secret
from ._server import NativeServer
from ._timeouts import to_seconds
from .errors import InvalidArgumentError

__all__ = ["Relay"]


class Relay(NativeServer):
    """A pcomm relay.

    Args:
        listen: ``"host:port"``; port 0 picks a free port (see ``address``).
        max_circuits: circuits open at once, in total.
        max_circuits_per_peer: circuits open at once for one peer id.
        max_per_source: connections (waiting or paired) from one source address.
        idle_timeout: seconds after which a circuit that moved no byte is closed (an
            hour: pools may be quiet between outer steps; dead ends are found by TCP
            keepalive).
        rate: bytes per second per circuit and direction; ``None``: no cap.
        secret: the run secret (default: ``PCOMM_SECRET_FILE``, else none): only a
            coordinator holding it may register tokens.
        insecure: allow a non-loopback address without a secret.
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        *,
        max_circuits: int = 1024,
        max_circuits_per_peer: int = 64,
        max_per_source: int = 128,
        idle_timeout: float | timedelta = 3600.0,
        rate: float | None = None,
        secret: bytes | str | None = None,
        insecure: bool = False,
    ) -> None:
        for name, value in (("max_circuits", max_circuits), ("max_circuits_per_peer", max_circuits_per_peer),
                            ("max_per_source", max_per_source)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
        if rate is not None and (not isinstance(rate, (int, float)) or rate <= 0):
            raise InvalidArgumentError(f"rate must be a positive number of bytes per second or None, got {rate!r}")
        self._impl = _pcomm.Relay(
            listen=listen,
            max_circuits=max_circuits,
            max_circuits_per_peer=max_circuits_per_peer,
            max_per_source=max_per_source,
            idle_timeout=to_seconds(idle_timeout, "idle_timeout"),
            rate_bytes_per_second=int(rate or 0),
            secret=_secret.resolve(secret) or b"",
            insecure=bool(insecure),
        )

    def stats(self) -> dict:
        """Counters: circuits_open, circuits_total, bytes_forwarded, refused."""
        return self._impl.stats()

    def __repr__(self) -> str:
        return f"Relay(address={self.address!r})"
