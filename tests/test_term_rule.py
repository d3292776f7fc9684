"""The term rule (coord/terms.h) as a pure function, and the coordinator's state file:
when a new coordinator forms its term from the peers that re-register, with what ring
and epoch; and that a restart with a state_dir never reuses a term."""

import pytest

import pcomm
from pcomm import _pcomm

RING = ["a", "b", "c", "d"]


def reg(peer, term=1, epoch=5, ring=RING):
    return (peer, term, epoch, ring)


def test_forms_at_once_when_the_whole_last_ring_is_back():
    form, ring, epoch, reason = _pcomm._decide_term([reg(p) for p in ("d", "b", "a", "c")], 0.0, 0.0, 2.0)
    assert form and ring == RING and epoch == 6
    assert reason == "all 4 peers of the last ring are back"


def test_a_majority_waits_for_the_window():
    three = [reg(p) for p in ("a", "c", "d")]
    form, _, _, reason = _pcomm._decide_term(three, 0.0, 1.99, 2.0)
    assert not form and reason == "gathering: 3 of the last ring's 4 peers are back"
    form, ring, epoch, reason = _pcomm._decide_term(three, 0.0, 2.0, 2.0)
    assert form and ring == ["a", "c", "d"] and epoch == 6
    assert reason.startswith("a majority (3 of the last ring's 4 peers are back)")


def test_half_is_not_a_majority_and_waits_three_windows():
    two = [reg("a"), reg("b")]
    assert not _pcomm._decide_term(two, 0.0, 5.9, 2.0)[0]
    form, ring, _, reason = _pcomm._decide_term(two, 0.0, 6.0, 2.0)
    assert form and ring == ["a", "b"] and "fewer than a majority" in reason


def test_the_newest_ring_counts_and_newcomers_go_last_by_id():
    # "b" knew an older ring; "a" the newest (term 2, epoch 1): its ring is the last one.
    regs = [reg("b", term=1, epoch=9, ring=["b", "x"]), reg("a", term=2, epoch=1, ring=["a", "b"]),
            reg("e", term=2, epoch=1, ring=["a", "b", "e"])]
    form, ring, epoch, _ = _pcomm._decide_term(regs, 0.0, 0.0, 2.0)
    assert form and ring == ["a", "b", "e"] and epoch == 10  # one past the highest epoch reported


def test_nobody_registered_forms_nothing():
    assert _pcomm._decide_term([], 0.0, 100.0, 2.0) == (False, [], 0, "no peer has re-registered")


def test_a_restart_with_a_state_dir_never_reuses_a_term(tmp_path):
    terms = []
    for _ in range(3):
        with pcomm.Coordinator(state_dir=str(tmp_path)) as coord:
            terms.append((coord.term, coord.role, coord.run_id))
    # A new run starts at term 1; each restart takes the next term (next_term: the
    # count in the high bits goes up by one, the low bits are random).
    assert terms[0][0] == 1 and [t >> 32 for t, _, _ in terms] == [0, 1, 2]
    assert terms[0][0] < terms[1][0] < terms[2][0]
    assert all(role == "serving" for _, role, _ in terms)
    assert len({r for _, _, r in terms}) == 1  # the same incarnation goes on
    text = (tmp_path / "coordinator.state").read_text()
    assert text.startswith("pcomm coordinator state 1\n") and f"term {terms[2][0]}\n" in text


def test_a_state_file_of_another_run_or_garbage_is_refused(tmp_path):
    with pcomm.Coordinator(state_dir=str(tmp_path), run="one"):
        pass
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="belongs to run 'one', not 'two'"):
        pcomm.Coordinator(state_dir=str(tmp_path), run="two")
    (tmp_path / "coordinator.state").write_text("not a state file\n")
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="coordinator.state"):
        pcomm.Coordinator(state_dir=str(tmp_path), run="one")


def test_failover_arguments_are_checked():
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="peer_of"):
        pcomm.Coordinator(standby=True)
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="coordinator_grace"):
        pcomm.Communicator("127.0.0.1:1", coordinator_grace=-1)
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="list of them"):
        pcomm.Communicator([])
    standby = pcomm.Coordinator(standby=True, peer_of="127.0.0.1:1")
    assert (standby.term, standby.role) == (0, "standby")


def test_term_numbers_grow_and_differ_in_their_random_low_bits():
    tie = 1 << 32
    assert _pcomm._next_term(0, 0) == tie + 1  # never a 0 tie: that is the "no term" value's
    first = _pcomm._next_term(0, 12345)
    assert first == tie + 12345 % (tie - 1) + 1
    # Two coordinators forming a term from the same knowledge get different numbers
    # (unless their random draws match), both above every term known.
    a, b = _pcomm._next_term(first, 7), _pcomm._next_term(first, 8)
    assert a != b and min(a, b) > first and a >> 32 == b >> 32 == 2
    assert _pcomm._next_term(max(a, b), 0) > max(a, b)
    assert _pcomm._next_term(2**63, 2**64 - 1) > 2**63
