"""all_reduce API: bit-identity, quantization error bounds, several tags in flight,
asyncio, in-place torch/numpy without copies, `out`, argument errors, kernels."""

import asyncio
import threading
import time

import numpy as np
import pcomm
import pcomm._pcomm as core
import pytest
import torch
from allreduce_expect import expected
from harness import connect_all, make_input


@pytest.fixture
def ring():
    """A coordinator and 3 communicators in this process (real sockets and threads)."""
    coord = pcomm.Coordinator(heartbeat_timeout=5.0).start()
    comms = [pcomm.Communicator(coord.address, timeout=20) for _ in range(3)]
    comms[0].connect()
    joins = [threading.Thread(target=c.connect) for c in comms[1:]]
    for t in joins:
        t.start()
    while coord.pending_peers < 2:
        time.sleep(0.005)
    comms[0].update_topology()
    for t in joins:
        t.join()
    assert [c.world_size for c in comms] == [3, 3, 3]
    yield comms
    for c in comms:
        c.close()
    coord.stop()


def all_reduce_all(comms, arrays, **kwargs):
    handles = [c.all_reduce_async(x, **kwargs) for c, x in zip(comms, arrays)]
    return [h.wait() for h in handles]


def test_bit_identical_across_processes_with_and_without_quantization(coordinator, spawn):
    peers = [spawn(coordinator.address, timeout=30) for _ in range(4)]
    connect_all(peers)
    for quant in (None, "minmax_u8"):
        for dtype in ("float32", "float16", "bfloat16", "float64"):
            for i, p in enumerate(peers):
                p.send("all_reduce", dtype=dtype, count=200_003, index=i, seed=7, quantization=quant)
            replies = [p.reply(60) for p in peers]
            assert all(r["ok"] for r in replies), replies
            hashes = {r["result"]["after"] for r in replies}
            assert len(hashes) == 1, f"peers differ for {dtype} quantization={quant}"
            assert replies[0]["result"]["after"] != replies[0]["result"]["before"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantization_error_within_minmax_bound(ring, dtype):
    n = 100_000
    xs = [np.random.default_rng(i).random(n).astype(dtype) for i in range(3)]
    exact = np.sum([x.astype(np.float64) for x in xs], axis=0)
    infos = all_reduce_all(ring, xs, quantization="minmax_u8")
    assert all(np.array_equal(xs[0], x) for x in xs[1:]), "results must be bit-identical"
    # Each value in [0, 1): a partial sum over k peers lies in [0, k), so one quantization
    # of it errs by at most k / 255 / 2. Reduce-scatter quantizes partial sums of 1 and 2
    # peers, all-gather the final sum of 3 once.
    bound = (1 + 2 + 3) / 255 / 2 + 1e-5
    err = np.abs(xs[0].astype(np.float64) - exact).max()
    assert err <= bound, f"error {err} above the min-max bound {bound}"
    assert err > 0, "quantization must actually quantize"
    # Wire bytes: about a quarter (float32) or eighth (float64) of the unquantized ring.
    plain = [np.random.default_rng(i).random(n).astype(dtype) for i in range(3)]
    plain_infos = all_reduce_all(ring, plain)
    ratio = infos[0].bytes_sent / plain_infos[0].bytes_sent
    assert ratio < 1.1 / np.dtype(dtype).itemsize


def test_four_tags_in_flight_in_different_orders(ring):
    base = [[np.full(1000 + t, 10 * t + i, np.int64) for t in range(4)] for i in range(3)]
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]]
    handles = [[None] * 4 for _ in range(3)]
    for i, comm in enumerate(ring):
        for t in orders[i]:
            handles[i][t] = comm.all_reduce_async(base[i][t], tag=t)
    for i in range(3):
        for t in range(4):
            info = handles[i][t].wait()
            assert info.world_size == 3
            assert np.array_equal(base[i][t], np.full(1000 + t, 30 * t + 3, np.int64))


def test_tag_in_flight_is_refused(ring):
    x = np.ones(10, np.float32)
    h = ring[0].all_reduce_async(x, tag=5)
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="tag 5 is already in flight"):
        ring[0].all_reduce_async(np.ones(10, np.float32), tag=5)
    others = [c.all_reduce_async(np.ones(10, np.float32), tag=5) for c in ring[1:]]
    assert h.wait().world_size == 3 and all(o.wait().world_size == 3 for o in others)
    assert np.array_equal(x, np.full(10, 3, np.float32))


