"""All-reduce under failure, with real processes: a peer SIGKILLed or SIGSTOPped in the
middle of a large all-reduce, mismatched calls, timeouts. Survivors fail fast with a
typed error, keep their input byte for byte, and a retry gives the exact result."""

import re
import time

import pcomm
import pytest
from allreduce_expect import expected
from harness import all_reduce_is_exact, connect_all, digest, make_input, wait_for

BIG = 32 * 2**20  # float32 elements (128 MiB): the ring takes far longer than the set-up


@pytest.fixture
def fast_coordinator():
    with pcomm.Coordinator(listen="127.0.0.1:0", heartbeat_timeout=1.0) as coord:
        yield coord


def start_big_all_reduce(coord, peers, timeout=60):
    for i, p in enumerate(peers):
        p.send("all_reduce", dtype="float32", count=BIG, index=i, timeout=timeout)
    # Wait until the coordinator has started the op: from then on it cannot finish
    # without every peer, so stopping one now is "in the middle".
    assert wait_for(lambda: coord.collectives_running == 1, 30, interval=0.001), "op never started"


def failure_time(reply):
    return float(re.search(r"failed_at=([0-9.]+)", reply["message"]).group(1))


def assert_input_intact(reply, index):
    before = re.search(r"before=(\w+)", reply["message"]).group(1)
    after = re.search(r"after=(\w+)", reply["message"]).group(1)
    assert before == after == digest(make_input("float32", BIG, index)), "input changed by a failed op"


def retry_is_exact(peers, indices):
    all_reduce_is_exact(peers, BIG, indices)


def test_sigkill_mid_all_reduce(coordinator, spawn):
    peers = [spawn(coordinator.address, timeout=60) for _ in range(3)]
    connect_all(peers)
    start_big_all_reduce(coordinator, peers)
    peers[1].stop()  # freeze it mid-transfer, then kill it: the survivors are mid-op
    killed_at = time.time()
    peers[1].kill()
    for i in (0, 2):
        r = peers[i].reply(30)
        assert not r["ok"] and r["error"] == "PeerLostError", r
        assert failure_time(r) - killed_at < 0.5, f"took {failure_time(r) - killed_at:.3f} s"
        assert_input_intact(r, i)
    retry_is_exact([peers[0], peers[2]], [0, 2])


def test_immediate_retry_after_a_kill_converges(coordinator, spawn):
    """Survivors retry the moment their op fails, as a training loop would; whatever the
    order in which they learn of the failure, the retry completes with the exact sum."""
    peers = [spawn(coordinator.address, timeout=60) for _ in range(4)]
    connect_all(peers)
    for i, p in enumerate(peers):
        p.send("all_reduce_retry", dtype="float32", count=BIG // 4, index=i, timeout=60)
    assert wait_for(lambda: coordinator.collectives_running == 1, 30, interval=0.001)
    peers[1].kill()
    replies = [peers[i].reply(60) for i in (0, 2, 3)]
    assert all(r["ok"] for r in replies), replies
    assert all(r["result"]["errors"] for r in replies), "the op must have failed first"
    want = digest(expected("float32", "sum", BIG // 4, 3, indices=[0, 2, 3]))
    assert [r["result"]["after"] for r in replies] == [want] * 3
    assert [r["result"]["world_size"] for r in replies] == [3] * 3


def test_sigstop_mid_all_reduce(fast_coordinator, spawn):
    peers = [spawn(fast_coordinator.address, timeout=60) for _ in range(3)]
    connect_all(peers)
    start_big_all_reduce(fast_coordinator, peers)
    stopped_at = time.time()
    peers[2].stop()
    for i in (0, 1):
        r = peers[i].reply(30)
        assert not r["ok"] and r["error"] == "PeerLostError", r
        assert failure_time(r) - stopped_at < 1.0 + 0.5
        assert_input_intact(r, i)
    retry_is_exact(peers[:2], [0, 1])


@pytest.mark.parametrize(
    "variant, message",
    [
        ({"dtype": "float64"}, "differ in dtype"),
        ({"count": 11}, "differ in element count"),
        ({"op": "max"}, "differ in op"),
        ({"quantization": "minmax_u8"}, "differ in quantization"),
    ],
)
def test_mismatched_calls_fail_everywhere(coordinator, spawn, variant, message):
    peers = [spawn(coordinator.address) for _ in range(3)]
    connect_all(peers)
    for i, p in enumerate(peers):
        args = {"dtype": "float32", "count": 10, "index": i, "timeout": 20}
        if i == 2:
            args.update(variant)
        p.send("all_reduce", **args)
    replies = [p.reply(10) for p in peers]
    for r in replies:
        assert r["error"] == "InvalidArgumentError", r
        assert message in r["message"] and "tag 0" in r["message"]
        assert r["elapsed"] < 2
    # Nothing is left behind: the same peers all-reduce correctly right after.
    for i, p in enumerate(peers):
        p.send("all_reduce", dtype="float32", count=10, index=i)
    assert [p.reply(10)["result"]["after"] for p in peers] == [digest(expected("float32", "sum", 10, 3))] * 3


def test_timeout_when_a_peer_never_calls(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(3)]
    connect_all(peers)
    peers[0].send("all_reduce", dtype="float32", count=1000, index=0, timeout=0.5)
    r0 = peers[0].reply(10)
    assert r0["error"] == "TimeoutError" and 0.45 < r0["elapsed"] < 1.5
    # Peer 1 called after peer 0 gave up: it is told the op was abandoned, not left hanging.
    peers[1].send("all_reduce", dtype="float32", count=1000, index=1, timeout=20)
    time.sleep(0.2)
    for i, p in enumerate(peers):
        if i != 1:
            p.send("all_reduce", dtype="float32", count=1000, index=i, timeout=20)
    replies = [p.reply(30) for p in peers]
    assert all(r["ok"] for r in replies), replies
    want = digest(expected("float32", "sum", 1000, 3))
    assert [r["result"]["after"] for r in replies] == [want] * 3
