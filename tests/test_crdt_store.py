"""The CRDT store in one process: views, deltas and their checks, subscriptions,
durability across reopening."""

import asyncio
import json

import pytest


from libp2p.crypto.ed25519 import create_new_key_pair

from pcomm.crdt import InvalidDeltaError, Store
from pcomm.crdt.deltas import kPrefix, sign_delta, verify_delta
from pcomm.discovery.signed import seal
from pcomm.errors import InvalidArgumentError


def test_views_read_back_what_was_written():
    with Store("run-a") as s:
        config = s.map("config")
        config["lr"] = 3e-4
        config.set("batch", 64)
        config["schedule"] = {"warmup": 100, "decay": [0.1, 0.01]}
        del config["batch"]
        assert config.to_dict() == {"lr": 3e-4, "schedule": {"warmup": 100, "decay": [0.1, 0.01]}}
        assert config["lr"] == 3e-4 and "batch" not in config and config.get("batch", "none") == "none"
        with pytest.raises(KeyError):
            config["batch"]
        shards = s.set("shards")
        for x in ("s1", "s2", 7):
            shards.add(x)
        shards.remove("s2")
        shards.remove("never-added")
        assert sorted(map(str, shards)) == ["7", "s1"] and "s1" in shards and "s2" not in shards
        tokens = s.counter("tokens")
        tokens.increment(10)
        tokens.decrement(3)
        steps = s.gcounter("steps")
        steps.increment()
        steps.increment(4)
        assert tokens.value == 7 and steps.value == 5
        assert s.writes == 3 + 1 + 3 + 1 + 2 + 2  # remove("never-added") writes nothing
        assert s.snapshot()["pn"] == {"tokens": 7} and s.snapshot()["g"] == {"steps": 5}


def test_misuse_is_refused_with_a_clear_message():
    with Store("run-b") as s:
        with pytest.raises(InvalidArgumentError, match="grow-only"):
            s.gcounter("g").decrement()
        with pytest.raises(InvalidArgumentError, match="non-negative ints"):
            s.counter("c").increment(-1)
        with pytest.raises(InvalidArgumentError, match="JSON"):
            s.map("m")["k"] = object()
        with pytest.raises(InvalidArgumentError, match="JSON"):
            s.map("m")["k"] = float("nan")
        with pytest.raises(InvalidArgumentError, match="map keys are strings"):
            s.map("m")[1] = 2
        with pytest.raises(InvalidArgumentError, match="map keys are strings"):
            del s.map("m")[1]
        deep = 1
        for _ in range(40):
            deep = [deep]
        with pytest.raises(InvalidArgumentError, match="nest at most"):
            s.map("m")["deep"] = deep
        with pytest.raises(InvalidArgumentError, match="limited to 65536 bytes"):
            s.map("m")["big"] = "x" * 70000
        assert s.writes == 0
    with pytest.raises(InvalidArgumentError, match="without spaces"):
        Store("has space")


def test_subscribers_and_async_iterators_see_changes():
    with Store("run-c") as s:
        seen = []
        unsubscribe = s.subscribe(seen.append)
        s.map("config")["lr"] = 1
        s.set("shards").add("a")
        s.counter("n").increment(2)
        s.set("shards").add("a")  # already present: no visible change
        unsubscribe()
        s.map("config")["lr"] = 2
        assert [(c.obj, c.key, c.value, c.local) for c in seen] == [
            ("config", "lr", 1, True), ("shards", "a", True, True), ("n", "value", 2, True)]

        async def first_two():
            it = s.changes()
            task = asyncio.ensure_future(it.__anext__())
            await asyncio.sleep(0.01)
            s.map("config")["lr"] = 3
            a = await asyncio.wait_for(task, 5)
            s.set("shards").remove("a")
            b = await asyncio.wait_for(it.__anext__(), 5)
            await it.aclose()
            return a, b

        a, b = asyncio.run(first_two())
        assert (a.obj, a.key, a.value) == ("config", "lr", 3)
        assert (b.obj, b.key, b.value) == ("shards", "a", False)


