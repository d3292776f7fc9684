"""Coordinator failover under churn: peers all-reduce known data round after round
(retrying at once on failure, as a training loop does) while the serving coordinator is
SIGKILLed (and restarted on its address as the standby of the other) or SIGSTOPped past
the heartbeat timeout (and resumed), and peers are SIGKILLed mid-op and new ones join.
Every round, every survivor must end with exactly the sum of the survivors' inputs; at
the end all peers follow one term of one serving coordinator, whose ring is exactly them,
and the other coordinator is its standby. Not part of the timed test suite.

Run: python stress/failover_churn.py [--rounds 30] [--peers 4] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from harness import (CoordinatorProcess, PeerProcess, admit, connect_all, finish_retry_round,  # noqa: E402
                     start_retry_round, wait_for)
from test_failover import free_address  # noqa: E402

HEARTBEAT = 2.0


def status(address: str) -> dict | None:
    try:
        return pcomm._pcomm.coordinator_status(address, b"", 2)
    except pcomm.errors.PcommError:
        return None  # down, frozen or starting


class Pair:
    """Two coordinators watching each other, each with its own state directory."""

    def __init__(self, root: str) -> None:
        self.addresses = [free_address(), free_address()]
        self.dirs = [os.path.join(root, "a"), os.path.join(root, "b")]
        self.procs = [self._start(0, standby=False), self._start(1, standby=True)]
        self.retired: list[CoordinatorProcess] = []

    def _start(self, i: int, standby: bool) -> CoordinatorProcess:
        args = ["--peer-of", self.addresses[1 - i], "--state-dir", self.dirs[i], "--gather-window", "1"]
        return CoordinatorProcess(HEARTBEAT, listen=self.addresses[i], args=(["--standby"] if standby else []) + args)

    def serving(self) -> int:
        """The index of the coordinator that serves now (waits for one)."""
        def one_more() -> int:  # the index + 1, 0 while none serves (wait_for needs it truthy)
            return next((i + 1 for i in (0, 1) if (status(self.addresses[i]) or {}).get("role") == "serving"), 0)

        found = wait_for(one_more, 30)
        assert found, "no coordinator serves"
        return found - 1

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.retired.append(self.procs[i])
        time.sleep(0.3)
        self.procs[i] = self._start(i, standby=True)  # back as the other's standby

    def cleanup(self) -> None:
        for p in self.procs + self.retired:
            p.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm coordinator failover under churn")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stats = {"coordinator_kills": 0, "coordinator_freezes": 0, "peer_kills": 0, "joins": 0, "failed_attempts": 0}
    with tempfile.TemporaryDirectory() as root:
        pair = Pair(root)
        peers = {i: PeerProcess(pair.addresses, timeout=60) for i in range(args.peers)}
        next_index, dead = args.peers, []
        try:
            connect_all(list(peers.values()))
            start = time.monotonic()
            for r in range(args.rounds):
                start_retry_round(peers, args.count)
                time.sleep(rng.uniform(0, 0.05))  # mid-op, most of the time
                event = rng.choice(["coordinator_kill", "coordinator_freeze", "peer_kill", "none"])
                victim = None
                if event == "coordinator_kill":
                    pair.kill(pair.serving())
                    stats["coordinator_kills"] += 1
                elif event == "coordinator_freeze":
                    i = pair.serving()
                    pair.procs[i].stop()
                    time.sleep(HEARTBEAT * 1.5)
                    pair.procs[i].resume()
                    stats["coordinator_freezes"] += 1
                elif event == "peer_kill" and len(peers) > 2:
                    victim = rng.choice(sorted(peers))
                    peers[victim].kill()
                    dead.append(peers.pop(victim))
                    stats["peer_kills"] += 1
                stats["failed_attempts"] += finish_retry_round(peers, args.count, victim=victim)
                if len(peers) < args.peers and rng.random() < 0.5:
                    joiner = PeerProcess(pair.addresses, timeout=60)
                    admit(list(peers.values()), joiner, 60)
                    peers[next_index] = joiner
                    next_index += 1
                    stats["joins"] += 1
                print(f"round {r}: {event}, world {len(peers)}", flush=True)
            # One serving coordinator whose ring is exactly the survivors, all in its term;
            # the other is its standby.
            i = pair.serving()
            s = status(pair.addresses[i])
            infos = [p.ok("info") for p in peers.values()]
            assert sorted(p["peer_id"] for p in s["peers"]) == sorted(x["peer_id"] for x in infos), (s, infos)
            assert {x["term"] for x in infos} == {s["term"]}, (s["term"], infos)
            assert wait_for(lambda: (status(pair.addresses[1 - i]) or {}).get("role") == "standby", 15)
            print(f"failover churn ok: {args.rounds} rounds in {time.monotonic() - start:.1f} s, {stats}, "
                  f"final world {len(peers)}, term {s['term']}")
            return 0
        except BaseException:
            for name, p in [*((f"coordinator {q.pid}", q) for q in pair.retired + pair.procs),
                            *((f"peer {i}", q) for i, q in list(peers.items()) + [(f"dead {k}", q) for k, q in enumerate(dead)])]:
                print(f"===== {name} stderr\n{p.stderr()}", file=sys.stderr)
            raise
        finally:
            for p in list(peers.values()) + dead:
                p.cleanup()
            pair.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
