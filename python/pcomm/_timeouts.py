"""Timeout resolution shared by every blocking call.

Order: the per-call ``timeout`` argument, else the object's default; an object's default
is its constructor argument, else the ``PCOMM_TIMEOUT`` environment variable, else 30 s.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

from .errors import InvalidArgumentError

DEFAULT_TIMEOUT = 30.0


def to_seconds(value: float | timedelta | None, what: str) -> float | None:
    """Validates a timeout given as seconds or ``timedelta``; ``None`` passes through."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{what} must be a number of seconds or a timedelta, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return value


def default_timeout(value: float | timedelta | None) -> float:
    """The default for an object: its argument, else PCOMM_TIMEOUT, else 30 s."""
    seconds = to_seconds(value, "timeout")
    if seconds is not None:
        return seconds
    env = os.environ.get("PCOMM_TIMEOUT")
    if env:
        try:
            parsed = float(env)
        except ValueError:
            raise InvalidArgumentError(f"PCOMM_TIMEOUT must be a number of seconds, got {env!r}") from None
        return to_seconds(parsed, "PCOMM_TIMEOUT")  # type: ignore[return-value]
    return DEFAULT_TIMEOUT
