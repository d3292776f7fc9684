"""The discovery DHT with real processes: 20 nodes in 4 processes on loopback, signed
records found across processes, expiry, rejection of forged and malformed records, and
peers that join a run by name only and all-reduce."""

import base64
import json
import sys
import time

import pytest


import pcomm
from allreduce_expect import expected
from harness import CoordinatorProcess, DhtProcess, PeerProcess, connect_all, digest
from pcomm.discovery import Node
from pcomm.errors import DiscoveryError, InvalidArgumentError

RUN = "llama-tiny"


@pytest.fixture(scope="module")
def overlay():
    """20 server nodes: 4 processes x 5 nodes, all bootstrapped from the first."""
    procs = [DhtProcess(5)]
    boot = procs[0].addrs[0][0]
    try:
        procs += [DhtProcess(5, bootstrap=[boot]) for _ in range(3)]
        yield procs, boot
    finally:
        for p in procs:
            p.cleanup()


def lookup(proc, node, kind, run):
    return proc.call("lookup", node=node, kind=kind, run=run)["records"]


def test_a_record_published_on_one_node_is_found_from_every_process(overlay):
    procs, _ = overlay
    out = procs[1].call("publish", node=2, kind="coordinator", run=RUN, addrs=["10.1.2.3:29500"], ttl=60)
    assert out["stored_on"] >= 4
    publisher = procs[1].peer_ids[2]
    for proc in procs:
        for node in (0, 4):
            records = lookup(proc, node, "coordinator", RUN)
            assert [(r["publisher"], r["addrs"]) for r in records] == [(publisher, ["10.1.2.3:29500"])]
    assert lookup(procs[0], 0, "relay", RUN) == []
    assert lookup(procs[0], 0, "coordinator", "another-run") == []


def test_every_publisher_of_a_run_is_listed(overlay):
    procs, _ = overlay
    for i, proc in enumerate(procs):
        proc.call("publish", node=1, kind="relay", run="relays-run", addrs=[f"10.9.0.{i}:3478"], ttl=60)
    records = lookup(procs[2], 3, "relay", "relays-run")
    assert sorted(r["addrs"][0] for r in records) == [f"10.9.0.{i}:3478" for i in range(4)]
    assert sorted(r["publisher"] for r in records) == sorted(p.peer_ids[1] for p in procs)


def test_a_republished_record_replaces_the_old_one(overlay):
    procs, _ = overlay
    procs[3].call("publish", node=0, kind="coordinator", run="moving", addrs=["10.0.0.1:1"], ttl=60)
    procs[3].call("publish", node=0, kind="coordinator", run="moving", addrs=["10.0.0.2:2"], ttl=60)
    records = lookup(procs[0], 1, "coordinator", "moving")
    assert [r["addrs"] for r in records] == [["10.0.0.2:2"]]


def test_records_vanish_after_expiry_unless_refreshed(overlay):
    procs, _ = overlay
    stopped = procs[0].call("publish", node=3, kind="peer", run="short", addrs=["10.0.0.7:1"], ttl=2)
    procs[1].call("publish", node=3, kind="peer", run="short", addrs=["10.0.0.8:1"], ttl=2)
    procs[0].call("stop", announcement=stopped["announcement"])
    assert sorted(r["addrs"][0] for r in lookup(procs[2], 0, "peer", "short")) == ["10.0.0.7:1", "10.0.0.8:1"]
    time.sleep(3.0)  # past the first record's expiry; the second was refreshed every 2/3 s
    records = lookup(procs[2], 0, "peer", "short")
    assert [r["addrs"][0] for r in records] == ["10.0.0.8:1"]
    assert records[0]["expires"] > time.time()


