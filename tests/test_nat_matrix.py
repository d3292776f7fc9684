"""NAT traversal for real, in network namespaces (needs root; CI is root). The
coordinator and two relays sit on a public network; peers are (a) public, (b) behind
their own port-preserving MASQUERADE router, (c) behind a --random-fully router (a new
port per connection). Routers drop unsolicited inbound traffic. For every mix, every
peer joins, all-reduces are exact on every peer, and each link has the kind the mix
calls for: a with anything: direct; b with b: punched; c with b or c: relayed.
Also: a late joiner behind a NAT catches up from peers behind NATs; a punched path is
kept across epochs; a relay killed mid-run is replaced; garbage on the relay port
closes only that connection. One network for the whole module (see tests/nat.py)."""

import socket
import struct

import pcomm
import pytest
from allreduce_expect import expected
from harness import PeerProcess, RelayProcess, admit, all_reduce_is_exact, connect_all, digest, sync_all
from nat import PUBLIC_GATEWAY, Internet, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

# Hosts of the module's network, by kind.
KINDS = ["a", "b", "b", "b", "c", "c"]
A, B1, B2, B3, C1, C2 = range(6)
COUNT = 100_003


def expected_kind(x: str, y: str) -> str:
    if "a" in (x, y):
        return "direct"
    return "punched" if x == y == "b" else "relayed"


@pytest.fixture(scope="module")
def net():
    with Internet(KINDS) as internet:
        relays = [RelayProcess(listen=f"{PUBLIC_GATEWAY}:0") for _ in range(2)]
        try:
            internet.relays = relays
            yield internet
        finally:
            for r in relays:
                r.cleanup()


@pytest.fixture
def run(net):
    """A coordinator on the public net knowing both relays, and a way to start peers on
    chosen hosts. Peers and coordinator end with the test."""
    coord = pcomm.Coordinator(listen=f"{PUBLIC_GATEWAY}:0", heartbeat_timeout=3.0,
                              relays=[r.address for r in net.relays if r.proc.poll() is None]).start()
    started = []

    def peers(hosts, env=None):
        ps = [PeerProcess(coord.address, prefix=net.prefix(h), timeout=30, env=env) for h in hosts]
        for p, h in zip(ps, hosts):
            p.host = h
        started.extend(ps)
        return ps

    try:
        yield coord, peers
    finally:
        for p in started:
            p.cleanup()
        coord.stop()


def all_reduce_exact(peers, indices=None):
    all_reduce_is_exact(peers, COUNT, indices, timeout=30)


def check_kinds(net, peers):
    """Every peer's links have the kind their hosts' NATs call for."""
    host_of = {p.ok("info")["peer_id"]: p.host for p in peers}
    for p in peers:
        links = p.ok("links")
        assert links, f"peer on host {p.host} has no links"
        for link in links:
            want = expected_kind(net.kinds[p.host], net.kinds[host_of[link["peer_id"]]])
            assert link["kind"] == want, (net.kinds[p.host], link)
            if want == "relayed":
                assert link["remote"].startswith("relay ")


@pytest.mark.parametrize("mix", [[A, B1], [B1, B2], [B1, C1], [C1, C2], [A, B1, B2, C1]],
                         ids=["a-b", "b-b", "b-c", "c-c", "a-b-b-c"])
def test_mix_joins_reduces_exactly_with_the_expected_links(net, run, mix):
    coord, start = run
    peers = start(mix)
    connect_all(peers)
    all_reduce_exact(peers)
    check_kinds(net, peers)


def test_mixed_pool_sizes_with_lanes_on_several_threads(net, run):
    """Punched (1 connection), direct and relayed (4) pools side by side: lanes that only
    send or only receive, spread over threads, still give exact results."""
    coord, start = run
    peers = start([A, B1, B2, C1], env={"PCOMM_DATA_THREADS": "3"})
    connect_all(peers)
    all_reduce_exact(peers)
    check_kinds(net, peers)


