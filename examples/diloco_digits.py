"""DiLoCo on scikit-learn's digits (bundled, no download): 4 peers on loopback train one
MLP, each on its own shard of the training set, with AdamW inside and an outer Nesterov
step every H = 50 inner steps. Prints the test accuracy next to a single-process AdamW
baseline trained for the same number of inner steps, and the bytes DiLoCo moved next to
what an all-reduce of the gradients at every step would have moved.

Run:  python examples/diloco_digits.py [--steps 1000] [--peers 4] [--sync-every 50] [--quantization minmax_u8]
                                       [--checkpoint DIR]

With --checkpoint, peer 0 saves the DiLoCo state at the end (DIR/diloco.pt) and, when the
file exists at the start, resumes from it: the other peers start fresh and take its state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

import pcomm

BATCH = 32
SEED = 0


def data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    return (torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut])), (torch.from_numpy(x[cut:]), torch.from_numpy(y[cut:]))


def make_model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model, opt, x, y, steps, rng, report=False) -> None:
    """steps inner steps; with report (one DiLoCo peer), a line per outer step on stderr."""
    losses, outer = [], getattr(opt, "outer_step", 0)
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), BATCH))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if report and opt.outer_step != outer:
            outer = opt.outer_step
            print(f"outer step {outer:>3}: train loss {np.mean(losses[-opt.sync_every:]):.3f}, world "
                  f"{opt.last_world_size}, {opt.bytes_sent / 2**10:.0f} KiB sent by peer 0", file=sys.stderr, flush=True)


def peer(args) -> None:
    torch.set_num_threads(1)
    (x, y), (tx, ty) = data()
    shard = slice(args.index, None, args.peers)  # every peer trains on its own quarter
    with pcomm.Communicator(args.coordinator, timeout=60) as comm:
        comm.connect()
        comm.wait_for_peers(args.peers)  # start together
        model = make_model()
        inner = torch.optim.AdamW(model.parameters(), lr=2e-3)
        quantization = None if args.quantization == "none" else args.quantization
        path = os.path.join(args.checkpoint, "diloco.pt") if args.checkpoint else None
        resume = None
        if path and args.index == 0 and os.path.exists(path):
            resume = torch.load(path, weights_only=False)  # before the optimizer: its first use is soon
        opt = pcomm.optim.DiLoCo(model, inner, comm, sync_every=args.sync_every, quantization=quantization)
        if resume is not None:
            opt.load_state_dict(resume)  # offered to the others at the first boundary: the newest wins
            print(f"peer 0 resumes from {path} at outer step {resume['revision']}", file=sys.stderr, flush=True)
        train(model, opt, x[shard], y[shard], args.steps, np.random.default_rng(100 + args.index),
              report=args.index == 0)
        if path and args.index == 0:
            os.makedirs(args.checkpoint, exist_ok=True)
            torch.save(opt.state_dict(), path)
        n_params = sum(p.numel() for p in model.parameters())
        print(json.dumps({"accuracy": accuracy(model, tx, ty), "bytes_sent": opt.bytes_sent, "params": n_params,
                          "outer_steps": opt.outer_step}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="inner steps per peer")
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--quantization", choices=["none", "minmax_u8"], default="none",
                        help="wire quantization of the outer all-reduce")
    parser.add_argument("--checkpoint", metavar="DIR", help="save (peer 0) and resume the DiLoCo state here")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        peer(args)
        return 0

    start = time.monotonic()
    with pcomm.Coordinator(heartbeat_timeout=10) as coord:
        procs = [
            subprocess.Popen([sys.executable, __file__, "--peer", "--index", str(i), "--coordinator", coord.address,
                              "--peers", str(args.peers), "--steps", str(args.steps),
                              "--sync-every", str(args.sync_every), "--quantization", args.quantization]
                             + (["--checkpoint", args.checkpoint] if args.checkpoint else []),
                             stdout=subprocess.PIPE, text=True)
            for i in range(args.peers)
        ]
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                print(f"a peer failed with exit code {p.returncode}", file=sys.stderr)
                return 1
            results.append(json.loads(out.strip().splitlines()[-1]))
    diloco_seconds = time.monotonic() - start

    # Baseline: one process, AdamW on the whole training set, same number of inner steps.
    torch.set_num_threads(1)
    (x, y), (tx, ty) = data()
    model = make_model()
    train(model, torch.optim.AdamW(model.parameters(), lr=2e-3), x, y, args.steps, np.random.default_rng(100))
    baseline = accuracy(model, tx, ty)

    acc = [r["accuracy"] for r in results]
    n_params = results[0]["params"]
    world = args.peers
    sent = sum(r["bytes_sent"] for r in results)
    # An all-reduce of the float32 gradients at every inner step: a ring moves 2(N-1)/N of
    # the tensor per peer, so 2(N-1) * 4 bytes per parameter in all, each step.
    ddp = args.steps * 2 * (world - 1) * 4 * n_params
    print(f"DiLoCo, {world} peers, H={args.sync_every}, {args.quantization}, {args.steps} inner steps each: "
          f"test accuracy {acc[0]:.4f} (all peers equal: {len(set(acc)) == 1}), {diloco_seconds:.1f} s")
    print(f"single-process AdamW, {args.steps} steps:                  test accuracy {baseline:.4f}")
    print(f"bytes sent by all peers: DiLoCo {sent / 2**20:.1f} MiB; an all-reduce of the gradients at every "
          f"step would send {ddp / 2**20:.1f} MiB ({ddp / max(sent, 1):.0f}x more) for {n_params} parameters")
    return 0 if acc[0] >= 0.95 else 1


if __name__ == "__main__":
    raise SystemExit(main())