@pytest.mark.asyncio
async def test_asyncio_await(ring):
    xs = [np.arange(100, dtype=np.float32) * (i + 1) for i in range(3)]
    infos = await asyncio.gather(*(c.all_reduce_async(x, op="avg") for c, x in zip(ring, xs)))
    assert [i.world_size for i in infos] == [3, 3, 3]
    assert all(np.array_equal(x, np.arange(100, dtype=np.float32) * 2) for x in xs)


def test_in_place_keeps_data_pointers_and_out_leaves_input(ring):
    ts = [torch.full((64, 33), float(i), dtype=torch.float32) for i in range(3)]
    ptrs = [t.data_ptr() for t in ts]
    all_reduce_all(ring, ts, op=pcomm.ReduceOp.SUM)
    assert [t.data_ptr() for t in ts] == ptrs
    assert all(torch.equal(t, torch.full((64, 33), 3.0)) for t in ts)
    arrays = [np.full((5, 7), i + 1, np.int32) for i in range(3)]
    aptrs = [a.ctypes.data for a in arrays]
    all_reduce_all(ring, arrays, op="max")
    assert [a.ctypes.data for a in arrays] == aptrs
    assert all((a == 3).all() for a in arrays)
    xs = [np.full(9, i, np.float64) for i in range(3)]
    outs = [np.zeros(9) for _ in range(3)]
    handles = [c.all_reduce_async(x, out=o) for c, x, o in zip(ring, xs, outs)]
    for h in handles:
        h.wait()
    assert all((o == 3).all() for o in outs)
    assert all((x == i).all() for i, x in enumerate(xs)), "with out=, x is untouched"


def test_bfloat16_torch_exact(ring):
    ts = [make_input("bfloat16", 999, i) for i in range(3)]
    all_reduce_all(ring, ts)
    want = expected("bfloat16", "sum", 999, 3)
    assert all(torch.equal(t, want) for t in ts)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c: c.all_reduce(np.ones((4, 4), np.float32)[:, 1]), "not C-contiguous"),
        (lambda c: c.all_reduce(torch.ones(4, 4).t()), "not contiguous"),
        (lambda c: c.all_reduce(np.ones(3, np.complex64)), "dtype complex64"),
        (lambda c: c.all_reduce([1, 2, 3]), "numpy array or a torch tensor"),
        (lambda c: c.all_reduce(np.ones(3), op="mean"), "op must be one of"),
        (lambda c: c.all_reduce(np.ones(3), quantization="int4"), "quantization must be"),
        (lambda c: c.all_reduce(np.ones(3), out=np.ones(4)), "shape and dtype"),
        (lambda c: c.all_reduce(np.ones(3), out=np.ones(3, np.float32)), "shape and dtype"),
        (lambda c: c.all_reduce(np.ones(3), tag=-1), "tag must be"),
        (lambda c: c.all_reduce(np.ones(3), timeout=0), "positive"),
    ],
)
def test_bad_arguments_raise_invalid_argument(ring, call, message):
    with pytest.raises(pcomm.errors.InvalidArgumentError, match=message):
        call(ring[0])


def test_all_reduce_before_connect_is_refused(coordinator):
    with pcomm.Communicator(coordinator.address) as comm:
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="call connect"):
            comm.all_reduce(np.ones(3))


def test_kernels_wrap_integers_and_round_16_bit_floats():
    a = np.array([127, -128, 100], np.int8)
    b = np.array([1, -1, 100], np.int8)
    d = np.empty_like(a)
    core._reduce(5, 1, d.ctypes.data, a.ctypes.data, b.ctypes.data, 3)  # int8 sum
    assert d.tolist() == [-128, 127, -56]
    core._reduce(5, 5, d.ctypes.data, a.ctypes.data, b.ctypes.data, 3)  # int8 prod
    assert d.tolist() == (a.astype(np.int64) * b).astype(np.int8).tolist()
    h = np.array([1.0, 2048.0, 0.1], np.float16)
    g = np.array([2.0 ** -11, 1.0, 0.2], np.float16)
    out = np.empty_like(h)
    core._reduce(1, 1, out.ctypes.data, h.ctypes.data, g.ctypes.data, 3)
    assert np.array_equal(out, (h.astype(np.float32) + g.astype(np.float32)).astype(np.float16))


