"""All-reduce throughput: pcomm against torch.distributed's Gloo backend, same machine,
same run. For N peers (separate processes) and each size of float32 data it prints the
median time, algbw = S/t, busbw = algbw * 2(N-1)/N, the busbw ratio against Gloo (or,
with --quantization, against pcomm's float32 wire), and the peak memory each process
used beyond its imports and its tensor ("extra MiB").

    python bench/allreduce.py                        # loopback, N = 2, 3, 4
    python bench/allreduce.py --capped 200mbit       # peers in network namespaces behind
                                                     # tbf-capped links (root only); prints
                                                     # the fraction of the ring bound
    python bench/allreduce.py --quantization minmax_u8   # pcomm only: wire bytes and the
                                                         # speed-up over float32
    python bench/allreduce.py --secret               # also pcomm with a run secret (TLS on
                                                     # every link): busbw against plain pcomm,
                                                     # and rank 0's connect() time for both

Not part of the test suite. Numbers depend on the machine: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 2**20
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


# ----------------------------------------------------------------------------- workers


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pcomm_worker(args) -> None:
    import numpy as np
    import pcomm

    baseline = rss_mib()
    comm = pcomm.Communicator(args.address, timeout=300, connections_per_peer=args.connections)
    start = time.perf_counter()
    comm.connect()
    connect_s = time.perf_counter() - start
    comm.wait_for_peers(args.world)
    for size in args.sizes:
        x = np.ones(size * MiB // 4, np.float32)
        comm.all_reduce(x, quantization=args.quantization)  # warm-up (also pages in scratch)
        times, wire = [], 0
        for _ in range(reps_for(size)):
            x.fill(1.0)
            start = time.perf_counter()
            info = comm.all_reduce(x, quantization=args.quantization)
            times.append(time.perf_counter() - start)
            wire = info.bytes_sent
        expect = float(args.world)
        assert x[0] == expect and x[-1] == expect, f"wrong result {x[0]} != {expect}"
        print(json.dumps({"size": size, "times": times, "rss_extra": rss_mib() - baseline - size, "wire": wire,
                          "connect": connect_s}), flush=True)
    comm.close()


def gloo_worker(args) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    baseline = rss_mib()
    dist.init_process_group("gloo", init_method=f"tcp://{args.address}", rank=args.rank, world_size=args.world)
    for size in args.sizes:
        x = torch.ones(size * MiB // 4)
        dist.all_reduce(x)
        times = []
        for _ in range(reps_for(size)):
            x.fill_(1.0)
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        assert x[0].item() == float(args.world)
        print(json.dumps({"size": size, "times": times, "rss_extra": rss_mib() - baseline - size, "wire": 0}),
              flush=True)
    dist.destroy_process_group()


def reps_for(size_mib: int) -> int:
    return 20 if size_mib <= 1 else 10 if size_mib <= 16 else 5 if size_mib <= 64 else 3


# ----------------------------------------------------------------------------- driver


def run_peers(system: str, world: int, sizes, address: str, prefixes, extra) -> dict:
    procs = []
    for rank in range(world):
        cmd = prefixes[rank] + [
            sys.executable, os.path.abspath(__file__), "--worker", system, "--address", address,
            "--rank", str(rank), "--world", str(world), "--sizes", ",".join(map(str, sizes)),
        ] + extra
        # One BLAS/OpenMP thread per worker for both systems: idle pool threads spinning on
        # the bench machine's few cores would only add noise.
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        if prefixes[rank]:  # in a namespace: Gloo must use the peer's own interface
            env["GLOO_SOCKET_IFNAME"] = prefixes[rank][-1] + "p"  # netns.Namespaces names it so
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
    # If one worker fails the others would wait for it forever: end them all.
    deadline = time.monotonic() + 1800
    while any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            raise SystemExit(f"a {system} worker failed; see its error above")
        time.sleep(0.05)
    results = []
    for p in procs:
        out = p.stdout.read()
        results.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    by_size = {}
    for i, size in enumerate(sizes):
        # An op ends at the same moment for everybody; take the slowest peer's view.
        per_rep = zip(*(r[i]["times"] for r in results))
        by_size[size] = {
            "median": statistics.median(max(t) for t in per_rep),
            "rss_extra": max(r[i]["rss_extra"] for r in results),
            "wire": results[0][i]["wire"],
            "connect": results[0][i].get("connect", 0.0),  # rank 0: admitted at once, no waiting
        }
    return by_size


def parse_rate(rate: str) -> float:
    """'200mbit' -> bytes per second."""
    units = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * factor
    raise SystemExit(f"--capped: rate like 200mbit expected, got {rate}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["pcomm", "gloo"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="1,16,64,256", help="MiB of float32, comma separated")
    parser.add_argument("--peers", default="2,3,4", help="world sizes, comma separated")
    parser.add_argument("--connections", type=int, default=4, help="pcomm connections_per_peer")
    parser.add_argument("--quantization", default=None, choices=[None, "minmax_u8"])
    parser.add_argument("--capped", metavar="RATE", help="cap every peer link with tbf (e.g. 200mbit)")
    parser.add_argument("--no-gloo", action="store_true", help="skip the Gloo baseline")
    parser.add_argument("--secret", action="store_true", help="also run pcomm with a run secret (TLS)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        (pcomm_worker if args.worker == "pcomm" else gloo_worker)(args)
        return

    import pcomm

    extra = ["--connections", str(args.connections)]
    print(f"{'N':>2} {'MiB':>5} {'system':<18}{'median s':>10}{'algbw GB/s':>12}{'busbw GB/s':>12}"
          f"{'busbw/Gloo':>11}{'ring bound':>12}{'extra MiB':>10}{'wire MiB':>10}")
    for world in [int(n) for n in args.peers.split(",")]:
        from netns import Namespaces

        ns = Namespaces(world, args.capped) if args.capped else None
        if ns:
            ns.__enter__()
        try:
            host = "198.18.0.254" if ns else "127.0.0.1"
            prefixes = [ns.prefix(r) if ns else [] for r in range(world)]
            rows = {}
            systems = [(args.quantization, False)]
            if args.quantization:
                systems.insert(0, (None, False))
            if args.secret:
                systems.append((args.quantization, True))
            for quant, secure in systems:
                secret = secrets.token_hex(32) if secure else None
                with tempfile.NamedTemporaryFile("w", prefix="pcomm-bench-secret-") as f:
                    f.write(secret or "")
                    f.flush()
                    # Workers read the secret from the file; without one they must not
                    # inherit a secret from the environment either.
                    os.environ["PCOMM_SECRET_FILE"] = f.name if secure else ""
                    with pcomm.Coordinator(listen=f"{host}:0", heartbeat_timeout=30, secret=secret,
                                           insecure=not secure) as coord:
                        q = ["--quantization", quant] if quant else []
                        name = f"pcomm {quant or 'float32'}{' tls' if secure else ''}"
                        rows[name] = run_peers("pcomm", world, args.sizes, coord.address, prefixes, extra + q)
            if not args.no_gloo and not args.quantization:
                master = "198.18.0.1" if ns else "127.0.0.1"
                rows["gloo"] = run_peers("gloo", world, args.sizes, f"{master}:{free_port()}", prefixes, [])
            for size in args.sizes:
                nbytes = size * MiB
                base = rows.get("gloo", {}).get(size) or rows.get("pcomm float32", {}).get(size)
                for name, by_size in rows.items():
                    r = by_size[size]
                    algbw = nbytes / r["median"] / 1e9
                    busbw = algbw * 2 * (world - 1) / world
                    ratio = base["median"] / r["median"] if base else float("nan")
                    bound = ""
                    if args.capped:
                        bound_s = 2 * (world - 1) / world * nbytes / parse_rate(args.capped)
                        bound = f"{bound_s / r['median']:.2f}"
                    wire = f"{r['wire'] / MiB:.1f}" if r["wire"] else "-"
                    print(f"{world:>2} {size:>5} {name:<18}{r['median']:>10.4f}{algbw:>12.3f}{busbw:>12.3f}"
                          f"{ratio:>11.2f}{bound:>12}{r['rss_extra']:>10.0f}{wire:>10}", flush=True)
                plain, tls = rows.get(f"pcomm {args.quantization or 'float32'}"), rows.get(
                    f"pcomm {args.quantization or 'float32'} tls")
                if plain and tls:
                    print(f"{world:>2} {size:>5} tls/plain busbw {plain[size]['median'] / tls[size]['median']:.2f}; "
                          f"rank 0 connect() {plain[size]['connect'] * 1e3:.1f} ms plain, "
                          f"{tls[size]['connect'] * 1e3:.1f} ms tls", flush=True)
        finally:
            if ns:
                ns.__exit__(None, None, None)


if __name__ == "__main__":
    main()
