"""The coordinator's decisions as pure logic: made-up times, no sockets (STYLE.md #4).

Membership returns actions as dicts {"kind", "peer", ...}; these tests check exactly
which messages would be sent and to whom."""

import pcomm._pcomm as core
import pytest

HB = 1.0  # heartbeat timeout used throughout


def kinds(actions, kind):
    return [a for a in actions if a["kind"] == kind]


def make_ready(m, now):
    """Every ring member reports its links ready for the current epoch."""
    out = []
    for p in m.ring:
        out += m.on_links_ready(p, m.epoch, now)
    return out


def cluster(n, now=0.0):
    """A membership with n accepted peers a, b, c... in a ready epoch."""
    m = core._Membership(HB)
    names = [chr(ord("a") + i) for i in range(n)]
    m.on_hello(names[0], "h:1", now)
    make_ready(m, now)
    for name in names[1:]:
        m.on_hello(name, "h:1", now)
        for p in list(m.ring):
            m.on_update_topology(p, 1, now)
        make_ready(m, now)
    assert m.ring == names and m.epoch_ready
    return m


def test_first_peer_accepted_at_once():
    m = core._Membership(HB)
    acts = m.on_hello("a", "10.0.0.1:5", 0.0)
    assert kinds(acts, "welcome") == [{"kind": "welcome", "peer": "a", "accepted": True}]
    topo = kinds(acts, "topology")
    assert topo == [{"kind": "topology", "peer": "a", "epoch": 1, "ring": ["a"], "gone": {}}]
    assert not m.epoch_ready
    acts = m.on_links_ready("a", 1, 0.1)
    assert kinds(acts, "epoch_ready") == [{"kind": "epoch_ready", "peer": "a", "epoch": 1}]
    assert m.epoch_ready


def test_later_peers_wait_pending_until_barrier():
    m = cluster(2)
    acts = m.on_hello("c", "h:3", 1.0)
    assert kinds(acts, "welcome") == [{"kind": "welcome", "peer": "c", "accepted": False}]
    assert kinds(acts, "pending_changed")[0]["pending"] == 1
    assert m.ring == ["a", "b"]
    # Half the barrier: nothing happens yet.
    assert m.on_update_topology("a", 7, 1.1) == []
    acts = m.on_update_topology("b", 9, 1.2)
    topo = kinds(acts, "topology")
    assert [t["peer"] for t in topo] == ["a", "b", "c"]
    assert all(t["ring"] == ["a", "b", "c"] and t["epoch"] == 3 for t in topo)
    assert kinds(acts, "topology_done") == [], "callers are released only once links are ready"
    m.on_links_ready("a", 3, 1.3)
    m.on_links_ready("c", 3, 1.3)
    acts = m.on_links_ready("b", 3, 1.4)
    assert len(kinds(acts, "epoch_ready")) == 3
    done = kinds(acts, "topology_done")
    assert sorted((d["peer"], d["seq"], d["epoch"]) for d in done) == [("a", 7, 3), ("b", 9, 3)]
    assert m.pending_count == 0


def test_barrier_without_pending_is_one_round_and_keeps_epoch():
    m = cluster(3)
    epoch = m.epoch
    m.on_update_topology("a", 2, 5.0)
    m.on_update_topology("b", 2, 5.0)
    acts = m.on_update_topology("c", 2, 5.0)
    assert sorted(a["peer"] for a in kinds(acts, "topology_done")) == ["a", "b", "c"]
    assert kinds(acts, "topology") == []
    assert m.epoch == epoch


def test_cancelled_call_does_not_count_toward_the_barrier():
    m = cluster(2)
    m.on_update_topology("a", 1, 1.0)
    m.on_cancel_update_topology("a", 1)  # a's call timed out
    assert kinds(m.on_update_topology("b", 1, 2.0), "topology_done") == []
    acts = m.on_update_topology("a", 2, 2.1)
    assert sorted((d["peer"], d["seq"]) for d in kinds(acts, "topology_done")) == [("a", 2), ("b", 1)]
    # A stale cancel (older sequence) leaves a newer call in place.
    m.on_update_topology("a", 3, 3.0)
    m.on_cancel_update_topology("a", 2)
    assert [d["peer"] for d in kinds(m.on_update_topology("b", 2, 3.1), "topology_done")] == ["a", "b"]