def test_quantize_roundtrip_bound():
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32) * 100
    y = np.empty_like(x)
    core._quantize_roundtrip(3, x.ctypes.data, y.ctypes.data, x.size)
    scale = (x.max() - x.min()) / 255
    assert np.abs(x - y).max() <= scale / 2 * 1.0001
    assert y.min() == x.min()
    z = np.full(100, 4.25, np.float32)
    core._quantize_roundtrip(3, z.ctypes.data, y.ctypes.data, 100)
    assert (y[:100] == 4.25).all(), "a constant chunk survives exactly"


TWO_PEERS = (
    "import threading, time, numpy as np, pcomm\n"
    "c = pcomm.Coordinator().start()\n"
    "a, b = pcomm.Communicator(c.address), pcomm.Communicator(c.address)\n"
    "a.connect(); t = threading.Thread(target=b.connect); t.start()\n"
    "while c.pending_peers < 1: time.sleep(0.01)\n"
    "a.update_topology(); t.join()\n"
)


def interrupted_output(tmp_path, script: str) -> str:
    """Runs script, which prints 'waiting' before a call that would block for a minute,
    sends it SIGINT, and returns what it printed after; fails unless it ends within 5 s."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "interrupt.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    return out.strip()


def test_ctrl_c_interrupts_a_waiting_all_reduce(tmp_path):
    """SIGINT while an all-reduce waits (here for a peer that never calls) raises
    KeyboardInterrupt within a fraction of a second, with the input intact."""
    out = interrupted_output(tmp_path, TWO_PEERS + (
        "x = np.ones(10, np.float32)\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    a.all_reduce(x, timeout=60)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', bool((x == 1).all()), flush=True)\n"
    ))
    assert out == "interrupted True"


def test_ctrl_c_interrupts_connect_while_pending(tmp_path):
    out = interrupted_output(tmp_path, (
        "import pcomm\n"
        "c = pcomm.Coordinator().start()\n"
        "a, b = pcomm.Communicator(c.address), pcomm.Communicator(c.address)\n"
        "a.connect()\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    b.connect(timeout=60)  # pending: a never calls update_topology\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', b.connected, flush=True)\n"
    ))
    assert out == "interrupted False"


def test_ctrl_c_interrupts_connect_while_the_coordinator_is_unreachable(tmp_path):
    """Nothing listens at the address: connect() keeps retrying (and says so at warning
    after 3 s), and Ctrl-C interrupts it at once."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "unreachable.py"
    path.write_text(
        "import pcomm, sys\n"
        f"c = pcomm.Communicator('127.0.0.1:{port}')\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    c.connect(timeout=60)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n")
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting"
    time.sleep(3.6)
    sent = time.monotonic()
    proc.send_signal(__import__("signal").SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 0.5, "Ctrl-C took too long"
    assert out.strip() == "interrupted"
    assert f"nothing listens at 127.0.0.1:{port} (still retrying)" in err


def test_wait_for_peers_admits_joiners_and_times_out_clearly():
    import threading

    with pcomm.Coordinator() as coord:
        comms = [pcomm.Communicator(coord.address, timeout=20) for _ in range(3)]
        sizes, errors = [], []

        def join(c):
            try:
                c.connect()
                sizes.append(c.wait_for_peers(3))
            except pcomm.errors.PcommError as e:
                errors.append(e)

        threads = [threading.Thread(target=join, args=(c,)) for c in comms]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(30)
        assert not errors and sizes == [3, 3, 3]
        with pcomm.Coordinator() as other:
            lone = pcomm.Communicator(other.address, timeout=20)
            lone.connect()
            with pytest.raises(pcomm.errors.TimeoutError, match=r"wait_for_peers\(5\): 1 peer\(s\) in the ring"):
                lone.wait_for_peers(5, timeout=0.5)
            lone.close()
        with pytest.raises(pcomm.errors.InvalidArgumentError):
            comms[0].wait_for_peers(0)
        for c in comms:
            c.close()


def test_ctrl_c_interrupts_sync_shared_state(tmp_path):
    out = interrupted_output(tmp_path, TWO_PEERS + (
        "s = pcomm.SharedState({'w': np.ones(10)})\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    a.sync_shared_state(s, timeout=60)  # b never votes\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', s.revision, flush=True)\n"
    ))
    assert out == "interrupted 0"


def test_a_pending_joiner_that_times_out_is_told_why():
    with pcomm.Coordinator() as coord:
        a = pcomm.Communicator(coord.address, timeout=10)
        a.connect()
        b = pcomm.Communicator(coord.address, timeout=10)
        with pytest.raises(pcomm.errors.TimeoutError, match=r"while still pending.*update_topology\(\)"):
            b.connect(timeout=0.5)  # a never calls update_topology
        a.close()
        b.close()
