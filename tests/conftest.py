"""Shared fixtures: an in-process coordinator and a factory of peer processes that
are always killed at the end of the test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import pcomm  # noqa: E402
from harness import PeerProcess  # noqa: E402


@pytest.fixture
def coordinator():
    with pcomm.Coordinator(listen="127.0.0.1:0", heartbeat_timeout=5.0) as coord:
        yield coord


@pytest.fixture
def spawn():
    """spawn(coordinator_address, **communicator_kwargs) -> PeerProcess, killed at teardown."""
    procs = []

    def make(address, env=None, **kwargs):
        p = PeerProcess(address, env=env, **kwargs)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.cleanup()