def test_forged_and_malformed_records_are_rejected_and_nodes_keep_serving(overlay):
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from pcomm.discovery.records import kSignaturePrefix, sign_record

    procs, _ = overlay
    before = sum(procs[i].call("stats")["rejected"][j] for i in range(4) for j in range(5))
    # Forged: a payload naming the victim's peer id, signed with the attacker's key.
    attacker, victim = create_new_key_pair(), create_new_key_pair()
    real = sign_record(attacker.private_key, "coordinator", "forged-run", ["6.6.6.6:1"], 1, time.time() + 60)
    payload = json.loads(json.loads(real.raw)["p"])
    payload["publisher"] = ID.from_pubkey(victim.public_key).to_base58()
    text = json.dumps(payload)
    envelope = {
        "p": text,
        "k": base64.b64encode(attacker.public_key.serialize()).decode(),
        "s": base64.b64encode(attacker.private_key.sign(kSignaturePrefix + text.encode())).decode(),
    }
    forged = json.dumps(envelope).encode()
    tampered = real.raw.replace(b"6.6.6.6", b"7.7.7.7")
    for raw in (forged, tampered, b"{not json", b"\x00" * 100):
        out = procs[1].call("put_raw", node=0, kind="coordinator", run="forged-run", raw_b64=base64.b64encode(raw).decode())
        assert out["accepted"] == 0
    # A genuine record stored under another run's key is refused too.
    out = procs[1].call("put_raw", node=0, kind="coordinator", run="forged-run", raw_b64=base64.b64encode(
        sign_record(attacker.private_key, "coordinator", "other", ["6.6.6.6:1"], 1, time.time() + 60).raw).decode())
    assert out["accepted"] == 0
    assert lookup(procs[2], 2, "coordinator", "forged-run") == []
    after = sum(procs[i].call("stats")["rejected"][j] for i in range(4) for j in range(5))
    assert after - before >= 4 * 5  # at least 4 receiving nodes refused each bad record
    # The overlay still answers.
    procs[2].call("publish", node=1, kind="coordinator", run="after-attack", addrs=["10.0.0.9:9"], ttl=60)
    assert [r["addrs"] for r in lookup(procs[3], 4, "coordinator", "after-attack")] == [["10.0.0.9:9"]]


def test_hostile_bytes_on_a_dht_stream_close_that_stream_only(overlay):
    import trio

    from pcomm.discovery import wire

    procs, boot = overlay
    with Node(bootstrap=[boot], server=False, timeout=10).start() as node:
        from libp2p.peer.id import ID

        target = ID.from_base58(procs[0].peer_ids[0])

        async def send_garbage(payload: bytes) -> bytes:
            stream = await node._host.new_stream(target, [wire.PROTOCOL])
            await stream.write(payload)
            try:
                with trio.fail_after(5):
                    return await stream.read(100)
            except Exception as e:
                return repr(e).encode()

        deep = b"[" * 3000 + b"]" * 3000
        for payload in (b"\xff\xff\xff\xff" + b"x" * 10, b"\x00\x00\x00\x05hello", b"\x00\x00\x00\x02{}",
                        len(deep).to_bytes(4, "big") + deep):
            start = time.monotonic()
            answer = node._runner.call(send_garbage, payload, timeout=10, what="garbage")
            assert b"peers" not in answer  # no reply: the stream was reset ...
            assert time.monotonic() - start < 2  # ... at once, not by a timeout
        procs[0].call("publish", node=0, kind="relay", run="still-up", addrs=["10.0.0.3:3"], ttl=60)
        assert [r.addrs for r in node.lookup("relay", "still-up")] == [("10.0.0.3:3",)]


def test_connections_are_noise_only_plaintext_is_refused(overlay):
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

    _, boot = overlay

    async def try_plaintext() -> str:
        kp = create_new_key_pair()
        host = new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                with trio.fail_after(10):
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(boot)))
                return "connected"
            except BaseException as e:  # nested groups from py-libp2p
                return f"refused: {type(e).__name__}"

    assert trio.run(try_plaintext).startswith("refused")