def test_lost_peer_starts_new_epoch_with_survivors():
    m = cluster(3)
    epoch = m.epoch
    acts = m.on_lost("b", 2.0, "lost: connection reset")
    topo = kinds(acts, "topology")
    assert [t["peer"] for t in topo] == ["a", "c"]
    assert all(t["ring"] == ["a", "c"] and t["epoch"] == epoch + 1 for t in topo)
    assert all(t["gone"] == {"b": "lost: connection reset"} for t in topo), "survivors are told why"
    assert kinds(acts, "drop") == [], "a lost peer's connection is already gone"
    # The next epoch's Topology tells only what changed since.
    acts = m.on_lost("c", 3.0, "left")
    assert [(t["ring"], t["gone"]) for t in kinds(acts, "topology")] == [(["a"], {"c": "left"})]


def test_heartbeat_expiry_drops_exactly_the_silent_peer():
    m = cluster(3, now=0.0)
    m.on_heard("a", 0.9)
    m.on_heard("c", 0.9)
    assert m.on_tick(1.0) == [], "nobody is past the deadline yet"
    acts = m.on_tick(1.05)
    drops = kinds(acts, "drop")
    assert [d["peer"] for d in drops] == ["b"]
    assert "no heartbeat" in drops[0]["reason"]
    assert m.ring == ["a", "c"]
    assert [t["gone"] for t in kinds(acts, "topology")] == [{"b": drops[0]["reason"]}] * 2


def test_barrier_completes_over_survivors_when_a_waiter_dies():
    m = cluster(3)
    m.on_update_topology("a", 4, 1.0)
    m.on_update_topology("b", 4, 1.0)
    m.on_lost("c", 1.1)
    acts = make_ready(m, 1.2)
    done = kinds(acts, "topology_done")
    assert sorted(d["peer"] for d in done) == ["a", "b"]
    assert all(d["epoch"] == m.epoch for d in done)


def test_pending_admitted_at_once_when_ring_empties():
    m = cluster(1)
    m.on_hello("b", "h:2", 1.0)
    acts = m.on_lost("a", 1.5)
    topo = kinds(acts, "topology")
    assert [(t["peer"], t["ring"]) for t in topo] == [("b", ["b"])]


def test_pending_peer_lost_only_changes_count():
    m = cluster(2)
    m.on_hello("c", "h:3", 1.0)
    epoch = m.epoch
    acts = m.on_lost("c", 1.1)
    assert kinds(acts, "topology") == []
    assert kinds(acts, "pending_changed")[0]["pending"] == 0
    assert m.epoch == epoch


def test_link_failure_drops_the_later_joiner():
    m = cluster(2)
    m.on_hello("c", "h:3", 1.0)
    m.on_update_topology("a", 1, 1.0)
    m.on_update_topology("b", 1, 1.0)
    epoch = m.epoch
    acts = m.on_links_failed("b", epoch, "c", 1.1)
    assert [d["peer"] for d in kinds(acts, "drop")] == ["c"]
    assert all("could not open a data link" in t["gone"]["c"] for t in kinds(acts, "topology"))
    assert m.ring == ["a", "b"] and m.epoch == epoch + 1


def test_stale_link_reports_are_ignored():
    m = cluster(2)
    m.on_lost("b", 1.0)
    assert m.on_links_ready("a", m.epoch - 1, 1.1) == []
    assert m.on_links_failed("a", m.epoch - 1, "b", 1.1) == []
    assert not m.epoch_ready


def test_ring_order_keeps_existing_and_appends_by_join_order():
    m = cluster(2)
    for name in ["z", "y", "x"]:  # join order z, y, x
        m.on_hello(name, "h:9", 2.0)
    m.on_update_topology("a", 1, 2.0)
    acts = m.on_update_topology("b", 1, 2.0)
    assert kinds(acts, "topology")[0]["ring"] == ["a", "b", "z", "y", "x"]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_epochs_only_grow(n):
    m = cluster(n)
    seen = [m.epoch]
    m.on_hello("late", "h:1", 3.0)
    for p in list(m.ring):
        m.on_update_topology(p, 2, 3.0)
    seen.append(m.epoch)
    m.on_lost(m.ring[0], 3.5)
    seen.append(m.epoch)
    assert seen == sorted(seen) and len(set(seen)) == 3