def test_deltas_are_checked_before_they_touch_the_state():
    key = create_new_key_pair().private_key
    good = sign_delta(key, "run-d", 1, "config", "lww", {"key": "lr", "ts": [1, 0], "value": 1})
    assert verify_delta(good.raw, "run-d") == good
    with pytest.raises(InvalidDeltaError, match="for store 'run-d'"):
        verify_delta(good.raw, "run-x")
    tampered = good.raw.replace(b'\\"value\\":1', b'\\"value\\":2')
    assert tampered != good.raw
    with pytest.raises(InvalidDeltaError, match="bad signature"):
        verify_delta(tampered, "run-d")
    # Forged: a valid signature, but the payload names another writer.
    other = create_new_key_pair()
    payload = json.loads(json.loads(good.raw)["p"])
    from libp2p.peer.id import ID

    payload["writer"] = ID.from_pubkey(other.public_key).to_base58()
    with pytest.raises(InvalidDeltaError, match="forged"):
        verify_delta(seal(key, kPrefix, json.dumps(payload)), "run-d")
    writer = good.writer
    bad_contents = [
        ("lww", {"key": 1, "ts": [1, 0]}), ("lww", {"key": "k", "ts": [1]}), ("lww", {"key": "k", "ts": [1, 0], "evil": 1}),
        ("orset", {"add": 1, "remove": 1}), ("orset", {"remove": 1, "tags": [["w", 0]]}),
        ("pn", {"p": -1, "n": 0}), ("pn", {"p": 1}), ("g", {"p": True}), ("nope", {}),
    ]
    for type_name, d in bad_contents:
        payload = {"store": "run-d", "writer": writer, "seq": 2, "obj": "o", "t": type_name, "d": d}
        with pytest.raises(InvalidDeltaError, match="malformed"):
            verify_delta(seal(key, kPrefix, json.dumps(payload)), "run-d")
    for junk in (b"", b"{}", b"\x00" * 10, b'{"p":"{}","k":"","s":"AA=="}'):
        with pytest.raises(InvalidDeltaError):
            verify_delta(junk, "run-d")
    with Store("run-d") as s:
        assert s.receive([good.raw, tampered, b"junk", good.raw]) == 1
        assert s.rejected == 2 and s.map("config").to_dict() == {"lr": 1}


def test_reopening_replays_every_write_and_keeps_the_writer(tmp_path):
    path = str(tmp_path / "meta.db")
    with Store("run-e", path=path) as s:
        writer = s.writer
        for i in range(50):
            s.map("progress")[f"k{i}"] = i
        s.set("shards").add("s1")
        s.counter("tokens").increment(123)
        before = s.fingerprint()
    with Store("run-e", path=path) as s:
        assert s.writer == writer and s.fingerprint() == before
        assert s.map("progress")["k49"] == 49 and s.counter("tokens").value == 123
        s.counter("tokens").increment(1)  # continues the writer's sequence
        assert s.digest() == {writer: 53}
    with Store("run-e", path=path) as s:
        assert s.counter("tokens").value == 124
    with Store("another-run", path=path) as s:  # stores share a file, not their data
        assert s.snapshot() == {}
    s = Store("run-e", path=path)
    s.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        s.map("progress")["late"] = 1


def test_deltas_beyond_a_gap_wait_and_missing_for_sends_exactly_what_is_lacking():
    key = create_new_key_pair().private_key
    deltas = [sign_delta(key, "run-f", seq, "n", "g", {"p": seq}) for seq in range(1, 9)]
    with Store("run-f") as s:
        writer = deltas[0].writer
        # 8 arrives before 6 and 7: it waits (the next round brings 6, 7, 8 in order), so
        # one writer's stuck tail can never fill every batch.
        assert s.receive([d.raw for d in deltas if d.seq not in (6, 7)]) == 5
        assert s.digest() == {writer: 5} and s.rejected == 0
        assert s.missing_for({writer: 3}, 1 << 20) == [deltas[i].raw for i in (3, 4)]
        assert s.missing_for({}, 1 << 20) == [d.raw for d in deltas[:5]]
        assert s.missing_for({writer: 5}, 1 << 20) == []
        assert len(s.missing_for({}, 1)) == 1  # the size cap still sends one
        assert s.receive([deltas[7].raw, deltas[6].raw, deltas[5].raw]) == 3  # any order in one batch
        assert s.digest() == {writer: 8} and s.gcounter("n").value == 8


