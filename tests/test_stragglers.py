"""Hung peers (alive, heartbeats flowing, never entering a collective call) are dropped
by the straggler rule, all at once, and the others go on; a call that times out names
the peers it waited for. Active peers are real processes; the idle ones are
communicators in this process that connect and then do nothing."""

import re
import threading
import time

import pcomm
import pytest
from harness import PeerProcess, all_reduce_is_exact, connect_all, wait_for

STRAGGLER = 3.0


def idle_herd(coord, active, n):
    """n communicators admitted into the ring of `active`, then left idle."""
    herd = [pcomm.Communicator(coord.address, timeout=60) for _ in range(n)]
    threads = [threading.Thread(target=c.connect) for c in herd]
    for t in threads:
        t.start()
    assert wait_for(lambda: coord.pending_peers == n, 60), coord.pending_peers
    for p in active:
        p.send("update_topology", timeout=60)
    assert all(p.reply(90)["ok"] for p in active)
    for t in threads:
        t.join(30)
    assert coord.epoch and len(coord.peers) == len(active) + n
    return herd


def named(message, call):
    """The peers a timeout's message says it waited for, sorted."""
    m = re.search(rf"waiting for (\d+) peer\(s\) that had not called {call}: ([\w, ]+)", message)
    assert m, message
    names = sorted(m.group(2).strip().split(", "))
    assert len(names) == int(m.group(1))
    return names


@pytest.mark.parametrize("idle", [1, 50])
def test_idle_peers_are_dropped_at_once_and_the_rest_go_on(idle):
    with pcomm.Coordinator(straggler_timeout=STRAGGLER) as coord:
        active = [PeerProcess(coord.address) for _ in range(3)]
        herd = []
        try:
            connect_all(active)
            herd = idle_herd(coord, active, idle)
            start = time.monotonic()
            all_reduce_is_exact(active, 1 << 16)  # a world of exactly the 3 active peers
            first = time.monotonic() - start
            assert first <= STRAGGLER + 1.0, first
            start = time.monotonic()
            for _ in range(5):
                all_reduce_is_exact(active, 1 << 16)
            rate = (time.monotonic() - start) / 5
            assert rate < 0.5, rate
            for c in herd:  # each idle peer hears why when it next calls
                with pytest.raises(pcomm.errors.PeerLostError, match=r"did not call all_reduce with tag 0 within the "
                                                              r"straggler timeout \(3 s\) while 3 peer\(s\) waited"):
                    c.update_topology(timeout=5)
            print(f"{idle} idle: first op after {first:.2f} s, then {rate * 1000:.0f} ms per op")
        finally:
            for c in herd:
                c.close()
            for p in active:
                p.cleanup()


def test_a_timeout_names_the_peers_that_never_called():
    with pcomm.Coordinator(straggler_timeout=None) as coord:
        active = [PeerProcess(coord.address) for _ in range(2)]
        herd = []
        try:
            connect_all(active)
            herd = idle_herd(coord, active, 2)
            idle_ids = sorted(c.peer_id for c in herd)
            # The first peer's deadline passes: TimeoutError naming the idle peers. Its
            # give-up aborts the op for the second (longer deadline), whose AbortedError
            # names the peer that gave up and, through its account, the idle peers.
            # (Equal deadlines would race: whichever fired first would abort the other.)
            first, second = active
            first_id = first.ok("info")["peer_id"]
            first.send("all_reduce", dtype="float32", count=1024, index=0, timeout=2.5)
            second.send("all_reduce", dtype="float32", count=1024, index=0, timeout=20)
            timed_out, aborted = first.reply(30), second.reply(30)
            assert not timed_out["ok"] and timed_out["error"] == "TimeoutError", timed_out
            assert not aborted["ok"] and aborted["error"] == "AbortedError", aborted
            assert aborted["elapsed"] < 5, aborted
            assert f"peer {first_id} gave up on the all_reduce with tag 0" in aborted["message"], aborted
            for r in (timed_out, aborted):
                assert named(r["message"], "all_reduce with tag 0") == idle_ids, r["message"]
                before, after = re.search(r"before=(\w+) after=(\w+)", r["message"]).groups()
                assert before == after  # input intact
            for p in active:
                p.send("update_topology", timeout=2.5)
            for r in [p.reply(30) for p in active]:
                assert not r["ok"] and r["error"] == "TimeoutError", r
                assert named(r["message"], "update_topology") == idle_ids, r["message"]
            assert len(coord.peers) == 4  # with the rule off, nobody was dropped
        finally:
            for c in herd:
                c.close()
            for p in active:
                p.cleanup()


def test_peers_waiting_in_different_calls_are_not_dropped():
    with pcomm.Coordinator(straggler_timeout=2.0) as coord:
        active = [PeerProcess(coord.address) for _ in range(3)]
        try:
            connect_all(active)
            active[0].send("all_reduce", dtype="float32", count=1024, index=0, timeout=3)
            active[1].send("all_reduce", dtype="float32", count=1024, index=1, timeout=3)
            # Both barriers grow older than the straggler timeout (2 s). update_topology waits
            # 0.5 s longer: the all_reduce callers are idle for that half second only, so they
            # are still not dropped (the clock counts idle time, not the barrier's age).
            active[2].send("update_topology", timeout=3.5)
            replies = [p.reply(30) for p in active]
            # The first all_reduce caller to time out gives up, which aborts the op for the other.
            assert sorted(r["error"] for r in replies[:2]) in (["AbortedError", "TimeoutError"], ["TimeoutError"] * 2)
            ids = [p.ok("info")["peer_id"] for p in active]
            timed_out = next(r for r in replies[:2] if r["error"] == "TimeoutError")
            assert named(timed_out["message"], "all_reduce with tag 0") == [ids[2]]
            assert replies[2]["error"] == "TimeoutError"
            assert named(replies[2]["message"], "update_topology") == sorted(ids[:2])
            assert len(coord.peers) == 3  # nobody was idle for the straggler timeout (2 s)
        finally:
            for p in active:
                p.cleanup()
