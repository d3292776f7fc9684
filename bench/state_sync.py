"""Shared-state sync throughput and hashing speed.

Prints (1) pcomm's content hash in GB/s on one core, and (2) a late joiner's sync of
256 MiB of state from 3 peers, as a fraction of a plain 256 MiB all-reduce's algbw among
the same 4 peer processes, in the same run.

Run: python bench/state_sync.py [--mib 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import numpy as np  # noqa: E402
import pcomm  # noqa: E402
import pcomm._pcomm as core  # noqa: E402
from harness import PeerProcess, admit, connect_all  # noqa: E402


def hash_speed(mib: int, repeats: int) -> float:
    data = np.random.default_rng(0).integers(0, 255, mib * 2**20, dtype=np.uint8)
    core.hash_bytes(data)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        core.hash_bytes(data)
        times.append(time.perf_counter() - start)
    return data.nbytes / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"hash: {hash_speed(args.mib, args.repeats):.2f} GB/s on one core ({args.mib} MiB)")
    count = args.mib * 2**20 // 4
    tensors = {"state": count}
    sync_times, reduce_times = [], []
    for _ in range(args.repeats):
        with pcomm.Coordinator(heartbeat_timeout=30) as coord:
            holders = [PeerProcess(coord.address, timeout=300) for _ in range(3)]
            joiner = PeerProcess(coord.address, timeout=300)
            try:
                connect_all(holders)
                for p in holders:
                    p.ok("state_make", tensors=tensors, seed=1, revision=1)
                admit(holders, joiner)
                joiner.ok("state_make", tensors=tensors, zero=True)
                everyone = holders + [joiner]
                for p in everyone:
                    p.send("state_sync", timeout=300)
                replies = [p.reply(600) for p in everyone]
                assert all(r["ok"] for r in replies), replies
                sync_times.append(replies[3]["result"]["seconds"])
                for i, p in enumerate(everyone):
                    p.send("all_reduce", dtype="float32", count=count, index=i, timeout=300)
                replies = [p.reply(600) for p in everyone]
                assert all(r["ok"] for r in replies), replies
                reduce_times.append(max(r["result"]["seconds"] for r in replies))
            finally:
                for p in everyone:
                    p.cleanup()
    nbytes = args.mib * 2**20
    sync_bw = nbytes / statistics.median(sync_times) / 1e9
    reduce_algbw = nbytes / statistics.median(reduce_times) / 1e9
    print(f"late joiner sync of {args.mib} MiB from 3 peers: {statistics.median(sync_times):.3f} s = {sync_bw:.2f} GB/s")
    print(f"all-reduce of {args.mib} MiB over 4 peers:      {statistics.median(reduce_times):.3f} s, "
          f"algbw {reduce_algbw:.2f} GB/s")
    print(f"sync throughput / all-reduce algbw: {sync_bw / reduce_algbw:.2f}")


if __name__ == "__main__":
    main()
