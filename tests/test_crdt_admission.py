"""CRDT writers the run admitted, and only them: writer certificates of the run secret,
refused deltas counted once, writes from the far future refused (the measured attack:
a fresh key overwrote config.lr and another peer's progress row, subtracted 1e12 from
a counter, and with its clock at 2^53 ms kept its keys for ever). In one process first,
then with real replica processes."""

import time

import pytest

from harness import ReplicaProcess, converge, wait_for
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from pcomm.crdt import HLC, Store
from pcomm.crdt.admission import check_admitted, writer_cert
from pcomm.crdt.deltas import InvalidDeltaError, RefusedDeltaError, sign_delta, verify_delta
from pcomm.discovery import Node
from pcomm.errors import InvalidArgumentError

SECRET = b"6b1f0e2d9c8a7b6c5d4e3f2a1b0c9d8e"
WRONG = b"0123456789abcdef0123456789abcdef"
INCARNATION = "0123456789abcdef"


def held(store: Store) -> list[bytes]:
    """Every delta ``store`` holds (what it would send a replica that holds none)."""
    return store.missing_for({}, 1 << 24)


def hostile_writes(store: Store, victim: str) -> None:
    store.map("config")["lr"] = 1.0
    store.map("progress")[victim] = {"step": 999999}
    store.counter("tokens").decrement(10**12)


def honest_writes(store: Store) -> None:
    store.map("config")["lr"] = 3e-4
    store.map("progress")[store.peer_id] = {"step": 10}
    store.counter("tokens").increment(100)


HONEST_STATE = {"lr": 3e-4}


def test_foreign_writers_are_refused_and_counted_once():
    with Store("run-k", secret=SECRET) as a, Store("run-k", secret=SECRET) as b, \
            Store("run-k") as foreign, Store("run-k", secret=WRONG) as wrong:
        honest_writes(a)
        assert b.receive(held(a)) == 3
        expected = b.snapshot()
        assert expected == {"lww": {"config": HONEST_STATE, "progress": {a.peer_id: {"step": 10}}}, "pn": {"tokens": 100}}
        for intruder in (foreign, wrong):
            hostile_writes(intruder, a.peer_id)
            for _ in range(3):  # they come back every round; counted once
                assert b.receive(held(intruder)) == 0
        assert b.snapshot() == expected and b.digest() == {a.writer: 3}
        assert (b.refused_writers, b.refused_future, b.refused, b.rejected) == (6, 0, 6, 0)
        assert foreign.receive(held(a)) == 3  # a store without a secret takes anyone's


def test_writer_certificates_are_checked_field_by_field():
    key = create_new_key_pair()
    peer = ID.from_pubkey(key.public_key).to_base58()
    other = ID.from_pubkey(create_new_key_pair().public_key).to_base58()

    def delta(cert, store="run-c"):
        return verify_delta(sign_delta(key.private_key, store, 1, "config", "lww", {"key": "lr", "ts": [1, 0], "value": 1},
                                       INCARNATION, cert).raw, store)

    check_admitted(delta(writer_cert(SECRET, "run-c", peer)), SECRET)
    check_admitted(delta(None), None)  # no secret: no admission
    cases = [
        (None, "carries no certificate"),
        (writer_cert(WRONG, "run-c", peer), "not this run secret's"),  # another run's secret
        (writer_cert(SECRET, "run-other", peer), "not this run secret's"),  # another store's
        (writer_cert(SECRET, "run-c", other), "not this run secret's"),  # another writer's, copied
    ]
    for cert, message in cases:
        with pytest.raises(RefusedDeltaError, match=message):
            check_admitted(delta(cert), SECRET)
    good = sign_delta(key.private_key, "run-c", 1, "config", "lww", {"key": "lr", "ts": [1, 0]}, INCARNATION,
                      writer_cert(SECRET, "run-c", peer))
    tampered = good.raw.replace(good.cert.encode(), writer_cert(SECRET, "run-c", other).encode())
    with pytest.raises(InvalidDeltaError, match="bad signature"):
        verify_delta(tampered, "run-c")
    with pytest.raises(InvalidDeltaError, match="cert must be 64 lowercase hex digits"):
        verify_delta(sign_delta(key.private_key, "run-c", 1, "g", "g", {"p": 1}, INCARNATION, "not-a-cert").raw, "run-c")


def admitted_write(ts_ms: int, value, store: str) -> bytes:
    key = create_new_key_pair()
    cert = writer_cert(SECRET, store, ID.from_pubkey(key.public_key).to_base58())
    return sign_delta(key.private_key, store, 1, "config", "lww", {"key": "lr", "ts": [ts_ms, 0], "value": value}, INCARNATION, cert).raw


@pytest.mark.parametrize("secret", [SECRET, None], ids=["with-secret", "without-secret"])
def test_a_write_from_the_far_future_is_refused_and_the_owner_keeps_its_key(secret):
    with Store("run-f", secret=secret) as owner:
        owner.map("config")["lr"] = 0.1
        now_ms = int(time.time() * 1000)
        for ahead in (2**53 - 1, now_ms + 61_000):
            assert owner.receive([admitted_write(ahead, 666, "run-f")]) == 0
        assert (owner.refused_future, owner.refused_writers) == (2, 0)
        assert owner.map("config")["lr"] == 0.1 and list(owner.digest()) == [owner.writer]
        owner.map("config")["lr"] = 0.2  # the owner still writes its key
        assert owner.map("config")["lr"] == 0.2
        # A clock a little ahead is within the minute: taken, and the owner's clock
        # moves past it, so the owner's next write still wins.
        assert owner.receive([admitted_write(now_ms + 30_000, 0.25, "run-f")]) == 1
        assert owner.map("config")["lr"] == 0.25
        owner.map("config")["lr"] = 0.3
        assert owner.map("config")["lr"] == 0.3


