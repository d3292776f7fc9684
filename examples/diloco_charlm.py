"""DiLoCo on a language model: a small decoder-only transformer learns to predict the next
byte of Python's own standard library (the .py sources that ship with Python: no
download). N peers on loopback each train on their own shard of the text with AdamW and
meet every H inner steps for an outer step; a single-process AdamW baseline trains in
the same run. Prints a line per outer step while it runs, then the held-out loss (and
bits per character) of both, and the bytes DiLoCo moved next to what an all-reduce of
the gradients at every step would have moved.

    python examples/diloco_charlm.py                       # 4 peers, H=100, minmax_u8
    python examples/diloco_charlm.py --sync-every 50 --quantization none
    python examples/diloco_charlm.py --variant streaming --churn --plot loss.png

--churn SIGKILLs one peer mid-run and starts a replacement: the run finishes and the
replacement ends bit-identical to the others. Deterministic given --seed.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time

import numpy as np
import torch

import pcomm

CONTEXT = 64       # characters a prediction sees
BATCH = 32         # windows per inner step
EVAL_WINDOWS = 512  # held-out windows of the final loss (fixed positions)
HELD_OUT_EVERY = 20  # every 20th file (sorted by path) is held out


# ----------------------------------------------------------------------------- data


def corpus(max_mb: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) byte streams: the standard library's .py files in path order,
    every HELD_OUT_EVERY-th file held out, the training text capped at max_mb MiB."""
    root = sysconfig.get_paths()["stdlib"]
    paths = sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if "site-packages" not in p and "dist-packages" not in p)
    train, held, size = [], [], 0
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            text = f.read() + b"\n"
        if i % HELD_OUT_EVERY == 0:
            held.append(text)
        elif size < max_mb * 2**20:
            train.append(text)
            size += len(text)
    cut = int(max_mb * 2**20)
    return (np.frombuffer(b"".join(train)[:cut], dtype=np.uint8),
            np.frombuffer(b"".join(held)[: max(cut // 10, 2**20)], dtype=np.uint8))


def unigram_entropy(stream: np.ndarray) -> float:
    """Entropy of the byte distribution, in nats: what a model that ignores context gets."""
    p = np.bincount(stream, minlength=256) / len(stream)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def windows(stream: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(CONTEXT + 1)[None, :]
    chunk = torch.from_numpy(stream[idx].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def batch(stream: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return windows(stream, rng.integers(0, len(stream) - CONTEXT - 1, BATCH))


# ----------------------------------------------------------------------------- model


class CharTransformer(torch.nn.Module):
    """Bytes in, next-byte logits out: embeddings, pre-norm causal self-attention blocks."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(256, width)
        self.position = torch.nn.Parameter(torch.zeros(CONTEXT, width))
        block = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, 256)
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(CONTEXT), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position[: x.shape[1]]
        h = self.blocks(h, mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True)
        return self.head(self.norm(h))


def make_model(args) -> torch.nn.Module:
    torch.manual_seed(args.seed)  # every peer starts from the same weights
    return CharTransformer(args.width, args.layers, args.heads)


def loss_of(model, x, y) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))


def held_out_loss(model, held: np.ndarray, n_windows: int, seed: int) -> float:
    starts = np.random.default_rng(seed + 7).integers(0, len(held) - CONTEXT - 1, n_windows)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n_windows, 128):
            x, y = windows(held, starts[i:i + 128])
            total += float(loss_of(model, x, y)) * len(x)
    return total / n_windows


# ----------------------------------------------------------------------------- a peer


def peer(args) -> None:
    torch.set_num_threads(1)
    train, held = corpus(args.corpus_mb)
    shard = np.array_split(train, args.peers)[args.index]  # a replacement takes its predecessor's shard
    variants = {"sync": pcomm.optim.DiLoCo, "async": pcomm.optim.AsyncDiLoCo,
                "streaming": pcomm.optim.StreamingDiLoCo}
    quantization = None if args.quantization == "none" else args.quantization
    with pcomm.Communicator(args.coordinator, timeout=120) as comm:
        comm.connect()
        if not args.replacement:
            comm.wait_for_peers(args.peers)  # start together
        model = make_model(args)
        inner = torch.optim.AdamW(model.parameters(), lr=args.lr)
        opt = variants[args.variant](model, inner, comm, sync_every=args.sync_every, quantization=quantization)
        target = args.steps // args.sync_every  # the stopping rule: every peer ends at this outer step
        rng = np.random.default_rng(args.seed * 1000 + 100 + args.index + (500 if args.replacement else 0))
        losses, last = [], opt.outer_step
        while opt.outer_step < target:
            x, y = batch(shard, rng)
            opt.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if opt.outer_step != last:
                last = opt.outer_step
                row = {"outer": last, "loss": float(np.mean(losses[-args.sync_every:])), "world": comm.world_size,
                       "bytes": opt.bytes_sent}
                if args.index == 0 and not args.replacement:
                    row["held"] = held_out_loss(model, held, 64, args.seed)
                print(json.dumps(row), flush=True)
        digest = hashlib.sha256()
        for name in sorted(opt.shared_state.tensors):
            digest.update(np.ascontiguousarray(opt.shared_state.tensors[name]).tobytes())
        print(json.dumps({"final": True, "held": held_out_loss(model, held, EVAL_WINDOWS, args.seed),
                          "digest": digest.hexdigest(), "bytes": opt.bytes_sent, "outer_steps": opt.outer_step,
                          "params": sum(p.numel() for p in model.parameters())}), flush=True)


# ----------------------------------------------------------------------------- the run


def baseline(args, checkpoints: list[int], train: np.ndarray, held: np.ndarray) -> tuple[dict, list]:
    """Single-process AdamW on the whole training stream, run once to the last checkpoint:
    the held-out loss at each checkpoint (steps), and with --plot the curve (tokens seen,
    held-out loss) every sync_every steps."""
    torch.set_num_threads(1)
    model = make_model(args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed * 1000 + 100)
    losses, curve = {}, []
    for step in range(1, max(checkpoints) + 1):
        x, y = batch(train, rng)
        opt.zero_grad()
        loss_of(model, x, y).backward()
        opt.step()
        if step in checkpoints:
            losses[step] = held_out_loss(model, held, EVAL_WINDOWS, args.seed)
        if args.plot and step % args.sync_every == 0:
            curve.append((step * BATCH * CONTEXT, held_out_loss(model, held, 64, args.seed)))
    return losses, curve


def spawn(args, coordinator: str, index: int, replacement: bool = False) -> subprocess.Popen:
    argv = [sys.executable, __file__, "--peer", "--index", str(index), "--coordinator", coordinator]
    for name in ("peers", "steps", "sync_every", "variant", "quantization", "corpus_mb", "width", "layers", "heads",
                 "lr", "seed"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if replacement:
        argv.append("--replacement")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def run_peers(args) -> tuple[list[dict], list[dict], float]:
    """Starts the peers (and, with --churn, kills one and starts its replacement); returns
    the final reports, peer 0's per-outer-step rows, and the wall time."""
    start = time.monotonic()
    target = args.steps // args.sync_every
    rows, finals, lock = [], [], threading.Lock()
    with pcomm.Coordinator(heartbeat_timeout=10) as coord:
        procs = [spawn(args, coord.address, i) for i in range(args.peers)]

        def read(proc, show: bool) -> None:
            for line in proc.stdout:
                msg = json.loads(line)
                with lock:
                    if msg.get("final"):
                        finals.append(msg)
                    elif show:
                        rows.append(msg)
                        held = f", held-out {msg['held']:.3f}" if "held" in msg else ""
                        print(f"outer step {msg['outer']:>3}/{target}: train loss {msg['loss']:.3f}{held}, "
                              f"world {msg['world']}, {msg['bytes'] / 2**20:.2f} MiB sent by peer 0", flush=True)

        readers = [threading.Thread(target=read, args=(p, i == 0)) for i, p in enumerate(procs)]
        for r in readers:
            r.start()
        killed = None
        if args.churn:
            while not rows or rows[-1]["outer"] < max(1, int(0.4 * target)):
                if procs[0].poll() is not None:
                    break
                time.sleep(0.05)
            killed = procs[1]
            killed.send_signal(signal.SIGKILL)
            print(f"--churn: SIGKILLed peer 1 (pid {killed.pid}); starting a replacement on its shard", flush=True)
            procs.append(spawn(args, coord.address, 1, replacement=True))
            readers.append(threading.Thread(target=read, args=(procs[-1], False)))
            readers[-1].start()
        for p in procs:
            p.wait(timeout=3600)
            if p is not killed and p.returncode != 0:
                raise SystemExit(f"a peer failed with exit code {p.returncode}")
        for r in readers:
            r.join()
    return finals, rows, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1000, help="inner steps per peer (a multiple of --sync-every)")
    parser.add_argument("--sync-every", type=int, default=100, help="H: inner steps between outer steps")
    parser.add_argument("--variant", choices=["sync", "async", "streaming"], default="sync")
    parser.add_argument("--quantization", choices=["none", "minmax_u8"], default="minmax_u8")
    parser.add_argument("--corpus-mb", type=float, default=8.0, help="MiB of training text")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--churn", action="store_true", help="SIGKILL one peer mid-run and start a replacement")
    parser.add_argument("--no-token-baseline", action="store_true",
                        help="skip the baseline with as many tokens as all peers together (peers x steps)")
    parser.add_argument("--plot", metavar="PNG", help="draw both held-out loss curves against tokens seen")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replacement", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps % args.sync_every:
        parser.error("--steps must be a multiple of --sync-every")
    if args.churn and args.peers < 2:
        parser.error("--churn needs at least 2 peers")
    if args.peer:
        peer(args)
        return 0

    train, held = corpus(args.corpus_mb)
    entropy = unigram_entropy(train)
    print(f"corpus: {len(train) / 2**20:.1f} MiB of training text, {len(held) / 2**20:.1f} MiB held out "
          f"(unigram entropy {entropy:.3f} nats = {entropy / math.log(2):.2f} bits/char)", flush=True)
    finals, rows, seconds = run_peers(args)
    # The same-tokens baseline continues the same-steps one (same seed, same batches).
    start = time.monotonic()
    checkpoints = [args.steps] + ([] if args.no_token_baseline else [args.steps * args.peers])
    base, base_curve = baseline(args, checkpoints, train, held)
    base_seconds = time.monotonic() - start
    base_loss, tokens_loss = base[args.steps], base.get(args.steps * args.peers)

    loss = finals[0]["held"]
    same = len({f["digest"] for f in finals}) == 1
    params = finals[0]["params"]
    sent = sum(f["bytes"] for f in finals)
    # An all-reduce of float32 gradients at every inner step: a ring moves 2(N-1)/N of the
    # tensor per peer, so 2(N-1) * 4 bytes per parameter in all, each step.
    grad_bytes = args.steps * 2 * (args.peers - 1) * 4 * params
    bpc = 1 / math.log(2)
    name = f"DiLoCo {args.variant}, {args.peers} peers, H={args.sync_every}, {args.quantization}"
    print(f"{name}: held-out loss {loss:.4f} ({loss * bpc:.3f} bits/char) after {args.steps} inner steps each; "
          f"all peers bit-identical: {same} ({len(finals)} peers); {seconds:.1f} s")
    print(f"AdamW, 1 process, {args.steps} steps (same steps): held-out loss {base_loss:.4f} "
          f"({base_loss * bpc:.3f} bits/char); DiLoCo/baseline {loss / base_loss:.4f}; {base_seconds:.1f} s in all")
    if tokens_loss is not None:
        print(f"AdamW, 1 process, {args.steps * args.peers} steps (same tokens): held-out loss {tokens_loss:.4f} "
              f"({tokens_loss * bpc:.3f} bits/char); DiLoCo/baseline {loss / tokens_loss:.4f}")
    print(f"bytes sent by all peers: DiLoCo {sent / 2**20:.2f} MiB; a float32 gradient all-reduce at every step "
          f"would send {grad_bytes / 2**20:.1f} MiB ({grad_bytes / max(sent, 1):.1f}x more), {params} parameters"
          + (" (the killed peer's bytes are not counted)" if args.churn else ""))
    if args.plot:
        plot(args, rows, base_curve)
    return 0 if same and loss < entropy else 1


def plot(args, rows: list[dict], base_curve: list[tuple[int, float]]) -> None:
    try:
        import matplotlib
    except ImportError:
        print("--plot needs matplotlib: pip install matplotlib", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = BATCH * CONTEXT * args.sync_every
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["outer"] * tokens * r["world"] for r in rows if "held" in r], [r["held"] for r in rows if "held" in r],
            label=f"DiLoCo ({args.peers} peers, H={args.sync_every}, {args.quantization})")
    ax.plot([t for t, _ in base_curve], [v for _, v in base_curve], label="AdamW, 1 process")
    ax.axvline(args.steps * BATCH * CONTEXT, color="grey", linestyle=":", linewidth=1)  # same steps as each peer
    ax.set_xlabel("tokens seen (all peers)")
    ax.set_ylabel("held-out loss (nats/char)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot)
    print(f"plot written to {args.plot}")


if __name__ == "__main__":
    raise SystemExit(main())
