"""The CRDTs as pure functions: merge is commutative, associative and idempotent
(hypothesis), deltas may arrive in any order or twice, and each type's conflict rule
(last writer wins, add wins, per-writer totals) holds."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcomm.crdt.types import TYPES, GCounter, LWWMap, ORSet, PNCounter

WRITERS = ["wa", "wb", "wc"]


def delta_strategy(type_name):
    if type_name == "lww":
        one = st.fixed_dictionaries({
            "key": st.sampled_from(["a", "b", "c"]),
            "ts": st.tuples(st.integers(0, 5), st.integers(0, 3)).map(list),
            "value": st.integers(-3, 3),
        })
        return st.one_of(one, one.map(lambda d: {"key": d["key"], "ts": d["ts"], "deleted": True}))
    if type_name == "orset":
        return st.one_of(
            st.fixed_dictionaries({"add": st.sampled_from(["x", "y", 1])}),
            st.fixed_dictionaries({
                "remove": st.sampled_from(["x", "y", 1]),
                "tags": st.lists(st.tuples(st.sampled_from(WRITERS), st.integers(1, 6)).map(list), max_size=3),
            }),
        )
    if type_name == "pn":
        return st.fixed_dictionaries({"p": st.integers(0, 50), "n": st.integers(0, 50)})
    return st.fixed_dictionaries({"p": st.integers(0, 50)})


def histories(data, type_name, count):
    """``count`` replicas' write histories, drawn from one set of deltas: as in a real
    store, one (writer, seq) always names the same delta."""
    universe = data.draw(st.dictionaries(st.tuples(st.sampled_from(WRITERS), st.integers(1, 6)), delta_strategy(type_name), max_size=10))
    keys = sorted(universe)
    out = []
    for _ in range(count):
        chosen = data.draw(st.lists(st.sampled_from(keys), max_size=8)) if keys else []
        out.append([(w, s, universe[(w, s)]) for w, s in chosen])
    return out


def build(type_name, ops):
    obj = TYPES[type_name]()
    for writer, seq, delta in ops:
        obj.apply(delta, writer, seq)
    return obj


def merged(type_name, *parts):
    out = TYPES[type_name]()
    for p in parts:
        out.merge(p)
    return out.state()


@pytest.mark.parametrize("type_name", ["lww", "orset", "pn", "g"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(type_name, data):
    a, b, c = (build(type_name, h) for h in histories(data, type_name, 3))
    assert merged(type_name, a, b) == merged(type_name, b, a)
    ab_c, a_bc = TYPES[type_name](), TYPES[type_name]()
    ab_c.merge(a); ab_c.merge(b); ab_c.merge(c)
    bc = TYPES[type_name](); bc.merge(b); bc.merge(c)
    a_bc.merge(a); a_bc.merge(bc)
    assert ab_c.state() == a_bc.state()
    twice = TYPES[type_name](); twice.merge(a); twice.merge(a)
    assert twice.state() == merged(type_name, a)
    # Merging a replica's own state into it changes nothing.
    before = a.state()
    a.merge(copy.deepcopy(a))
    assert a.state() == before


@pytest.mark.parametrize("type_name", ["lww", "orset", "pn", "g"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_applying_deltas_in_any_order_or_twice_gives_the_same_state(type_name, data):
    ops = list({(w, s): (w, s, d) for w, s, d in histories(data, type_name, 1)[0]}.values())
    shuffled = data.draw(st.permutations(ops))
    doubled = shuffled + data.draw(st.lists(st.sampled_from(ops), max_size=4)) if ops else []
    assert build(type_name, ops).state() == build(type_name, shuffled).state() == build(type_name, doubled).state()
    # Applying deltas one by one equals merging single-delta states.
    parts = [build(type_name, [op]) for op in ops]
    assert merged(type_name, *parts) == build(type_name, ops).state()


def test_lww_newest_timestamp_wins_and_writer_breaks_ties():
    m = LWWMap()
    m.apply({"key": "lr", "ts": [10, 0], "value": 1}, "wa", 1)
    m.apply({"key": "lr", "ts": [9, 5], "value": 2}, "wb", 1)
    assert m.value() == {"lr": 1}
    m.apply({"key": "lr", "ts": [10, 0], "value": 3}, "wb", 2)  # same time: writer "wb" > "wa"
    assert m.value() == {"lr": 3}
    m.apply({"key": "lr", "ts": [11, 0], "deleted": True}, "wa", 2)
    assert m.value() == {}
    m.apply({"key": "lr", "ts": [10, 9], "value": 4}, "wc", 1)  # older than the delete
    assert m.value() == {}


def test_orset_add_wins_over_a_concurrent_remove():
    a, b = ORSet(), ORSet()
    a.apply({"add": "shard-1"}, "wa", 1)
    b.merge(a)
    # Concurrently: b removes the add it saw; a adds the element again.
    b.apply({"remove": "shard-1", "tags": [list(t) for t in b.tags_of("shard-1")]}, "wb", 1)
    a.apply({"add": "shard-1"}, "wa", 2)
    assert b.value() == [] and a.value() == ["shard-1"]
    a.merge(b)
    b.merge(a)
    assert a.value() == b.value() == ["shard-1"]
    assert a.state() == b.state()


def test_counters_sum_per_writer_totals():
    pn, g = PNCounter(), GCounter()
    pn.apply({"p": 5, "n": 0}, "wa", 1)
    pn.apply({"p": 5, "n": 2}, "wa", 2)
    pn.apply({"p": 1, "n": 0}, "wb", 1)
    pn.apply({"p": 5, "n": 0}, "wa", 1)  # an old total arriving late changes nothing
    assert pn.value() == 4
    g.apply({"p": 3}, "wa", 1)
    g.apply({"p": 7}, "wb", 1)
    g.apply({"p": 2}, "wa", 1)
    assert g.value() == 10