def test_a_store_that_gets_the_secret_later_writes_on_as_a_new_writer(tmp_path):
    path = str(tmp_path / "meta.db")
    with Store("run-m", path=path) as s:
        s.map("config")["lr"] = 1
        before = s.writer
    with Store("run-m", path=path, secret=SECRET) as s:
        # Its old, uncertified deltas are refused here as everywhere; it never reuses their seqs.
        assert s.writer != before and s.refused_writers == 1 and s.map("config").to_dict() == {}
        s.map("config")["lr"] = 2
        after = s.writer
    with Store("run-m", path=path, secret=SECRET) as s:
        assert s.writer == after and s.map("config").to_dict() == {"lr": 2} and s.refused_writers == 1
    with Store("run-m", secret=SECRET) as reader, Store("run-m", path=path, secret=SECRET) as s:
        assert reader.receive(held(s)) == 1 and reader.map("config").to_dict() == {"lr": 2}


def test_the_secret_comes_from_the_argument_the_environment_or_the_node(tmp_path, monkeypatch):
    with Store("run-e", secret=SECRET) as reader:
        secret_file = tmp_path / "run.secret"
        secret_file.write_bytes(SECRET + b"\n")
        monkeypatch.setenv("PCOMM_SECRET_FILE", str(secret_file))
        with Store("run-e") as from_env:
            from_env.map("m")["k"] = 1
            assert reader.receive(held(from_env)) == 1
        monkeypatch.delenv("PCOMM_SECRET_FILE")
        with Node(secret=SECRET).start() as node, Store("run-e", node=node, announce=False) as from_node:
            assert node.has_secret
            from_node.map("m")["k"] = 2
            assert reader.receive(held(from_node)) == 1
        with Store("run-e") as without:
            without.map("m")["k"] = 3
            assert reader.receive(held(without)) == 0 and reader.refused_writers == 1
        assert reader.map("m")["k"] == 2
    with pytest.raises(InvalidArgumentError, match="give at least 16"):
        Store("run-e", secret="short")


def refusals(replica) -> tuple[int, int]:
    state = replica.call("state")
    return state["refused_writers"], state["refused_future"]


def intruder(secret: bytes | None, clock_ms: int | None = None) -> tuple[Node, Store]:
    """A replica in this process on its own discovery node: no, a wrong or the right
    secret; ``clock_ms``: its wall clock, stuck there."""
    node = Node(timeout=10, secret=secret).start()
    store = Store("run-meta", node=node, sync_interval=0.1, announce=False)
    if clock_ms is not None:
        store._clock = HLC(now_ms=lambda: clock_ms)
    return node, store


def test_foreign_and_future_writers_cannot_touch_a_secured_run():
    """Two honest replica processes with the secret; a foreign replica (fresh key, no
    secret), one with a wrong secret and an admitted one whose clock reads 2^53 - 1 ms
    all push their writes to both. Nothing of theirs lands, each refusal is counted
    once, and the owner of config.lr still writes it afterwards."""
    a = ReplicaProcess("run-meta", secret=SECRET.decode())
    b, intruders = None, []
    try:
        b = ReplicaProcess("run-meta", bootstrap=[a.addrs[0]], secret=SECRET.decode())
        a_peer = a.writer.split("/")[0]
        a.call("write", ops=[["map", "config", "lr", 3e-4], ["map", "progress", a_peer, {"step": 10}], ["inc", "tokens", 100]])
        converge([a, b], 20)  # a and b found each other through the DHT (proven records)
        intruders = [intruder(None), intruder(WRONG), intruder(SECRET, clock_ms=2**53 - 1)]
        for i, (_, store) in enumerate(intruders):
            if i < 2:
                hostile_writes(store, a_peer)
            else:
                store.map("config")["lr"] = 666.0
            for honest in (a, b):
                store.add_replica(honest.addrs[0])
        assert wait_for(lambda: refusals(a) == (6, 1) and refusals(b) == (6, 1), 20, 0.05), (refusals(a), refusals(b))
        time.sleep(0.3)  # a few more rounds with the intruders
        expected = {"lww": {"config": {"lr": 3e-4}, "progress": {a_peer: {"step": 10}}}, "pn": {"tokens": 100}}
        for honest in (a, b):
            state = honest.call("state")
            assert state["snapshot"] == expected and list(state["digest"]) == [a.writer]
            assert (state["refused_writers"], state["refused_future"], state["rejected"]) == (6, 1, 0)
        a.call("write", ops=[["map", "config", "lr", 5e-4]])
        assert wait_for(lambda: b.call("state")["snapshot"]["lww"]["config"] == {"lr": 5e-4}, 10, 0.05)
    finally:
        for node, store in intruders:
            store.close()
            node.close()
        for r in (a, b):
            if r is not None:
                r.cleanup()