def test_peers_join_a_run_by_name_and_all_reduce(overlay):
    _, boot = overlay
    coord = CoordinatorProcess(run=RUN + "-live", announce_through=[boot])
    peers = []
    try:
        peers = [PeerProcess(None, run=RUN + "-live", bootstrap=[boot], timeout=20) for _ in range(3)]
        connect_all(peers)
        for p in peers:
            p.send("all_reduce", dtype="float32", count=1003, index=peers.index(p), op="sum")
        replies = [p.reply(30) for p in peers]
        assert all(r["ok"] for r in replies), replies
        assert {r["result"]["after"] for r in replies} == {digest(expected("float32", "sum", 1003, 3))}
        assert {r["result"]["world_size"] for r in replies} == {3}
    finally:
        for p in peers:
            p.cleanup()
        coord.cleanup()


def test_unknown_runs_and_bad_arguments_fail_clearly(overlay):
    _, boot = overlay
    t = time.monotonic()
    with pytest.raises(DiscoveryError, match="no coordinator is announced for run 'nobody-here'"):
        pcomm.Communicator(run="nobody-here", bootstrap=[boot], timeout=10)
    assert time.monotonic() - t < 5
    with pytest.raises(InvalidArgumentError, match="not both"):
        pcomm.Communicator("127.0.0.1:1", run="x", bootstrap=[boot])
    with pytest.raises(InvalidArgumentError, match="give coordinator="):
        pcomm.Communicator(run="x")
    with pytest.raises(InvalidArgumentError, match="/p2p/PEER_ID"):
        pcomm.Communicator(run="x", bootstrap=["/ip4/127.0.0.1/tcp/4001"])
    with pytest.raises(InvalidArgumentError, match="non-empty list"):
        pcomm.Communicator(run="x", bootstrap=boot)
    with pytest.raises(InvalidArgumentError, match="listen must be"):
        Node(listen="127.0.0.1:4001")


