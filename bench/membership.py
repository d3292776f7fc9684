"""Membership latencies on loopback, each the median of several runs:

  SIGKILL -> drop   : kill a peer, until every survivor sees the smaller world_size
  SIGSTOP -> drop   : freeze a peer (heartbeat timeout 1 s), until a survivor sees it gone
  late join         : a late peer's connect() until admitted, the others looping on
                      update_topology

Run: python bench/membership.py [--runs 5] [--peers 4]
Peers are real processes driven by the test harness (tests/harness.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from harness import PeerProcess, connect_all, join_while_looping  # noqa: E402


def swarm(coord: pcomm.Coordinator, n: int) -> list[PeerProcess]:
    peers = [PeerProcess(coord.address) for _ in range(n)]
    connect_all(peers)
    return peers


def sigkill_drop(n: int) -> float:
    with pcomm.Coordinator(heartbeat_timeout=5.0) as coord:
        peers = swarm(coord, n)
        try:
            start = time.monotonic()
            peers[-1].kill()
            for p in peers[:-1]:
                p.ok("wait_world_size", size=n - 1, within=5)
            return time.monotonic() - start
        finally:
            for p in peers:
                p.cleanup()


def sigstop_drop(n: int) -> float:
    with pcomm.Coordinator(heartbeat_timeout=1.0) as coord:
        peers = swarm(coord, n)
        try:
            start = time.monotonic()
            peers[-1].stop()
            peers[0].ok("wait_world_size", size=n - 1, within=5)
            return time.monotonic() - start
        finally:
            for p in peers:
                p.cleanup()


def late_join(n: int) -> float:
    with pcomm.Coordinator(heartbeat_timeout=5.0) as coord:
        peers = swarm(coord, n - 1)
        late = PeerProcess(coord.address)
        try:
            return join_while_looping(peers, late)
        finally:
            for p in peers + [late]:
                p.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="pcomm membership latencies")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peers", type=int, default=4)
    args = parser.parse_args()
    print(f"{'measurement':<34}{'median':>10}{'min':>10}{'max':>10}   ({args.runs} runs, {args.peers} peers)")
    for name, fn in [
        ("SIGKILL -> drop seen by all", sigkill_drop),
        ("SIGSTOP -> drop (heartbeat 1 s)", sigstop_drop),
        ("late join: connect() -> admitted", late_join),
    ]:
        times = [fn(args.peers) * 1000 for _ in range(args.runs)]
        print(f"{name:<34}{statistics.median(times):>8.1f}ms{min(times):>8.1f}ms{max(times):>8.1f}ms")


if __name__ == "__main__":
    main()
