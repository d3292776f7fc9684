"""pcomm's exception hierarchy. See docs/errors.md for when each is raised.

Every error pcomm raises derives from :class:`PcommError`. A few also derive from the
builtin with the same meaning, so generic handlers keep working
(``except TimeoutError`` catches :class:`pcomm.errors.TimeoutError`).
"""

import builtins

__all__ = [
    "PcommError",
    "TimeoutError",
    "PeerLostError",
    "CoordinatorLostError",
    "AbortedError",
    "ProtocolError",
    "InvalidArgumentError",
    "IoError",
    "AuthenticationError",
    "DiscoveryError",
    "InvalidRecordError",
]


class PcommError(Exception):
    """Base class of every pcomm error."""


class TimeoutError(PcommError, builtins.TimeoutError):  # noqa: A001 - deliberate shadow
    """A blocking call ran past its deadline (the ``timeout`` argument or default)."""


class PeerLostError(PcommError):
    """A peer the call depended on died, froze or was cut off; or this peer itself was
    dropped from the run (then ``connect()`` again to rejoin as a new peer)."""


class CoordinatorLostError(PcommError):
    """The coordinator closed the connection, died, shut down or stopped answering
    heartbeats."""


class AbortedError(PcommError):
    """The operation was aborted everywhere because a participant failed, or the
    communicator was closed while the call waited."""


class ProtocolError(PcommError):
    """Bytes on a connection broke the wire protocol (including a protocol version
    mismatch)."""


class InvalidArgumentError(PcommError, ValueError):
    """An argument is unusable; the message says what to fix."""


class IoError(PcommError, OSError):
    """A socket or system call failed (address in use, host not resolvable...)."""


class AuthenticationError(PcommError, PermissionError):
    """The other side refused this one's credentials: the run secret is missing or
    wrong (``secret=``, ``--secret-file``, ``PCOMM_SECRET_FILE``), or a data link's key
    was not issued to this peer."""


class DiscoveryError(PcommError):
    """The discovery overlay could not answer: no bootstrap node reachable, nothing
    published under the name asked for, or a publish that no node stored."""


class InvalidRecordError(DiscoveryError, ValueError):
    """A discovery record is oversized, malformed, unsigned, forged or expired."""
