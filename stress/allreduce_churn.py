"""All-reduce under churn: peers all-reduce known data in a loop (retrying at once on
failure, as a training loop does) while peers are SIGKILLed mid-op and new ones join.
Every round, every survivor must end with exactly the sum of the survivors' inputs.
Not part of the timed test suite.

Run: python stress/allreduce_churn.py [--rounds 40] [--peers 4] [--count 2000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from harness import PeerProcess, admit, connect_all, finish_retry_round, start_retry_round, wait_for  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm all-reduce under churn")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--count", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stats = {"kills": 0, "joins": 0, "failed_attempts": 0}
    with pcomm.Coordinator(heartbeat_timeout=2.0) as coord:
        peers = {i: PeerProcess(coord.address, timeout=60) for i in range(args.peers)}
        next_index = args.peers
        dead = []
        try:
            connect_all(list(peers.values()))
            start = time.monotonic()
            for _ in range(args.rounds):
                start_retry_round(peers, args.count)
                victim = None
                if len(peers) > 2 and rng.random() < 0.4:
                    assert wait_for(lambda: coord.collectives_running >= 1, 30, interval=0.0005)
                    victim = rng.choice(sorted(peers))
                    peers[victim].kill()
                    dead.append(peers.pop(victim))
                    stats["kills"] += 1
                stats["failed_attempts"] += finish_retry_round(peers, args.count, victim=victim)
                if len(peers) < args.peers + 2 and rng.random() < 0.4:
                    joiner = PeerProcess(coord.address, timeout=60)
                    admit(list(peers.values()), joiner)
                    peers[next_index] = joiner
                    next_index += 1
                    stats["joins"] += 1
            print(f"all-reduce churn ok: {args.rounds} rounds in {time.monotonic() - start:.1f} s, {stats}, "
                  f"final world {len(peers)}")
            return 0
        finally:
            for p in list(peers.values()) + dead:
                p.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