def test_one_name_with_two_types_is_two_objects_in_any_delivery_order():
    key = create_new_key_pair().private_key
    g = sign_delta(key, "run-g", 1, "c", "g", {"p": 5})
    pn = sign_delta(key, "run-g", 2, "c", "pn", {"p": 100, "n": 0})
    lww = sign_delta(key, "run-g", 3, "c", "lww", {"key": "k", "ts": [1, 0], "value": 1})
    with Store("run-g") as one_batch, Store("run-g") as separately, Store("run-g") as reader:
        assert reader.counter("c").value == 0  # opening a view fixes nothing
        assert one_batch.receive([g.raw, pn.raw, lww.raw]) == 3
        for d in (g, pn, lww):  # one writer's deltas travel in seq order
            separately.receive([d.raw])
        reader.receive([pn.raw, g.raw, lww.raw])
        assert one_batch.fingerprint() == separately.fingerprint() == reader.fingerprint()
        assert one_batch.snapshot() == {"g": {"c": 5}, "pn": {"c": 100}, "lww": {"c": {"k": 1}}}
        assert reader.gcounter("c").value == 5 and reader.counter("c").value == 100


def test_equivocation_keeps_the_first_delta_and_is_counted():
    key = create_new_key_pair().private_key
    first = sign_delta(key, "run-h", 1, "m", "lww", {"key": "k", "ts": [1, 0], "value": "first"})
    second = sign_delta(key, "run-h", 1, "m", "lww", {"key": "k", "ts": [1, 0], "value": "second"})
    with Store("run-h") as s:
        assert s.receive([first.raw]) == 1
        assert s.receive([second.raw, first.raw]) == 0
        assert s.rejected == 1 and s.map("m")["k"] == "first"
        # The same payload in a re-encoded envelope is the same delta, not equivocation.
        env = json.loads(first.raw)
        assert s.receive([json.dumps(env, indent=1).encode()]) == 0 and s.rejected == 1


def test_a_restart_without_the_old_log_writes_as_a_new_incarnation(tmp_path):
    from pcomm.discovery import Node

    key_file = str(tmp_path / "id.key")
    lives = []
    with Store("run-i") as other:
        for lr, tokens in ((1, 100), (2, 5)):  # the same identity, twice, no delta log
            with Node(key_file=key_file).start() as node, Store("run-i", node=node) as s:
                s.map("m")["lr"] = lr
                s.counter("tokens").increment(tokens)
                other.receive(s.missing_for({}, 1 << 20))
                lives.append(s.writer)
        assert lives[0] != lives[1] and lives[0].split("/")[0] == lives[1].split("/")[0]
        assert other.counter("tokens").value == 105 and other.map("m")["lr"] == 2
        assert other.digest() == {lives[0]: 2, lives[1]: 2} and other.rejected == 0


def test_hostile_values_neither_crash_nor_poison_the_replica(tmp_path):
    key = create_new_key_pair().private_key
    from libp2p.peer.id import ID

    writer = ID.from_pubkey(key.get_public_key()).to_base58() + "/" + "0" * 16

    def raw(seq, t, d, obj="m"):
        return seal(key, kPrefix, json.dumps({"store": "run-j", "writer": writer, "seq": seq, "obj": obj, "t": t, "d": d}))

    deep = "[" * 5000 + "]" * 5000
    nested = seal(key, kPrefix, '{"store":"run-j","writer":"%s","seq":1,"obj":"m","t":"lww","d":{"key":"k","ts":[1,0],"value":%s}}' % (writer, deep))
    bad = [
        nested,
        raw(2, "lww", {"key": "k", "ts": [10**4000, 0], "value": 1}),
        raw(3, "lww", {"key": "k", "ts": [2**53, 0], "value": 1}),
        raw(2**63, "g", {"p": 1}),
        raw(4, [], {"p": 1}),
        raw(5, "g", {"p": 1}, obj="bad\nname"),
        b"[" * 100000,
    ]
    path = str(tmp_path / "j.db")
    with Store("run-j", path=path) as s:
        assert s.receive(bad) == 0 and s.rejected == len(bad)
        far = raw(1, "lww", {"key": "k", "ts": [2**52, 2**32 - 1], "value": "future"})
        assert s.receive([far]) == 0 and s.refused_future == 1  # refused, not stored ...
        assert s.map("m").to_dict() == {} and s.digest() == {}
        s.map("n")["x"] = 1  # ... and our clock is not dragged into the future
        assert s._clock.now()[0] < 2**45
        s._clock.observe((s._clock.now()[0], 2**32 - 1))  # a full counter (from a plausible clock)
        s.map("n")["y"] = 2  # borrows the next millisecond instead of overflowing
        assert s.map("n").to_dict() == {"x": 1, "y": 2}
        s.gcounter("ok").increment(2)
    with Store("run-j", path=path) as s:  # reopening replays cleanly
        assert s.map("m").to_dict() == {} and s.gcounter("ok").value == 2
