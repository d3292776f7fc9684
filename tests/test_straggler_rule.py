"""The straggler rule as pure logic (coord/stalls.h): which peers a stalled barrier
drops, when, and why; and the stalls Membership and Collectives report."""

import pcomm._pcomm as core

TOPOLOGY, COLLECTIVE, STATE = 0, 1, 2
F32, SUM, NONE = 3, 1, 0


def test_every_idle_missing_peer_goes_at_once_when_the_timeout_is_reached():
    stall = (TOPOLOGY, 0, 5.0, ["a", "b"], ["c", "d"])
    assert core._stragglers([stall], [], 14.9, 10.0) == {}
    reason = "did not call update_topology within the straggler timeout (10 s) while 2 peer(s) waited in it"
    assert core._stragglers([stall], [], 15.0, 10.0) == {"c": reason, "d": reason}


def test_a_peer_waiting_elsewhere_or_running_an_op_is_not_idle():
    # a waits in update_topology, b in all_reduce tag 3: a mismatch, not a hang.
    mismatch = [(TOPOLOGY, 0, 0.0, ["a"], ["b"]), (COLLECTIVE, 3, 0.0, ["b"], ["a"])]
    assert core._stragglers(mismatch, [], 100.0, 10.0) == {}
    # c runs another op (a started collective): busy, not dropped; d is idle.
    stall = (COLLECTIVE, 1, 0.0, ["a", "b"], ["c", "d"])
    assert core._stragglers([stall], ["c"], 10.0, 10.0) == {
        "d": "did not call all_reduce with tag 1 within the straggler timeout (10 s) while 2 peer(s) waited in it"}


def test_a_peer_that_just_left_another_call_gets_the_full_timeout():
    # c waited in all_reduce tag 2 until its own deadline (t=12): from then it is idle,
    # and the old update_topology stall (since t=0) drops it only at t=22, not at once.
    stall = (TOPOLOGY, 0, 0.0, ["a"], ["c"])
    assert core._stragglers([stall], [], 21.9, 10.0, last_not_idle={"c": 12.0}) == {}
    assert list(core._stragglers([stall], [], 22.0, 10.0, last_not_idle={"c": 12.0})) == ["c"]
    # Seen busy before the stall began: the stall's own start counts.
    assert list(core._stragglers([stall], [], 10.0, 10.0, last_not_idle={"c": -5.0})) == ["c"]


def test_the_oldest_stall_names_the_reason_and_each_peer_is_named_once():
    stalls = [(STATE, 0, 0.0, ["a"], ["c"]), (COLLECTIVE, 0, 1.0, ["a", "b"], ["c"])]
    out = core._stragglers(stalls, [], 20.0, 10.0)
    assert list(out) == ["c"] and "sync_shared_state" in out["c"]


def admitted(m, peers, now=0.0):
    for p in peers:
        m.on_hello(p, f"{p}:1", now)
    m.on_update_topology(peers[0], 1, now)
    for p in peers:
        m.on_links_ready(p, m.epoch, now)


def test_membership_reports_its_barrier_and_drops_stragglers_in_one_epoch():
    m = core._Membership(heartbeat_timeout=100.0)
    admitted(m, ["a"])
    for p in ["b", "c", "d"]:
        m.on_hello(p, f"{p}:1", 0.0)
    m.on_update_topology("a", 2, 0.5)
    for p in ["a", "b", "c", "d"]:
        m.on_links_ready(p, m.epoch, 0.6)
    assert m.ring == ["a", "b", "c", "d"] and m.stall() is None
    m.on_update_topology("a", 3, 1.0)
    m.on_update_topology("b", 1, 2.0)
    assert m.stall() == (TOPOLOGY, 0, 1.0, ["a", "b"], ["c", "d"])
    epoch = m.epoch
    acts = m.drop({"c": "hung", "d": "hung"})
    assert [(a["peer"], a["reason"]) for a in acts if a["kind"] == "drop"] == [("c", "dropped: it hung"),
                                                                               ("d", "dropped: it hung")]
    topologies = [a for a in acts if a["kind"] == "topology"]
    assert {a["peer"] for a in topologies} == {"a", "b"} and m.epoch == epoch + 1 and m.ring == ["a", "b"]
    assert all(a["gone"] == {"c": "dropped: it hung", "d": "dropped: it hung"} for a in topologies)
    # The survivors' barrier completes once the new epoch's links are ready.
    done = [a for p in ["a", "b"] for a in m.on_links_ready(p, m.epoch, 3.0) if a["kind"] == "topology_done"]
    assert sorted(a["peer"] for a in done) == ["a", "b"]


def test_collectives_report_each_tag_stalled_since_its_first_announcement():
    c = core._Collectives()
    ring = ["a", "b", "c"]
    c.on_announce("a", 0, 10, F32, SUM, NONE, 1, ring, True, now=1.0)
    c.on_announce("b", 0, 10, F32, SUM, NONE, 1, ring, True, now=2.0)
    c.on_announce("c", 7, 10, F32, SUM, NONE, 1, ring, True, now=3.0)
    assert sorted(c.stalls()) == [(COLLECTIVE, 0, 1.0, ["a", "b"], ["c"]), (COLLECTIVE, 7, 3.0, ["c"], ["a", "b"])]
    c.on_announce("c", 0, 10, F32, SUM, NONE, 1, ring, True, now=4.0)  # tag 0 starts: no longer stalled
    assert c.stalls() == [(COLLECTIVE, 7, 3.0, ["c"], ["a", "b"])]
