"""Failure detection with real processes: SIGKILL, SIGSTOP, coordinator death, timeouts.
Nothing may hang: every wait here is bounded and every failure is a typed error."""

import time

import pcomm
import pytest
from harness import CoordinatorProcess, admit, connect_all


@pytest.fixture
def fast_coordinator():
    with pcomm.Coordinator(listen="127.0.0.1:0", heartbeat_timeout=1.0) as coord:
        yield coord


def test_sigkill_peer_dropped_within_half_a_second(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(4)]
    connect_all(peers)
    epoch = peers[0].ok("info")["epoch"]
    victim_id = peers[2].ok("info")["peer_id"]
    start = time.monotonic()
    peers[2].kill()
    for p in (peers[0], peers[1], peers[3]):
        r = p.call("wait_world_size", size=3, within=5)
        assert r["result"]["world_size"] == 3
    elapsed = time.monotonic() - start
    print(f"SIGKILL -> world_size 3 on all survivors in {elapsed * 1000:.1f} ms")
    assert elapsed < 0.5
    survivors = [p.ok("info") for p in (peers[0], peers[1], peers[3])]
    assert all(victim_id not in s["peers"] for s in survivors)
    assert all(s["epoch"] > epoch for s in survivors)
    # The run goes on: the survivors complete a barrier together in the new epoch.
    for p in (peers[0], peers[1], peers[3]):
        p.send("update_topology")
    replies = [p.reply(10) for p in (peers[0], peers[1], peers[3])]
    assert all(r["ok"] for r in replies), replies
    assert sorted(r["result"]["rank"] for r in replies) == [0, 1, 2]


def test_sigstop_peer_dropped_within_heartbeat_then_rejoins(fast_coordinator, spawn):
    peers = [spawn(fast_coordinator.address) for _ in range(3)]
    connect_all(peers)
    old_id = peers[1].ok("info")["peer_id"]
    start = time.monotonic()
    peers[1].stop()
    r = peers[0].call("wait_world_size", size=2, within=5)
    elapsed = time.monotonic() - start
    print(f"SIGSTOP -> dropped in {elapsed * 1000:.1f} ms (heartbeat timeout 1 s)")
    assert r["result"]["world_size"] == 2
    assert elapsed < 1.5
    peers[1].resume()
    r = peers[1].call("update_topology", timeout=5)
    assert not r["ok"]
    assert r["error"] == "PeerLostError"
    assert "dropped" in r["message"] and "connect()" in r["message"]
    # It can come back as a new peer.
    replies = admit([peers[0], peers[2]], peers[1])
    new_id = replies[2]["result"]["peer_id"]
    assert new_id and new_id != old_id
    assert [r["result"]["world_size"] for r in replies] == [3, 3, 3]


def test_peer_blocked_in_barrier_sees_dead_peer_leave(fast_coordinator, spawn):
    """A peer waiting in update_topology for a peer that then dies is released: the
    barrier is over the survivors."""
    peers = [spawn(fast_coordinator.address) for _ in range(3)]
    connect_all(peers)
    peers[0].send("update_topology", timeout=10)
    peers[1].send("update_topology", timeout=10)
    time.sleep(0.2)
    peers[2].kill()
    replies = [peers[0].reply(5), peers[1].reply(5)]
    assert all(r["ok"] for r in replies), replies
    assert [r["result"]["world_size"] for r in replies] == [2, 2]


def test_coordinator_sigkill_aborts_blocking_calls_then_fails_after_the_grace(spawn):
    coord = CoordinatorProcess(heartbeat_timeout=1.0)
    try:
        peers = [spawn(coord.address, coordinator_grace=2.0) for _ in range(3)]
        connect_all(peers)
        # Two peers block in the barrier (the third never joins it), then the coordinator dies.
        peers[0].send("update_topology", timeout=20)
        peers[1].send("update_topology", timeout=20)
        time.sleep(0.2)
        coord.kill()
        killed = time.monotonic()
        replies = [peers[0].reply(5), peers[1].reply(5)]
        for r in replies:  # at once: the call is aborted, the peer looks for a coordinator
            assert r["error"] == "AbortedError", r
            assert "reconnecting" in r["message"] and r["elapsed"] < 0.2 + 1.0
        # A call made meanwhile waits for a coordinator; none comes within the grace.
        later = peers[2].call("update_topology", timeout=20)
        assert later["error"] == "CoordinatorLostError", later
        assert "coordinator_grace (2 s)" in later["message"]
        assert 1.5 < time.monotonic() - killed < 2.0 + 1.0
    finally:
        coord.cleanup()


def test_coordinator_sigstop_detected_within_heartbeat(spawn):
    coord = CoordinatorProcess(heartbeat_timeout=1.0)
    try:
        peers = [spawn(coord.address, coordinator_grace=0) for _ in range(2)]  # 0: fail at once
        connect_all(peers)
        peers[0].send("update_topology", timeout=20)
        time.sleep(0.1)
        start = time.monotonic()
        coord.stop()
        r = peers[0].reply(5)
        elapsed = time.monotonic() - start
        assert r["error"] == "CoordinatorLostError", r
        assert "silent" in r["message"]
        assert elapsed < 1.0 + 0.5
    finally:
        coord.cleanup()


def test_update_topology_timeout_is_typed_and_bounded(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(2)]
    connect_all(peers)
    r = peers[0].call("update_topology", timeout=0.5)
    assert r["error"] == "TimeoutError"
    assert 0.45 < r["elapsed"] < 1.0
    # The timed-out call leaves the peer usable: the next barrier completes.
    for p in peers:
        p.send("update_topology", timeout=5)
    assert all(p.reply(10)["ok"] for p in peers)


def test_pcomm_timeout_environment_sets_default(coordinator, spawn):
    peers = [spawn(coordinator.address, env={"PCOMM_TIMEOUT": "0.4"})]
    peers.append(spawn(coordinator.address))
    connect_all(peers)
    r = peers[0].call("update_topology")  # no per-call timeout: PCOMM_TIMEOUT applies
    assert r["error"] == "TimeoutError"
    assert 0.35 < r["elapsed"] < 0.9


def test_unreachable_coordinator_fails_within_timeout():
    comm = pcomm.Communicator("127.0.0.1:1", timeout=0.8)
    start = time.monotonic()
    with pytest.raises(pcomm.errors.TimeoutError, match="could not reach the coordinator at 127.0.0.1:1"):
        comm.connect()
    assert time.monotonic() - start < 1.5
    comm.close()
