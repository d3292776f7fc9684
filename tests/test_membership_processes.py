"""Membership with real peer processes on loopback: joining, late joining, clean leave."""

import statistics
import time

from harness import connect_all, join_while_looping, wait_for


def test_four_peers_admitted_then_fifth_joins_late(coordinator, spawn):
    peers = [spawn(coordinator.address, timeout=20) for _ in range(4)]
    connect_all(peers)
    infos = [p.ok("info") for p in peers]
    assert [i["world_size"] for i in infos] == [4, 4, 4, 4]
    assert sorted(i["rank"] for i in infos) == [0, 1, 2, 3]
    ring = infos[0]["peers"]
    assert all(i["peers"] == ring for i in infos), "every peer must see the same ring"
    assert [ring[i["rank"]] for i in infos] == [i["peer_id"] for i in infos]
    assert len({i["epoch"] for i in infos}) == 1
    assert coordinator.peers == ring

    late = spawn(coordinator.address, timeout=20)
    late.send("connect")
    assert wait_for(lambda: peers[0].ok("info")["pending_peers"] == 1, 10)
    # Pending: not admitted until the accepted peers call update_topology.
    time.sleep(0.2)
    assert peers[0].ok("info")["world_size"] == 4
    assert coordinator.pending_peers == 1
    for p in peers:
        p.send("update_topology")
    replies = [p.reply(20) for p in peers] + [late.reply(20)]
    assert all(r["ok"] for r in replies), replies
    infos = [p.ok("info") for p in peers + [late]]
    assert [i["world_size"] for i in infos] == [5] * 5
    assert infos[4]["rank"] == 4, "a late joiner goes to the end of the ring"
    assert infos[0]["peers"][:4] == ring, "existing ring order is kept"
    assert len({i["epoch"] for i in infos}) == 1
    assert all(i["pending_peers"] == 0 for i in infos)


def test_update_topology_without_pending_is_cheap_and_keeps_epoch(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(3)]
    connect_all(peers)
    epoch = peers[0].ok("info")["epoch"]
    for _ in range(5):
        for p in peers:
            p.send("update_topology")
        replies = [p.reply(10) for p in peers]
        assert all(r["ok"] for r in replies)
        assert all(r["result"]["epoch"] == epoch for r in replies)
        assert max(r["elapsed"] for r in replies) < 1.0


def test_clean_close_leaves_at_once(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(3)]
    connect_all(peers)
    peers[2].send("close")
    start = time.monotonic()
    r = peers[0].call("wait_world_size", size=2, within=5)
    assert r["result"]["world_size"] == 2
    assert time.monotonic() - start < 0.5
    for p in peers[:2]:
        p.send("update_topology")
    assert all(p.reply(10)["ok"] for p in peers[:2])


def test_late_join_latency(coordinator, spawn):
    """Time from a late peer's connect() to its admission while the others loop on
    update_topology (reported in the closing note; asserted loosely)."""
    peers = [spawn(coordinator.address) for _ in range(3)]
    connect_all(peers)
    latencies = []
    for _ in range(3):
        late = spawn(coordinator.address)
        latencies.append(join_while_looping(peers, late))
        peers.append(late)
    print(f"late-join latency median {statistics.median(latencies) * 1000:.1f} ms: {latencies}")
    assert statistics.median(latencies) < 2.0
