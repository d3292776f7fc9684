"""Discovery under churn: 20 DHT nodes in 4 processes; every few seconds one process
(5 nodes) is SIGKILLed and a fresh one joins, while a publisher keeps 3 runs' records
fresh (short ttl) and a client looks them up continuously. Every lookup must return
exactly the published addresses. Not part of the timed test suite.

Run: python stress/dht_churn.py [--seconds 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import DhtProcess  # noqa: E402

RUNS = {f"churn-run-{i}": [f"10.0.0.{i}:29500"] for i in range(3)}


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm discovery under churn")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stats = {"kills": 0, "joins": 0, "lookups": 0, "wrong": 0, "errors": 0}
    latencies = []
    boot_proc = DhtProcess(5)
    boot = boot_proc.addrs[0][0]
    others = [DhtProcess(5, bootstrap=[boot]) for _ in range(3)]
    publisher = DhtProcess(1, bootstrap=[boot], client=True)
    client = DhtProcess(1, bootstrap=[boot], client=True)
    try:
        for run, addrs in RUNS.items():
            publisher.call("publish", kind="coordinator", run=run, addrs=addrs, ttl=6)
        end = time.monotonic() + args.seconds
        next_kill = time.monotonic() + 3
        while time.monotonic() < end:
            for run, addrs in RUNS.items():
                stats["lookups"] += 1
                try:
                    reply = client.call("lookup", kind="coordinator", run=run, wait=30)
                except Exception:
                    stats["errors"] += 1
                    continue
                latencies.append(reply["seconds"])
                if [r["addrs"] for r in reply["records"]] != [addrs]:
                    stats["wrong"] += 1
            if time.monotonic() >= next_kill:
                victim = others.pop(rng.randrange(len(others)))
                victim.kill()
                stats["kills"] += 1
                others.append(DhtProcess(5, bootstrap=[boot]))
                stats["joins"] += 1
                next_kill = time.monotonic() + rng.uniform(2, 5)
            time.sleep(0.1)
        latencies.sort()
        stats["p50_ms"] = round(latencies[len(latencies) // 2] * 1e3, 2) if latencies else None
        stats["p99_ms"] = round(latencies[int(len(latencies) * 0.99)] * 1e3, 2) if latencies else None
        ok = stats["wrong"] == 0 and stats["errors"] == 0
        print(json.dumps({**stats, "ok": ok}))
        return 0 if ok else 1
    finally:
        for p in [boot_proc, publisher, client, *others]:
            p.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
