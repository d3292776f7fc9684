"""Exact all-reduce results for every op x dtype on known inputs at N = 2, 3, 4, with
real peer processes, including sizes smaller than N and not divisible by N. Results are
compared byte for byte, on every peer, with an independent numpy/torch computation."""

import itertools

import pytest
from allreduce_expect import expected
from harness import DTYPES, OPS, connect_all, digest

SIZES = [1, 5, 1003, 300_007]  # < N, not divisible by N, one chunk, many chunks per lane


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_op_and_dtype_is_exact(coordinator, spawn, world):
    peers = [spawn(coordinator.address, timeout=60) for _ in range(world)]
    connect_all(peers)
    cases = [[d, o, n, None] for d, o, n in itertools.product(DTYPES, OPS, SIZES)]
    for i, p in enumerate(peers):
        p.send("all_reduce_cases", cases=cases, index=i, timeout=60)
    replies = [p.reply(240) for p in peers]
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
    for k, (dtype, op, count, _) in enumerate(cases):
        want = digest(expected(dtype, op, count, world))
        got = [r["result"][k]["hash"] for r in replies]
        assert got == [want] * world, f"{op} over {count} x {dtype} at N={world}"
        assert all(r["result"][k]["world_size"] == world for r in replies)


def test_world_size_one_and_empty_arrays(coordinator, spawn):
    peer = spawn(coordinator.address)
    peer.ok("connect")
    cases = [["float32", "sum", 10, None], ["float32", "avg", 10, None], ["int64", "prod", 0, None],
             ["float32", "sum", 10, "minmax_u8"]]
    r = peer.ok("all_reduce_cases", cases=cases, index=3)
    for (dtype, op, count, _), got in zip(cases, r):
        assert got["hash"] == digest(expected(dtype, op, count, 1, indices=[3]))
        assert got["world_size"] == 1
    others = [spawn(coordinator.address) for _ in range(2)]
    for o in others:
        o.send("connect")
    from harness import wait_for

    assert wait_for(lambda: peer.ok("info")["pending_peers"] == 2, 10)
    peer.ok("update_topology")
    assert all(o.reply(10)["ok"] for o in others)
    for i, p in enumerate([peer] + others):
        p.send("all_reduce_cases", cases=[["float64", "sum", 0, None]], index=i)
    assert all(p.reply(20)["result"][0]["world_size"] == 3 for p in [peer] + others)


@pytest.mark.parametrize("threads", [2, 4])
def test_exact_with_lanes_spread_over_threads(coordinator, spawn, threads):
    """PCOMM_DATA_THREADS > 1 (the default on machines with 4+ cores): a thread whose
    next step waits on another thread's lanes must not sleep through it."""
    world = 3
    peers = [spawn(coordinator.address, timeout=30, env={"PCOMM_DATA_THREADS": str(threads)}) for _ in range(world)]
    connect_all(peers)
    cases = [[d, "sum", n, q] for d in ("float32", "int64") for n in (5, 300_007) for q in (None, "minmax_u8")
             if not (q and d == "int64")]
    for i, p in enumerate(peers):
        p.send("all_reduce_cases", cases=cases, index=i, timeout=20)
    replies = [p.reply(120) for p in peers]
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
    for k, (dtype, op, count, quant) in enumerate(cases):
        got = {r["result"][k]["hash"] for r in replies}
        assert len(got) == 1, f"peers differ on {dtype} x {count} ({quant})"
        if quant is None:
            assert got == {digest(expected(dtype, op, count, world))}