def test_late_joiner_behind_nat_catches_up_from_peers_behind_nats(net, run):
    coord, start = run
    members = start([B1, C1])
    connect_all(members)
    for p in members:
        p.ok("state_make", tensors={"w": 300_000, "m": 5_000}, seed=7, revision=9)
    joiner, = start([B2])
    joiner.ok("state_make", tensors={"w": 300_000, "m": 5_000}, zero=True, revision=0)
    admit(members, joiner)
    everyone = members + [joiner]
    results = sync_all(everyone, timeout=30)
    assert [r["received"] for r in results] == [0, 0, 2]
    digests = [p.ok("state_digest") for p in everyone]
    assert digests[0] == digests[1] == digests[2] and digests[2]["revision"] == 9
    all_reduce_exact(everyone)
    check_kinds(net, everyone)


def test_punched_path_is_kept_across_epochs(net, run):
    coord, start = run
    b1, b2 = start([B1, B2])
    connect_all([b1, b2])
    first = b1.ok("links")
    assert [l["kind"] for l in first] == ["punched"]
    punches = coord.path_requests["punch"]
    epoch = b1.ok("info")["epoch"]
    for cycle in range(3):  # a public peer joins and leaves: two epochs a cycle
        a, = start([A])
        admit([b1, b2], a)
        all_reduce_exact([b1, b2, a])
        a.ok("close")
        for p in (b1, b2):
            p.send("update_topology")
        assert all(p.reply(30)["ok"] for p in (b1, b2))
        all_reduce_exact([b1, b2])
    assert b1.ok("info")["epoch"] >= epoch + 5
    assert coord.path_requests["punch"] == punches  # no new punch
    after = b1.ok("links")
    assert after[0]["kind"] == "punched" and after[0]["remote"] == first[0]["remote"]


def test_relay_killed_mid_run_is_replaced(net, run):
    """A public peer between two relayed ones: when the relay dies, the relayed pool is
    replaced while the direct pools beside it are kept and re-synchronised once (a pool
    that broke mid-way must not make the others send their markers again)."""
    coord, start = run
    peers = start([A, C1, C2])
    connect_all(peers)
    all_reduce_exact(peers)
    relayed = [l for l in peers[1].ok("links") if l["kind"] == "relayed"]
    assert relayed, peers[1].ok("links")
    used = relayed[0]["remote"].split(" ", 1)[1]
    victim = next(r for r in net.relays if r.address == used)
    victim.kill()
    # The next op fails with a typed error on every peer, input intact; the retry relinks
    # through the other relay.
    for i, p in enumerate(peers):
        p.send("all_reduce_retry", dtype="float32", count=COUNT, index=i, timeout=30)
    replies = [p.reply(90) for p in peers]
    assert all(r["ok"] for r in replies), replies
    errors = [r["result"]["errors"] for r in replies]
    assert all(errors) and all(set(e) <= {"PeerLostError", "AbortedError"} for e in errors), errors
    want = digest(expected("float32", "sum", COUNT, 3))
    assert [r["result"]["after"] for r in replies] == [want] * 3
    for p in peers[1:]:
        for link in p.ok("links"):
            assert used not in link["remote"], link
    check_kinds(net, peers)
    all_reduce_exact(peers)
    # Replace the dead relay so later tests in this module have two again.
    net.relays[net.relays.index(victim)] = RelayProcess(listen=f"{PUBLIC_GATEWAY}:0")


def test_garbage_and_unknown_tokens_on_the_relay_close_only_that_connection(net, run):
    coord, start = run
    c1, c2 = start([C1, C2])
    connect_all([c1, c2])
    relay = c1.ok("links")[0]["remote"].split(" ", 1)[1]
    host, port = relay.rsplit(":", 1)
    for junk in (b"\x16\x03\x01\x00\xa5garbage" * 20,  # a whole TLS record of garbage (an incomplete one waits)
                 b"PCOM" + struct.pack("<HHI", pcomm.PROTOCOL_VERSION, 42, 36) + struct.pack("<I", 32) + b"0" * 32):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(junk)
        s.settimeout(5)
        got = b""
        while True:  # the relay answers (or not) and closes; it must not hang on us
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
    all_reduce_exact([c1, c2])  # the run's circuits are untouched
