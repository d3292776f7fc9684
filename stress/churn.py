"""Membership churn: peers are SIGKILLed, SIGSTOPped and added at random while the rest
loop on update_topology. After every event the survivors must agree on the ring and the
epoch, and nobody may hang. Not part of the timed test suite.

Run: python stress/churn.py [--seconds 60] [--peers 6] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from harness import PeerProcess, admit, connect_all, wait_for  # noqa: E402


def agree(peers: list[PeerProcess]) -> dict:
    """Runs one barrier on all peers and checks they agree on ring and epoch."""
    for p in peers:
        p.send("update_topology", timeout=10)
    replies = [p.reply(20) for p in peers]
    bad = [r for r in replies if not r["ok"]]
    assert not bad, bad
    views = {(tuple(r["result"]["peers"]), r["result"]["epoch"]) for r in replies}
    assert len(views) == 1, f"peers disagree: {views}"
    ring, epoch = views.pop()
    assert len(ring) == len(peers)
    return {"ring": ring, "epoch": epoch}


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm membership churn")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--peers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    events = {"kill": 0, "freeze": 0, "join": 0, "rounds": 0}
    with pcomm.Coordinator(heartbeat_timeout=1.0) as coord:
        peers = [PeerProcess(coord.address) for _ in range(args.peers)]
        dead: list[PeerProcess] = []
        try:
            connect_all(peers)
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                agree(peers)
                events["rounds"] += 1
                action = rng.choice(["kill", "freeze", "join", "none", "none"])
                if action in ("kill", "freeze") and len(peers) > 2:
                    victim = peers.pop(rng.randrange(len(peers)))
                    victim.kill() if action == "kill" else victim.stop()
                    dead.append(victim)
                    events[action] += 1
                    assert wait_for(lambda: peers[0].ok("info")["world_size"] == len(peers), 3), "drop not seen"
                elif action == "join" and len(peers) < args.peers + 2:
                    joiner = PeerProcess(coord.address)
                    admit(peers, joiner)
                    peers.append(joiner)
                    events["join"] += 1
            view = agree(peers)
            print(f"churn ok: {events}, final ring of {len(view['ring'])}, epoch {view['epoch']}")
            return 0
        finally:
            for p in peers + dead:
                p.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
