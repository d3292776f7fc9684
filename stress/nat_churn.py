"""All-reduce under churn across NATs (root only; see tests/nat.py): peers on public
hosts, behind port-preserving NATs and behind port-randomising NATs all-reduce known
data in a loop while peers are SIGKILLed mid-op, new ones join on random hosts, and
now and then a relay is SIGKILLed (and a new one added). Every round every survivor must
hold exactly the sum of the survivors' inputs, and every link the kind its hosts call for.
Not part of the timed test suite.

Run: sudo python stress/nat_churn.py [--rounds 30] [--peers 4] [--count 500000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pcomm  # noqa: E402
from harness import (PeerProcess, RelayProcess, admit, connect_all, finish_retry_round,  # noqa: E402
                     start_retry_round, wait_for)
from nat import PUBLIC_GATEWAY, Internet, available  # noqa: E402

KINDS = ["a", "a", "b", "b", "b", "b", "c", "c", "c"]


def expected_kind(x: str, y: str, same_host: bool) -> str:
    if "a" in (x, y) or same_host:  # behind one NAT: the local address is dialled
        return "direct"
    return "punched" if x == y == "b" else "relayed"


def main() -> int:
    parser = argparse.ArgumentParser(description="pcomm all-reduce under churn across NATs")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--count", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if available() is not None:
        raise SystemExit(f"stress/nat_churn.py: {available()}")
    rng = random.Random(args.seed)
    stats = {"kills": 0, "joins": 0, "relay_kills": 0, "failed_attempts": 0}
    with Internet(KINDS) as net:
        relays = [RelayProcess(listen=f"{PUBLIC_GATEWAY}:0") for _ in range(2)]
        dead = []
        peers: dict[int, PeerProcess] = {}
        try:
            with pcomm.Coordinator(listen=f"{PUBLIC_GATEWAY}:0", heartbeat_timeout=3.0,
                                   relays=[r.address for r in relays]) as coord:

                def start(index: int) -> PeerProcess:
                    host = rng.randrange(len(KINDS))
                    p = PeerProcess(coord.address, prefix=net.prefix(host), timeout=60)
                    p.host = host
                    return p

                for i in range(args.peers):
                    peers[i] = start(i)
                next_index = args.peers
                connect_all(list(peers.values()))
                begin = time.monotonic()
                for _ in range(args.rounds):
                    start_retry_round(peers, args.count)
                    killed = None
                    if len(peers) > 2 and rng.random() < 0.3:
                        assert wait_for(lambda: coord.collectives_running >= 1, 30, interval=0.0005)
                        victim = killed = rng.choice(sorted(peers))
                        peers[victim].kill()
                        dead.append(peers.pop(victim))
                        stats["kills"] += 1
                    elif rng.random() < 0.15:
                        victim = rng.choice(relays)
                        victim.kill()
                        relays.remove(victim)
                        dead.append(victim)
                        fresh = RelayProcess(listen=f"{PUBLIC_GATEWAY}:0")
                        relays.append(fresh)
                        coord.add_relay(fresh.address)
                        stats["relay_kills"] += 1
                    stats["failed_attempts"] += finish_retry_round(peers, args.count, wait=180, victim=killed)
                    host_of = {p.ok("info")["peer_id"]: p.host for p in peers.values()}
                    for p in peers.values():
                        for link in p.ok("links"):
                            other = host_of[link["peer_id"]]
                            want_kind = expected_kind(KINDS[p.host], KINDS[other], other == p.host)
                            assert link["kind"] == want_kind, (KINDS[p.host], link)
                    if len(peers) < args.peers + 2 and rng.random() < 0.4:
                        joiner = start(next_index)
                        admit(list(peers.values()), joiner, timeout=60)
                        peers[next_index] = joiner
                        next_index += 1
                        stats["joins"] += 1
                print(f"NAT churn ok: {args.rounds} rounds in {time.monotonic() - begin:.1f} s, {stats}, "
                      f"final world {len(peers)}, hosts {sorted(KINDS[p.host] for p in peers.values())}")
                return 0
        except BaseException:
            for i, p in peers.items():  # what the peers saw, for the report
                print(f"--- peer {i} on host {p.host} ({KINDS[p.host]}):\n{p.stderr()}", file=sys.stderr)
            raise
        finally:
            for p in list(peers.values()) + dead + relays:
                p.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
