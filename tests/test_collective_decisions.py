"""The coordinator's collective decisions as pure logic (no sockets): when an op starts,
commits, aborts, and what a changed membership does to it."""

import pcomm._pcomm as core

RING = ["a", "b", "c"]
F32, SUM, NONE = 3, 1, 0
COMMIT, TIMEOUT, PEER_LOST, ABORTED, INVALID, PROTOCOL = 0, 1, 2, 3, 4, 5


def kinds(actions, kind):
    return [a for a in actions if a["kind"] == kind]


def announce_all(c, tag=0, ring=RING, epoch=1, ready=True, count=10):
    out = []
    for p in ring:
        out += c.on_announce(p, tag, count, F32, SUM, NONE, epoch, ring, ready)
    return out


def test_starts_only_when_everyone_announced_in_a_ready_epoch():
    c = core._Collectives()
    assert c.on_announce("a", 0, 10, F32, SUM, NONE, 1, RING, True) == []
    assert c.on_announce("b", 0, 10, F32, SUM, NONE, 1, RING, True) == []
    acts = c.on_announce("c", 0, 10, F32, SUM, NONE, 1, RING, True)
    gos = kinds(acts, "coll_go")
    assert [g["peer"] for g in gos] == RING
    assert len({g["op_id"] for g in gos}) == 1 and gos[0]["epoch"] == 1
    assert c.running == 1


def test_waits_for_the_epoch_to_be_ready():
    c = core._Collectives()
    assert kinds(announce_all(c, ready=False), "coll_go") == []
    gos = kinds(c.on_view_changed(1, RING, True), "coll_go")
    assert len(gos) == 3


def test_commit_only_when_all_succeeded_and_same_for_all():
    c = core._Collectives()
    op_id = kinds(announce_all(c), "coll_go")[0]["op_id"]
    assert c.on_report("a", 0, op_id, COMMIT, "", 1, RING, True) == []
    assert c.on_report("b", 0, op_id, COMMIT, "", 1, RING, True) == []
    acts = c.on_report("c", 0, op_id, COMMIT, "", 1, RING, True)
    results = kinds(acts, "coll_result")
    assert sorted(r["peer"] for r in results) == RING
    assert all(r["outcome"] == COMMIT and r["op_id"] == op_id for r in results)
    assert not c.busy


def test_one_failure_aborts_everyone_and_relinks():
    c = core._Collectives()
    op_id = kinds(announce_all(c), "coll_go")[0]["op_id"]
    c.on_report("a", 0, op_id, COMMIT, "", 1, RING, True)
    acts = c.on_report("b", 0, op_id, PROTOCOL, "connection reset", 1, RING, True)
    results = kinds(acts, "coll_result")
    assert sorted(r["peer"] for r in results) == RING
    assert all(r["outcome"] == PEER_LOST and "connection reset" in r["message"] for r in results)
    assert kinds(acts, "relink"), "links of an aborted op must be rebuilt"
    # A late success report for the decided op changes nothing.
    assert c.on_report("c", 0, op_id, COMMIT, "", 1, RING, True) == []


def test_a_timeout_elsewhere_is_an_abort_here():
    c = core._Collectives()
    op_id = kinds(announce_all(c), "coll_go")[0]["op_id"]
    acts = c.on_report("c", 0, op_id, TIMEOUT, "timed out after 1 s", 1, RING, True)
    assert {r["outcome"] for r in kinds(acts, "coll_result")} == {ABORTED}


def test_mismatch_fails_everyone_with_the_difference():
    c = core._Collectives()
    c.on_announce("a", 3, 10, F32, SUM, NONE, 1, RING, True)
    c.on_announce("b", 3, 10, F32, SUM, NONE, 1, RING, True)
    acts = c.on_announce("c", 3, 10, 4, SUM, NONE, 1, RING, True)  # float64
    results = kinds(acts, "coll_result")
    assert sorted(r["peer"] for r in results) == RING
    assert all(r["outcome"] == INVALID for r in results)
    assert "differ in dtype" in results[0]["message"] and "float64" in results[0]["message"]
    assert kinds(acts, "coll_go") == [] and not c.busy


def test_epoch_change_aborts_running_ops_with_peer_lost():
    c = core._Collectives()
    announce_all(c)
    acts = c.on_view_changed(2, ["a", "c"], False)
    results = kinds(acts, "coll_result")
    assert sorted(r["peer"] for r in results) == ["a", "c"]
    assert all(r["outcome"] == PEER_LOST and "b" in r["message"] for r in results)
    assert kinds(acts, "relink") == [], "the new epoch already brings new links"


def test_a_peer_lost_before_the_start_leaves_the_op():
    c = core._Collectives()
    c.on_announce("a", 0, 10, F32, SUM, NONE, 1, RING, True)
    c.on_announce("c", 0, 10, F32, SUM, NONE, 1, RING, True)
    assert c.on_view_changed(2, ["a", "c"], False) == []
    gos = kinds(c.on_view_changed(2, ["a", "c"], True), "coll_go")
    assert [g["peer"] for g in gos] == ["a", "c"] and gos[0]["epoch"] == 2


def test_withdrawal_before_the_start_aborts_those_who_announced():
    c = core._Collectives()
    c.on_announce("a", 0, 10, F32, SUM, NONE, 1, RING, True)
    c.on_announce("b", 0, 10, F32, SUM, NONE, 1, RING, True)
    acts = c.on_report("b", 0, 0, TIMEOUT, "timed out", 1, RING, True)
    results = kinds(acts, "coll_result")
    assert sorted(r["peer"] for r in results) == ["a", "b"]
    assert all(r["outcome"] == ABORTED for r in results)
    assert not c.busy


def test_duplicate_announce_and_strangers_are_refused():
    c = core._Collectives()
    c.on_announce("a", 0, 10, F32, SUM, NONE, 1, RING, True)
    dup = c.on_announce("a", 0, 10, F32, SUM, NONE, 1, RING, True)
    assert kinds(dup, "coll_result")[0]["outcome"] == INVALID
    stranger = c.on_announce("z", 0, 10, F32, SUM, NONE, 1, RING, True)
    assert kinds(stranger, "coll_result")[0]["outcome"] == INVALID


def test_ops_start_in_completion_order_with_increasing_ids():
    c = core._Collectives()
    for p in RING[:2]:
        c.on_announce(p, 1, 10, F32, SUM, NONE, 1, RING, True)
    first = kinds(announce_all(c, tag=2), "coll_go")
    second = kinds(c.on_announce("c", 1, 10, F32, SUM, NONE, 1, RING, True), "coll_go")
    assert first[0]["tag"] == 2 and second[0]["tag"] == 1
    assert second[0]["op_id"] > first[0]["op_id"]
