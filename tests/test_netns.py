"""Peers on separate hosts: each peer process in its own network namespace (198.18.0.x on a
bridge), the coordinator on the bridge's address. Membership, all-reduce, a kill mid-op
and shared state work across real interfaces, not only loopback. Needs root (CI is)."""

import time

import pcomm
import pytest
from allreduce_expect import expected
from harness import PeerProcess, connect_all, digest, sync_all, wait_for
from netns import Namespaces, RunSecret, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

BIG = 8 * 2**20


@pytest.fixture
def hosts():
    with Namespaces(3) as ns, RunSecret():
        with pcomm.Coordinator(listen="198.18.0.254:0", heartbeat_timeout=2.0) as coord:
            peers = [PeerProcess(coord.address, prefix=ns.prefix(i), timeout=30) for i in range(3)]
            try:
                yield ns, coord, peers
            finally:
                for p in peers:
                    p.cleanup()


def test_membership_and_all_reduce_across_hosts(hosts):
    ns, coord, peers = hosts
    connect_all(peers)
    infos = [p.ok("info") for p in peers]
    assert [i["world_size"] for i in infos] == [3, 3, 3]
    # Each peer advertises the address of its own host, learned from its coordinator link.
    assert sorted(i["data_address"].rsplit(":", 1)[0] for i in infos) == [ns.address(i) for i in range(3)]
    for i, p in enumerate(peers):
        p.send("all_reduce", dtype="float32", count=100_003, index=i)
    replies = [p.reply(60) for p in peers]
    assert [r["result"]["after"] for r in replies] == [digest(expected("float32", "sum", 100_003, 3))] * 3


def test_kill_mid_all_reduce_across_hosts(hosts):
    ns, coord, peers = hosts
    connect_all(peers)
    for i, p in enumerate(peers):
        p.send("all_reduce", dtype="float32", count=BIG, index=i, timeout=60)
    assert wait_for(lambda: coord.collectives_running == 1, 30, interval=0.0005)
    peers[1].stop()
    killed = time.time()
    peers[1].kill()
    for i in (0, 2):
        r = peers[i].reply(30)
        assert r["error"] == "PeerLostError", r
        assert float(r["message"].split("failed_at=")[1].split()[0]) - killed < 0.5
    for i in (0, 2):
        peers[i].send("all_reduce", dtype="float32", count=BIG, index=i, timeout=60)
    want = digest(expected("float32", "sum", BIG, 2, indices=[0, 2]))
    assert [peers[i].reply(60)["result"]["after"] for i in (0, 2)] == [want, want]


def test_shared_state_across_hosts(hosts):
    ns, coord, peers = hosts
    connect_all(peers)
    for p in peers:
        p.ok("state_make", tensors={"w": 1_000_000}, seed=3, revision=4)
    peers[0].ok("state_flip", name="w", byte=999)
    results = sync_all(peers)
    assert [r["received"] for r in results] == [1, 0, 0]
    states = [p.ok("state_digest") for p in peers]
    assert states[0] == states[1] == states[2]
