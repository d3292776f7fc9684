"""A local pcomm swarm: one coordinator and 4 peer processes on loopback.

The peers join and run a training-like loop: update_topology, then an all-reduce of
known data (every peer contributes ones, so each element of the sum must equal the
number of peers that took part). One peer is killed with SIGKILL; an all-reduce it was
part of fails on the survivors with the input intact, they retry with the smaller world
and carry on; a replacement joins late. Everything that happens is printed.

Run:  python examples/local_swarm.py
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pcomm

STEP_SECONDS = 0.1
ELEMENTS = 4 << 20  # 16 MiB of float32 per all-reduce


def say(line: str) -> None:
    """One write per line, so lines of different processes never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_peer(coordinator: str, seconds: float, wait_go: bool) -> None:
    """One peer: join, then step until time is up, printing every membership change."""
    if wait_go:
        sys.stdin.readline()  # started early (imports done); join when told
    with pcomm.Communicator(coordinator, timeout=10) as comm:
        comm.connect()
        tag = f"[peer {comm.peer_id}]"
        say(f"{tag} joined: rank {comm.rank} of {comm.world_size}, epoch {comm.epoch}")
        seen = (comm.epoch, comm.world_size)
        step = 0
        moved = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                # connect() and update_topology() return at the same point of a step, so a
                # peer admitted by this barrier starts right here with the others.
                grads = np.ones(ELEMENTS, np.float32)
                while True:
                    try:
                        info = comm.all_reduce(grads)
                        break
                    except (pcomm.errors.PeerLostError, pcomm.errors.AbortedError) as e:
                        assert (grads == 1).all(), "a failed all-reduce must leave the input intact"
                        say(f"{tag} step {step}: all-reduce failed ({type(e).__name__}: {e}); input intact, retrying")
                if not (grads == info.world_size).all():
                    raise SystemExit(f"{tag} wrong all-reduce result at step {step}")
                moved += info.bytes_sent
                time.sleep(STEP_SECONDS)  # stands in for the rest of a training step
                comm.update_topology()
                if (comm.epoch, comm.world_size) != seen:
                    seen = (comm.epoch, comm.world_size)
                    say(f"{tag} step {step}: epoch {comm.epoch}, now rank {comm.rank} of {comm.world_size}")
            except pcomm.errors.PcommError as e:
                say(f"{tag} step {step}: {type(e).__name__}: {e}")
                return
            step += 1
        say(f"{tag} done after {step} steps, every all-reduce exact; sent {moved / 2**20:.0f} MiB "
            f"(epoch {comm.epoch}, world size {comm.world_size})")


def spawn_peer(coordinator: str, seconds: float, wait_go: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--peer", coordinator, "--seconds", str(seconds)]
    if wait_go:
        return subprocess.Popen(cmd + ["--wait-go"], stdin=subprocess.PIPE, text=True)
    return subprocess.Popen(cmd)


def wait_for_peers(coord: pcomm.Coordinator, count: int, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while len(coord.peers) != count:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"swarm: expected {count} peers, coordinator has {len(coord.peers)}")
        time.sleep(0.002)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", metavar="COORDINATOR", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each peer trains")
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--wait-go", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        run_peer(args.peer, args.seconds, args.wait_go)
        return 0

    with pcomm.Coordinator(listen="127.0.0.1:0", heartbeat_timeout=2.0) as coord:
        say(f"swarm: coordinator on {coord.address}")
        procs = [spawn_peer(coord.address, args.seconds) for _ in range(args.peers)]
        replacement = spawn_peer(coord.address, args.seconds / 2, wait_go=True)
        took = wait_for_peers(coord, args.peers)
        say(f"swarm: {args.peers} peers in the ring after {took:.2f} s (epoch {coord.epoch})")
        time.sleep(0.5)

        victim = procs[1]
        while coord.collectives_running == 0:  # kill it in the middle of an all-reduce
            time.sleep(0.0005)
        before = set(coord.peers)
        say(f"swarm: SIGKILL a peer (process {victim.pid}) during an all-reduce")
        os.kill(victim.pid, signal.SIGKILL)
        took = wait_for_peers(coord, args.peers - 1)
        gone = ", ".join(sorted(before - set(coord.peers)))
        say(f"swarm: coordinator dropped peer {gone} after {took * 1000:.1f} ms (epoch {coord.epoch})")
        time.sleep(0.5)

        say("swarm: a replacement peer joins late")
        replacement.stdin.write("go\n")
        replacement.stdin.flush()
        procs.append(replacement)
        before = set(coord.peers)
        took = wait_for_peers(coord, args.peers)
        joined = ", ".join(sorted(set(coord.peers) - before))
        say(f"swarm: replacement admitted as peer {joined} after {took:.2f} s (epoch {coord.epoch})")

        failed = 0
        for p in procs:
            code = p.wait(timeout=args.seconds + 30)
            if p is not victim and code != 0:
                failed += 1
        say(f"swarm: finished; {failed} peer(s) failed; final epoch {coord.epoch}")
        return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
