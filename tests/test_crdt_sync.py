"""Replication edge cases with in-process replicas (two discovery nodes in this
process): a backlog larger than one message, a subscriber that syncs from its callback,
bad DHT records for the store, lifecycle errors and announcements that end."""

import threading
import time

import pytest


from pcomm.crdt import Store
from pcomm.crdt.replication import _record_run, kBatchBytes
from pcomm.discovery import Node
from pcomm.discovery.records import dht_key
from pcomm.errors import InvalidArgumentError


@pytest.fixture
def two_nodes():
    a = Node(timeout=20).start()
    b = Node(bootstrap=[a.addrs[0]], timeout=20).start()
    try:
        yield a, b
    finally:
        b.close()
        a.close()


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_backlog_larger_than_one_message_is_caught_up(two_nodes):
    a, b = two_nodes
    with Store("backlog", node=a, sync_interval=0.1, announce=False) as sa:
        progress = sa.map("progress")
        for i in range(6000):
            progress[f"peer-{i:05d}"] = {"step": i, "samples": i * 32, "throughput": 1234.5, "note": "x" * 40}
        held = sum(len(raw) for deltas in sa._deltas.values() for raw in deltas)
        assert held > kBatchBytes  # needs more than one message
        with Store("backlog", node=b, sync_interval=0.1, announce=False) as sb:
            sb.add_replica(a.addrs[0])
            wait_until(lambda: sb.writes == 6000, 60)
            assert sb.fingerprint() == sa.fingerprint()


def test_a_subscriber_may_sync_from_its_callback(two_nodes):
    a, b = two_nodes
    with Store("callbacks", node=a, sync_interval=0.1) as sa, Store("callbacks", node=b, sync_interval=0.1) as sb:
        sa.add_replica(b.addrs[0])
        answered = []
        sa.subscribe(lambda change: answered.append(sa.sync_now(timeout=5)) if change.value is False else None)
        shards = sa.set("shards")
        shards.add("s1")
        done = threading.Event()
        threading.Thread(target=lambda: (shards.remove("s1"), done.set()), daemon=True).start()
        assert done.wait(10), "remove() deadlocked with a subscriber that syncs"
        assert answered == [1]
        wait_until(lambda: sb.fingerprint() == sa.fingerprint(), 10)
        assert sb.set("shards").to_list() == []


def test_bad_replica_records_do_not_hide_the_good_ones(two_nodes):
    a, b = two_nodes
    with Node(bootstrap=[a.addrs[0]], timeout=20).start() as mallory:
        run = _record_run("records")
        mallory.publish("peer", run, ["not-a-multiaddr"], ttl=60)
        with Store("records", node=a, sync_interval=0.1) as sa, Store("records", node=b, sync_interval=0.1) as sb:
            wait_until(lambda: sa.replicas == 1 and sb.replicas == 1, 20)
            # Mallory's record is there too (the oldest); it names no usable replica.
            assert len(b.lookup("peer", run)) == 3
            sa.map("m")["k"] = 1
            wait_until(lambda: sb.map("m").get("k") == 1, 10)


def test_lifecycle_errors_are_clear_and_close_ends_the_announcement(two_nodes):
    a, b = two_nodes
    with pytest.raises(InvalidArgumentError, match="must be started"):
        Store("life", node=Node())
    store = Store("life", node=a)
    with pytest.raises(InvalidArgumentError, match="already open on this node"):
        Store("life", node=a)
    wait_until(lambda: len(b.lookup("peer", _record_run("life"))) == 1, 10)
    store.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        store.map("m")["k"] = 1
    again = Store("life", node=a)  # the name is free again
    again.close()
    # No refresh task of the closed stores keeps running on the node.
    tasks = a._runner.call(_task_names, timeout=5, what="list tasks")
    assert not any(name in t for t in tasks for name in ("_discover", "keep_published", "_refresh_in")), tasks
    assert dht_key("peer", _record_run("life"))  # (the record itself expires within its ttl)


async def _task_names():
    import trio

    root = trio.lowlevel.current_root_task()
    names, stack = [], [root]
    while stack:
        task = stack.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return names


def test_one_store_per_database_and_valid_intervals(tmp_path):
    from pcomm.errors import IoError

    path = str(tmp_path / "one.db")
    with Store("solo", path=path):
        with pytest.raises(IoError, match="open in another Store"):
            Store("solo", path=path)
    with Store("solo", path=path) as again:  # free once the first is closed
        again.map("m")["k"] = 1
    with pytest.raises(InvalidArgumentError, match="sync_interval"):
        Store("solo", sync_interval=float("nan"))


def test_stores_opened_from_many_threads_are_all_served(two_nodes):
    a, b = two_nodes
    opened = {}
    threads = [threading.Thread(target=lambda n=n: opened.__setitem__(n, Store(f"t{n}", node=a, sync_interval=0.1))) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(a._crdt_stores) == [f"t{n}" for n in range(4)]
        for n, store in opened.items():
            store.counter("c").increment(n + 1)
        mirrors = [Store(f"t{n}", node=b, sync_interval=0.1) for n in range(4)]
        try:
            for n, m in enumerate(mirrors):
                m.add_replica(a.addrs[0])
                wait_until(lambda m=m, n=n: m.counter("c").value == n + 1, 15)
        finally:
            for m in mirrors:
                m.close()
    finally:
        for store in opened.values():
            store.close()


def test_close_from_a_change_callback_returns_and_closes(two_nodes):
    a, b = two_nodes
    with Store("closing", node=a, sync_interval=0.1) as sa:
        sb = Store("closing", node=b, sync_interval=0.1)
        sb.add_replica(a.addrs[0])
        closed = threading.Event()
        sb.subscribe(lambda change: (sb.close(), closed.set()))
        sa.map("m")["k"] = 1
        assert closed.wait(15)
        with pytest.raises(InvalidArgumentError, match="closed"):
            sb.map("m")["k"] = 2


def test_hostile_messages_are_refused_whole():
    from pcomm.crdt.replication import _batch_budget, _decode, kBatchBytes, kMaxMessageBytes
    from pcomm.discovery.wire import WireError

    for message in ({"deltas": [""] * 10}, {"deltas": ["QUFB"] * 20_001}, {"deltas": [1]}, {"deltas": "x"}, []):
        with pytest.raises(WireError):
            _decode(message)
    assert _batch_budget({}) == kBatchBytes
    big = {f"{'w' * 52}/{n:016x}": n for n in range(20_000)}
    assert 0 < _batch_budget(big) < kBatchBytes
    assert _batch_budget({"w" * (kMaxMessageBytes): 1}) == 0
