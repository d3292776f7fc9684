"""NAT traversal costs, in network namespaces (root only; see tests/nat.py):

  1. time to admit a peer whose links to the ring are direct / punched / relayed: the
     members' update_topology() that admits it, which opens the links (after the joiner
     connected; its NAT observation is not counted), median of --rounds;
  2. a relayed all-reduce against a direct one when every host's link is capped with tbf
     (--rate, default 200mbit): two public peers (direct) vs two peers behind
     port-randomising NATs (relayed through `pcomm relay`), same sizes, same run.

    sudo python bench/nat.py [--rate 200mbit] [--mib 16] [--rounds 5]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import pcomm  # noqa: E402
from harness import PeerProcess, RelayProcess, connect_all  # noqa: E402
from nat import PUBLIC_GATEWAY, Internet, available  # noqa: E402


def admit_seconds(net, coord, member_host: int, joiner_host: int) -> tuple[float, str]:
    member = PeerProcess(coord.address, prefix=net.prefix(member_host), timeout=30)
    joiner = PeerProcess(coord.address, prefix=net.prefix(joiner_host), timeout=30)
    try:
        member.ok("connect")
        joiner.send("connect")
        while member.ok("info")["pending_peers"] < 1:
            time.sleep(0.005)
        start = time.perf_counter()
        member.ok("update_topology")
        seconds = time.perf_counter() - start
        assert joiner.reply(30)["ok"]
        kind = member.ok("links")[0]["kind"]
        return seconds, kind
    finally:
        member.cleanup()
        joiner.cleanup()


def all_reduce_seconds(net, coord, hosts: list[int], mib: int, rounds: int) -> tuple[float, str]:
    peers = [PeerProcess(coord.address, prefix=net.prefix(h), timeout=120) for h in hosts]
    try:
        connect_all(peers)
        count = mib * 2**20 // 4
        times = []
        for _ in range(rounds):
            for i, p in enumerate(peers):
                p.send("all_reduce", dtype="float32", count=count, index=i, timeout=120)
            replies = [p.reply(180) for p in peers]
            assert all(r["ok"] for r in replies), replies
            times.append(max(r["result"]["seconds"] for r in replies))
        return statistics.median(times), peers[0].ok("links")[0]["kind"]
    finally:
        for p in peers:
            p.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="200mbit", help="tbf cap of every host link (default 200mbit)")
    parser.add_argument("--mib", type=int, default=16, help="MiB of float32 per all-reduce (default 16)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if available() is not None:
        raise SystemExit(f"bench/nat.py: {available()}")

    kinds = ["a", "a", "b", "b", "c", "c"]
    print("time to admit a peer (its links opened), median of", args.rounds)
    with Internet(kinds) as net:
        relay = RelayProcess(listen=f"{PUBLIC_GATEWAY}:0")
        try:
            with pcomm.Coordinator(listen=f"{PUBLIC_GATEWAY}:0", relays=[relay.address]) as coord:
                for label, (m, j) in (("direct (a-a)", (0, 1)), ("punched (b-b)", (2, 3)), ("relayed (c-c)", (4, 5))):
                    runs = [admit_seconds(net, coord, m, j) for _ in range(args.rounds)]
                    kinds_seen = {k for _, k in runs}
                    print(f"  {label:15} {statistics.median(s for s, _ in runs) * 1000:7.1f} ms   links: {kinds_seen}")
        finally:
            relay.cleanup()

    print(f"all-reduce of {args.mib} MiB float32, 2 peers, host links capped at {args.rate}")
    with Internet(kinds, rate=args.rate) as net:
        relay = RelayProcess(listen=f"{PUBLIC_GATEWAY}:0")
        try:
            with pcomm.Coordinator(listen=f"{PUBLIC_GATEWAY}:0", relays=[relay.address]) as coord:
                direct, k1 = all_reduce_seconds(net, coord, [0, 1], args.mib, args.rounds)
                relayed, k2 = all_reduce_seconds(net, coord, [4, 5], args.mib, args.rounds)
        finally:
            relay.cleanup()
    print(f"  {k1:8} {direct:7.3f} s")
    print(f"  {k2:8} {relayed:7.3f} s")
    print(f"  relayed/direct throughput: {direct / relayed:.2f}")


if __name__ == "__main__":
    main()
