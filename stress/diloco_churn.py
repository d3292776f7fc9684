"""DiLoCo under churn: peers train (tests/diloco_worker.py) while random peers are
SIGKILLed and new ones join; at the end every survivor must hold the same θ_global and
outer momentum, bit for bit, at every outer step they shared. Not part of the test suite.

Run: python stress/diloco_churn.py [--seconds 40] [--peers 4] [--variant sync|async|streaming]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from test_diloco import DiLoCoPeer, assert_agree  # noqa: E402


def drain(peer: DiLoCoPeer) -> None:
    """Moves the reports the peer printed so far into peer.reports, without waiting."""
    while True:
        try:
            line = peer.lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            return
        peer.reports.append(json.loads(line))


def main() -> int:
    parser = argparse.ArgumentParser(description="DiLoCo under churn")
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--variant", default="sync", choices=["sync", "async", "streaming"])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rounds = 10_000  # the run is bounded by time: peers are stopped at the end
    cfg = dict(sync_every=10, rounds=rounds, step_sleep=0.003, variant=args.variant)
    kills = joins = unexpected = 0
    with pcomm.Coordinator(heartbeat_timeout=2.0) as coord:
        alive = [DiLoCoPeer(coord.address, index=i, min_world=args.peers, **cfg) for i in range(args.peers)]
        dead = []
        try:
            # Churn starts once the run has: the first report is the first outer boundary
            # (the peers start in several seconds on 2 cores, importing torch).
            for p in alive:
                p.read_some(1, timeout=120)
            end = time.monotonic() + args.seconds
            next_index = args.peers
            while time.monotonic() < end:
                time.sleep(rng.uniform(0.5, 2.0))
                for p in alive:
                    drain(p)
                exited = [p for p in alive if p.proc.poll() is not None]
                for p in exited:  # a peer must only ever end by our SIGKILL
                    print(f"peer {p.pid} exited by itself ({p.proc.poll()}); stderr:\n{p.stderr()}")
                    alive.remove(p)
                    dead.append(p)
                    unexpected += 1
                # Victims come from the peers in the run (they reported an outer boundary),
                # and two of those always stay: the run's state must outlive the churn.
                # (A peer still starting up holds nothing yet.)
                training = [p for p in alive if p.reports]
                if len(training) > 2 and rng.random() < 0.5:
                    victim = training[rng.randrange(len(training))]
                    alive.remove(victim)
                    victim.kill()
                    dead.append(victim)
                    kills += 1
                elif len(alive) < args.peers + 2:
                    alive.append(DiLoCoPeer(coord.address, index=next_index, **cfg))
                    next_index += 1
                    joins += 1
            time.sleep(2.0)
            # Collect what every survivor reported so far, then compare.
            for p in alive:
                p.kill()
                while True:  # up to the end of its output
                    try:
                        p.reports.append(json.loads(p.read_line(0.2)))
                    except Exception:
                        break
            reported = [[r for r in p.reports if "revision" in r] for p in alive]
            for rs in reported:  # the run never goes back (fresh joiners must not roll it back)
                revisions = [r["revision"] for r in rs]
                assert revisions == sorted(set(revisions)), f"outer steps went {revisions}"
            shared = assert_agree(reported)
            assert unexpected == 0, f"{unexpected} peer(s) exited by themselves"
            print(f"DiLoCo churn ok ({args.variant}): {kills} kills, {joins} joins, survivors agree on "
                  f"{len(shared)} outer steps up to revision {max(shared)}")
            return 0
        finally:
            for p in alive + dead:
                p.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
