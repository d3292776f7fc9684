"""CRDT store: convergence of 5 replicas after a burst of 1000 writes.

Starts 5 replica processes on loopback (discovery node + store each, replicas found
through the DHT), then times from the start of a 1000-write burst until all 5 report the
same state fingerprint: (a) all writes on one replica, (b) 200 on each replica at once;
in memory and with SQLite durability (fsync per write). The baseline, measured in the
same run, is the same 1000 writes on a lone store with no replication.

Run: python bench/crdt.py [--writes 1000] [--sync-interval 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from crdt_worker import apply_ops, burst_ops  # noqa: E402
from harness import ReplicaProcess, converge  # noqa: E402

from pcomm.crdt import Store  # noqa: E402


def lone_store(writes: int, path: str | None) -> float:
    with Store("bench-lone", path=path) as store:
        t = time.perf_counter()
        apply_ops(store, burst_ops(writes, "x"))
        return time.perf_counter() - t


def burst(replicas: list, writers: list[int], writes: int, tag: str) -> float:
    start = time.monotonic()
    for i in writers:
        replicas[i].proc.stdin.write(json.dumps({"cmd": "burst", "count": writes // len(writers), "prefix": f"{tag}{i}"}) + "\n")
        replicas[i].proc.stdin.flush()
    for i in writers:
        json.loads(replicas[i].read_line(300))
    converge(replicas, 300)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1000)
    parser.add_argument("--sync-interval", type=float, default=0.2)
    args = parser.parse_args()
    print(f"{'case':44s} {'seconds':>8} {'vs lone store':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for durable in (False, True):
            base = lone_store(args.writes, os.path.join(tmp, "lone.db") if durable else None)
            mode = "durable" if durable else "in memory"
            print(f"{'baseline: ' + str(args.writes) + ' writes, lone store, ' + mode:44s} {base:8.3f} {1.0:14.2f}")
            replicas = []
            try:
                for i in range(5):
                    path = os.path.join(tmp, f"r{i}.db") if durable else None
                    boot = [replicas[0].addrs[0]] if replicas else []
                    replicas.append(ReplicaProcess(f"bench-{mode.replace(' ', '-')}", bootstrap=boot, path=path, sync_interval=args.sync_interval))
                while any(r.call("state")["replicas"] < 4 for r in replicas):
                    time.sleep(0.1)
                for name, writers in (("one replica writes", [0]), ("all 5 write", list(range(5)))):
                    seconds = burst(replicas, writers, args.writes, name[:3])
                    print(f"{f'5 replicas, {mode}, {name}':44s} {seconds:8.3f} {seconds / base:14.2f}")
            finally:
                for r in replicas:
                    r.cleanup()


if __name__ == "__main__":
    main()
