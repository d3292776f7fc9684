"""A DiLoCo peer for the tests: a small MLP on synthetic regression data (its own shard),
trained with a DiLoCo variant. Prints one JSON line per outer boundary with hashes of
θ_global, the outer momentum and the model, so tests can compare peers bit for bit, and
saves θ_global at the end (numpy .npz) for the reference check.

    python diloco_worker.py '{"coordinator": ..., "index": 0, "variant": "sync", ...}'
"""

import hashlib
import json
import sys
import time

import numpy as np
import torch

import pcomm


def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def shard(index, n=64):
    g = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(n, 8, generator=g)
    y = torch.sin(x[:, :4]) + 0.1 * torch.randn(n, 4, generator=g)
    return x, y


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    if cfg.get("wait_go"):
        sys.stdin.readline()  # the test says when to join (imports are done by then)
    comm = pcomm.Communicator(cfg["coordinator"], timeout=60)
    comm.connect()
    # Optionally wait for a full start (the admitted peers leave this loop together).
    while comm.world_size < cfg.get("min_world", 1):
        comm.update_topology()
    model = make_model(cfg.get("init_seed", 0))
    inner = torch.optim.SGD(model.parameters(), lr=cfg.get("inner_lr", 0.1))
    board = None
    if cfg.get("progress_bootstrap"):  # publish progress into the run's CRDT store
        from pcomm.crdt import ProgressBoard, Store
        from pcomm.discovery import Node

        node = Node(bootstrap=cfg["progress_bootstrap"], timeout=30).start()
        board = ProgressBoard(Store(cfg.get("run", "default"), node=node, sync_interval=0.2), samples_per_step=64, min_interval=0)
    kwargs = dict(sync_every=cfg["sync_every"], outer_lr=0.7, outer_momentum=0.9, nesterov=True,
                  quantization=cfg.get("quantization"), progress=board)
    variant = cfg.get("variant", "sync")
    if variant == "async":
        opt = pcomm.optim.AsyncDiLoCo(model, inner, comm, **kwargs)
    elif variant == "streaming":
        opt = pcomm.optim.StreamingDiLoCo(model, inner, comm, fragments=cfg.get("fragments", 2), **kwargs)
    else:
        opt = pcomm.optim.DiLoCo(model, inner, comm, **kwargs)
    x, y = shard(cfg["index"])
    last = opt.outer_step

    def report():
        print(json.dumps({"peer": comm.peer_id, "revision": opt.outer_step, "world": comm.world_size, "reduced": opt.last_world_size,
                          "globals": digest(opt.outer.globals), "momentum": digest(opt.outer.momentum),
                          "params": digest(list(model.parameters())), "step": opt.local_step}), flush=True)

    report()
    rounds = cfg["rounds"]
    while opt.outer_step < rounds:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if opt.outer_step != last:
            last = opt.outer_step
            report()
        time.sleep(cfg.get("step_sleep", 0))
    if variant == "async":
        opt.flush()
        report()
    if cfg.get("save"):
        np.savez(cfg["save"], *[g.numpy() for g in opt.outer.globals])
    print(json.dumps({"done": True, "bytes_sent": opt.bytes_sent}), flush=True)
    if board is not None:
        # Keep serving the store until the test has read it, and stay in the ring so
        # the last progress row (published by whoever is rank 0) still shows all peers.
        sys.stdin.readline()
        board.store.close()
        node.close()
    comm.close()


if __name__ == "__main__":
    main()
