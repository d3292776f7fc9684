"""CRDT store under churn: replicas write in small batches while some are SIGKILLed and
restarted on their own database (new identity, same delta log). At the end every
replica that ever ran is back, and all must hold the same state containing every write
that was acknowledged. Not part of the timed test suite.

Run: python stress/crdt_churn.py [--seconds 30] [--replicas 5] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import ProcessFailed, ReplicaProcess, converge  # noqa: E402

from pcomm.discovery import Node  # noqa: E402

STORE = "churn"


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm CRDT store under churn")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    acked_keys: list[str] = []
    acked_tokens = 0
    sent_tokens = 0
    stats = {"kills": 0, "restarts": 0, "batches": 0}
    with tempfile.TemporaryDirectory() as tmp, Node(timeout=20).start() as dht:
        boot = [dht.addrs[0]]

        def spawn(i: int) -> ReplicaProcess:
            return ReplicaProcess(STORE, bootstrap=boot, path=os.path.join(tmp, f"r{i}.db"), sync_interval=0.2)

        live = {i: spawn(i) for i in range(args.replicas)}
        dead: dict[int, float] = {}  # replica -> when to restart it
        generation = 0
        try:
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                generation += 1
                for i, r in list(live.items()):
                    keys = [f"g{generation}-r{i}-{k}" for k in range(5)]
                    ops = [["map", "log", k, generation] for k in keys] + [["inc", "tokens", 1], ["add", "seen", f"r{i}"]]
                    sent_tokens += 1
                    try:
                        r.call("write", ops=ops, wait=30)
                    except ProcessFailed:
                        continue
                    acked_keys.extend(keys)
                    acked_tokens += 1
                    stats["batches"] += 1
                if len(live) > 2 and rng.random() < 0.15:
                    victim = rng.choice(sorted(live))
                    live.pop(victim).kill()  # SIGKILL
                    dead[victim] = time.monotonic() + rng.uniform(0.5, 3.0)
                    stats["kills"] += 1
                for i, when in list(dead.items()):
                    if time.monotonic() >= when:
                        live[i] = spawn(i)
                        del dead[i]
                        stats["restarts"] += 1
            for i in list(dead):
                live[i] = spawn(i)
                stats["restarts"] += 1
            seconds = converge(list(live.values()), 120)
            state = live[0].call("state")["snapshot"]
            log = state["lww"]["log"]
            missing = [k for k in acked_keys if k not in log]
            tokens = state["pn"]["tokens"]
            ok = not missing and acked_tokens <= tokens <= sent_tokens
            print(json.dumps({**stats, "acked_writes": len(acked_keys) + 2 * acked_tokens, "converged_s": round(seconds, 2),
                              "missing": len(missing), "tokens": tokens, "acked_tokens": acked_tokens, "ok": ok}))
            return 0 if ok else 1
        finally:
            for r in live.values():
                r.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