def test_unreachable_bootstrap_fails_within_the_timeout_with_one_clear_error(capfd):
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    nobody = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    t = time.monotonic()
    with pytest.raises(DiscoveryError, match="no bootstrap node answered .*unable to connect"):
        Node(bootstrap=[f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}"], timeout=5).start()
    assert time.monotonic() - t < 6
    assert "Failed to open TCP stream" not in capfd.readouterr().err  # py-libp2p's noise stays quiet


def test_key_file_keeps_the_identity(tmp_path):
    path = str(tmp_path / "id.key")
    with Node(key_file=path).start() as a:
        first = a.peer_id
    assert oct((tmp_path / "id.key").stat().st_mode & 0o777) == "0o600"
    with Node(key_file=path).start() as b:
        assert b.peer_id == first and b.addrs[0].endswith("/p2p/" + first)
    (tmp_path / "bad.key").write_bytes(b"garbage")
    with pytest.raises(InvalidArgumentError, match="does not hold a libp2p private key"):
        Node(key_file=str(tmp_path / "bad.key"))


def test_wildcard_listen_never_advertises_0_0_0_0():
    with Node(listen="/ip4/0.0.0.0/tcp/0").start() as node:
        assert node.addrs and not any("/0.0.0.0/" in a for a in node.addrs)
    with Node(listen="/ip4/0.0.0.0/tcp/0", announce=["/ip4/198.18.5.5/tcp/4001"]).start() as node:
        assert node.addrs == [f"/ip4/198.18.5.5/tcp/4001/p2p/{node.peer_id}"]


@pytest.mark.asyncio
async def test_asyncio_callers_await_lookups(overlay):
    procs, boot = overlay
    procs[2].call("publish", node=2, kind="peer", run="async-run", addrs=["10.0.0.4:4"], ttl=60)
    with Node(bootstrap=[boot], server=False, timeout=10).start() as node:
        records = await node.alookup("peer", "async-run")
        assert [r.addrs for r in records] == [("10.0.0.4:4",)]
        a = await node.apublish("peer", "async-run", ["10.0.0.5:5"], ttl=60)
        assert a.stored_on >= 4
        assert sorted(r.addrs[0] for r in await node.alookup("peer", "async-run")) == ["10.0.0.4:4", "10.0.0.5:5"]


def test_dht_cli_prints_a_bootstrap_address_others_can_use(tmp_path):
    from harness import _Proc

    key = str(tmp_path / "dht.key")
    dht = _Proc([sys.executable, "-m", "pcomm", "dht", "--listen", "/ip4/127.0.0.1/tcp/0", "--key-file", key])
    try:
        addr = dht.read_line(30).strip()
        assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3Koo" in addr
        with Node(bootstrap=[addr], timeout=10).start() as node:
            node.publish("relay", "cli-run", ["10.0.0.6:6"], ttl=60)
        with Node(bootstrap=[addr], server=False, timeout=10).start() as node:
            assert [r.addrs for r in node.lookup("relay", "cli-run")] == [("10.0.0.6:6",)]
    finally:
        dht.cleanup()


def test_a_call_that_times_out_raises_and_leaves_the_node_usable():
    import trio

    with Node(timeout=10).start() as slow:
        original = slow._serve

        async def slow_serve(stream):
            await trio.sleep(1.0)
            await original(stream)

        slow._host.set_stream_handler(wire_protocol(), slow_serve)
        slow.publish("relay", "slow-run", ["10.0.0.1:1"], ttl=60)
        with Node(bootstrap=slow.addrs, server=False, timeout=10).start() as client:
            start = time.monotonic()
            with pytest.raises(pcomm.errors.TimeoutError, match="no answer within 0.2 s"):
                client.lookup("relay", "slow-run", timeout=0.2)
            assert time.monotonic() - start < 1.0
            # The contact was not blamed for our deadline: a patient lookup still works.
            assert [r.addrs for r in client.lookup("relay", "slow-run", timeout=5)] == [("10.0.0.1:1",)]


def test_a_client_whose_contacts_all_failed_rejoins_through_the_bootstrap_node():
    with Node(timeout=10).start() as server:
        server.publish("relay", "rejoin-run", ["10.0.0.2:2"], ttl=60)
        with Node(bootstrap=server.addrs, server=False, timeout=10).start() as client:
            client._table.failed(server.peer_id)  # as after a failed request
            assert client.routing_table_size == 0
            assert [r.addrs for r in client.lookup("relay", "rejoin-run")] == [("10.0.0.2:2",)]
    with Node(server=False, timeout=10).start() as lonely:
        with pytest.raises(DiscoveryError, match="no DHT node is reachable"):
            lonely.lookup("relay", "rejoin-run")


def test_unstarted_and_restarted_nodes_say_so():
    node = Node()
    with pytest.raises(InvalidArgumentError, match="not started"):
        node.lookup("relay", "x")
    node.start()
    node.close()
    with pytest.raises(DiscoveryError, match="closed"):
        node.lookup("relay", "x")
    with pytest.raises(InvalidArgumentError, match="started already"):
        node.start()
    with pytest.raises(InvalidArgumentError, match="each announce address"):
        Node(announce=["198.18.0.1:4001"])
    with Node().start() as running:
        async def blocking_call_inside():
            running.lookup("relay", "x")

        with pytest.raises(InvalidArgumentError, match="own thread would never return"):
            running._runner.call(blocking_call_inside, timeout=5, what="nested")


def wire_protocol():
    from pcomm.discovery import wire

    return wire.PROTOCOL


def test_coordinator_announce_options_are_checked():
    import subprocess

    for extra, message in ((["--announce", "r1"], "--announce needs --bootstrap"),
                           (["--run", "r2", "--announce", "r1", "--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/x"], "name different runs")):
        out = subprocess.run([sys.executable, "-m", "pcomm", "coordinator", "--listen", "127.0.0.1:0", *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and message in out.stderr, out.stderr
