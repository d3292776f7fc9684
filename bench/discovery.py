"""Discovery lookup latency and CPU on a local overlay.

Starts 20 DHT server nodes in 4 processes on loopback (5 per process), publishes one
coordinator record, and times warm lookups of it (connections already open) from (a) a
client-only process and (b) a server node inside one of the overlay processes. The
baseline, measured in the same run from the same process, is one warm request/response
to a single node: a lookup cannot be cheaper than that.

Run: python bench/discovery.py [--lookups 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import DhtProcess  # noqa: E402


def summary(name: str, reply: dict, baseline_p50: float | None) -> float:
    s = sorted(reply["seconds"])
    p50, p99 = s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.99))]
    cpu = reply["cpu_seconds"] / len(s)
    ratio = f"{p50 / baseline_p50:10.2f}" if baseline_p50 else f"{'1.00':>10}"
    print(f"{name:34s} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {statistics.mean(s) * 1e3:8.2f} {cpu * 1e3:10.2f} {ratio}")
    return p50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    t = time.monotonic()
    procs = [DhtProcess(5)]
    boot = procs[0].addrs[0][0]
    procs += [DhtProcess(5, bootstrap=[boot]) for _ in range(3)]
    client = DhtProcess(1, bootstrap=[boot], client=True)
    print(f"20 nodes in 4 processes up in {time.monotonic() - t:.1f} s")
    try:
        procs[1].call("publish", node=2, kind="coordinator", run="bench", addrs=["127.0.0.1:29500"], ttl=600)
        for p in (client, procs[3]):
            p.call("lookup_many", kind="coordinator", run="bench", count=20, wait=120)  # warm up
        print(f"{'':34s} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'CPU ms/op':>10} {'p50/base':>10}")
        base = summary("baseline: one request/response", client.call("rpc_many", count=args.lookups, wait=300), None)
        summary("lookup from a client process", client.call("lookup_many", kind="coordinator", run="bench", count=args.lookups, wait=300), base)
        summary("lookup from a server node", procs[3].call("lookup_many", node=4, kind="coordinator", run="bench", count=args.lookups, wait=300), base)
        tables = [n for p in procs for n in p.call("stats")["tables"]]
        print(f"routing tables: min {min(tables)}, median {statistics.median(tables)}, max {max(tables)} contacts")
    finally:
        for p in procs + [client]:
            p.cleanup()


if __name__ == "__main__":
    main()
