"""Coordinator failover: time from the coordinator's SIGKILL to the next committed
all-reduce, for N peers all-reducing back to back (in this process, as threads; the
coordinators are processes). Two cases, each repeated:

  restart   the coordinator is restarted on the same address right after the kill
            (the time includes starting the new process: about a second of Python)
  standby   a `pcomm coordinator --standby --peer-of` takes over

It prints the median and the worst time next to the heartbeat timeout: the target with a
standby is at most the heartbeat timeout + 1 s.

    python bench/failover.py [--peers 4] [--heartbeat 2] [--repeat 3]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from harness import CoordinatorProcess, wait_for  # noqa: E402
from test_failover import Loop, free_address, join  # noqa: E402

import pcomm  # noqa: E402


def one(case: str, peers: int, heartbeat: float) -> float:
    primary, standby = free_address(), free_address()
    procs = [CoordinatorProcess(heartbeat, listen=primary)]
    addresses = [primary]
    if case == "standby":
        procs.append(CoordinatorProcess(heartbeat, listen=standby, args=["--standby", "--peer-of", primary]))
        addresses.append(standby)
    comms = [pcomm.Communicator(addresses, timeout=30) for _ in range(peers)]
    try:
        join(comms, peers)
        loop = Loop(comms)
        wait_for(lambda: loop.done() >= 50, 30)
        time.sleep(heartbeat / 2)  # a standby has seen the ring
        t0 = time.monotonic()
        procs[0].kill()
        at = loop.done()
        if case == "restart":
            procs.append(CoordinatorProcess(heartbeat, listen=primary))
        if not wait_for(lambda: loop.done() > at, 60, interval=0.002):
            raise RuntimeError(f"{case}: no all-reduce committed within 60 s of the kill")
        took = time.monotonic() - t0
        loop.finish(5)
        return took
    finally:
        for c in comms:
            c.close()
        for p in procs:
            p.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--heartbeat", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.peers} peers, heartbeat timeout {args.heartbeat} s")
    for case in ("restart", "standby"):
        times = [one(case, args.peers, args.heartbeat) for _ in range(args.repeat)]
        print(f"{case:8}  median {statistics.median(times):.2f} s  worst {max(times):.2f} s  "
              f"(worst / (heartbeat + 1 s) = {max(times) / (args.heartbeat + 1):.2f}; "
              f"runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)


if __name__ == "__main__":
    main()
