"""Discovery's pure parts: signed records, the record store and the routing table."""

import base64
import json

import pytest


from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as create_secp256k1_key_pair
from libp2p.peer.id import ID

from pcomm.discovery.records import check_proof, dht_key, kSignaturePrefix, sign_record, verify_record
from pcomm.discovery.routing import Contact, RecordStore, RoutingTable, kMaxRecordsPerKey, node_id
from pcomm.errors import InvalidArgumentError, InvalidRecordError

NOW = 1_800_000_000.0


def signed(key=None, **over):
    key = key or create_new_key_pair().private_key
    args = dict(kind="coordinator", run="llama", addrs=["10.0.0.1:29500"], seq=1, expires=NOW + 60)
    args.update(over)
    return sign_record(key, **args)


def forge(payload: dict, key) -> bytes:
    """A correctly signed envelope around an arbitrary payload."""
    text = json.dumps(payload)
    sig = key.sign(kSignaturePrefix + text.encode())
    env = {"p": text, "k": base64.b64encode(key.get_public_key().serialize()).decode(), "s": base64.b64encode(sig).decode()}
    return json.dumps(env).encode()


def test_round_trip_keeps_every_field():
    key = create_new_key_pair().private_key
    r = signed(key, addrs=["10.0.0.1:29500", "10.0.0.2:29500"], seq=7)
    back = verify_record(r.raw, NOW)
    assert back == r
    assert back.publisher == ID.from_pubkey(key.get_public_key()).to_base58()
    assert back.addrs == ("10.0.0.1:29500", "10.0.0.2:29500") and back.seq == 7 and back.expires == NOW + 60


def test_tampered_payload_fails_the_signature():
    r = signed()
    env = json.loads(r.raw)
    env["p"] = env["p"].replace("10.0.0.1", "10.6.6.6")
    with pytest.raises(InvalidRecordError, match="bad signature"):
        verify_record(json.dumps(env).encode(), NOW)


def test_record_claiming_another_publisher_is_forged():
    mine, victim = create_new_key_pair(), create_new_key_pair()
    payload = json.loads(json.loads(signed(mine.private_key).raw)["p"])
    payload["publisher"] = ID.from_pubkey(victim.public_key).to_base58()
    with pytest.raises(InvalidRecordError, match="forged"):
        verify_record(forge(payload, mine.private_key), NOW)


def test_key_swapped_for_another_fails_the_signature():
    r = signed()
    env = json.loads(r.raw)
    env["k"] = base64.b64encode(create_new_key_pair().public_key.serialize()).decode()
    with pytest.raises(InvalidRecordError, match="bad signature"):
        verify_record(json.dumps(env).encode(), NOW)


def test_unsigned_expired_oversized_and_malformed_are_rejected():
    r = signed()
    env = json.loads(r.raw)
    env["s"] = ""
    with pytest.raises(InvalidRecordError, match="unsigned"):
        verify_record(json.dumps(env).encode(), NOW)
    with pytest.raises(InvalidRecordError, match="expired"):
        verify_record(r.raw, NOW + 61)
    with pytest.raises(InvalidRecordError, match="over the 4096-byte limit"):
        verify_record(b"{" + b" " * 5000 + b"}", NOW)
    for junk in [b"", b"\xff\xfe", b"[]", b'{"p": 1, "k": "", "s": ""}', b'{"p": "x", "k": "!!", "s": "AA=="}', "not bytes"]:
        with pytest.raises(InvalidRecordError):
            verify_record(junk, NOW)
    key = create_new_key_pair().private_key
    good = json.loads(json.loads(r.raw)["p"])
    for field, value in [("kind", "boss"), ("run", ""), ("addrs", []), ("addrs", "1.2.3.4:5"), ("seq", -1), ("seq", True), ("expires", "soon")]:
        payload = dict(good, publisher=ID.from_pubkey(key.get_public_key()).to_base58(), **{field: value})
        with pytest.raises(InvalidRecordError, match="malformed"):
            verify_record(forge(payload, key), NOW)


def test_a_record_may_not_claim_to_live_for_days():
    with pytest.raises(InvalidRecordError, match="over the 3600 s limit"):
        verify_record(signed(expires=NOW + 24 * 3600).raw, NOW)
    assert verify_record(signed(expires=NOW + 3600).raw, NOW).expires == NOW + 3600


def test_a_seq_from_the_future_cannot_pin_the_newest_slot():
    # seq is the publish time in ns; the measured attack used 2**62 (the year 2116).
    for seq in (2**62, int((NOW + 61) * 1e9)):
        with pytest.raises(InvalidRecordError, match="more than 60 s ahead of this node's clock"):
            verify_record(signed(seq=seq).raw, NOW)
    assert verify_record(signed(seq=int((NOW + 59) * 1e9)).raw, NOW).seq == int((NOW + 59) * 1e9)


def test_only_ed25519_keys_sign_records():
    with pytest.raises(InvalidArgumentError, match="Ed25519"):
        signed(create_secp256k1_key_pair().private_key)


def test_bad_arguments_say_what_to_fix():
    with pytest.raises(InvalidArgumentError, match="kind must be one of"):
        signed(kind="master")
    with pytest.raises(InvalidArgumentError, match="without spaces"):
        signed(run="my run")
    with pytest.raises(InvalidArgumentError, match="1 to 16 addresses"):
        signed(addrs=[f"h:{i}" for i in range(17)])


def test_store_keeps_one_record_per_publisher_newest_seq_wins():
    store = RecordStore()
    key = create_new_key_pair().private_key
    k = dht_key("coordinator", "llama")
    assert store.put(k, signed(key, seq=5), NOW)
    assert not store.put(k, signed(key, seq=4, addrs=["old:1"]), NOW)
    assert not store.put(k, signed(key, seq=5, addrs=["same:1"]), NOW)
    assert store.put(k, signed(key, seq=6, addrs=["new:1"]), NOW)
    other = signed(seq=1, addrs=["other:1"])
    assert store.put(k, other, NOW)
    assert sorted(r.addrs[0] for r in store.get(k, NOW)) == ["new:1", "other:1"]
    assert store.get(dht_key("relay", "llama"), NOW) == []


def test_store_drops_records_at_expiry_and_caps_publishers_per_key():
    store = RecordStore()
    k = dht_key("peer", "llama")
    short = signed(kind="peer", expires=NOW + 1)
    store.put(k, short, NOW)
    assert len(store.get(k, NOW + 0.5)) == 1
    assert store.get(k, NOW + 1.0) == [] and len(store) == 0
    for i in range(kMaxRecordsPerKey + 5):
        store.put(k, signed(kind="peer", expires=NOW + 100 + i), NOW)
    kept = store.get(k, NOW)
    assert len(kept) == kMaxRecordsPerKey
    assert max(r.expires for r in kept) == NOW + 100 + kMaxRecordsPerKey - 1  # the longest-lived went


def contact(i: int) -> Contact:
    pid = ID.from_pubkey(create_new_key_pair().public_key)
    return Contact(pid.to_base58(), (f"/ip4/10.0.0.{i}/tcp/4001",), node_id(pid.to_bytes()))


def test_routing_table_orders_by_xor_distance_and_forgets_failures():
    table = RoutingTable(own_id=0, bucket_size=20)
    contacts = [contact(i) for i in range(30)]
    for c in contacts:
        table.seen(c)
    target = contacts[3].id
    want = sorted((c for c in contacts if table._bucket(c.id).count(c)), key=lambda c: c.id ^ target)[:5]
    assert [c.peer_id for c in table.closest(target, 5)] == [c.peer_id for c in want]
    assert table.closest(target, 1)[0].peer_id == contacts[3].peer_id
    table.failed(contacts[3].peer_id)
    assert contacts[3].peer_id not in [c.peer_id for c in table.closest(target, 30)]


def test_a_full_bucket_refuses_newcomers_and_keeps_its_old_contacts():
    table = RoutingTable(own_id=0, bucket_size=2)
    # With own id 0 the bucket is the bit length of the id: ids 4..7 share bucket 3.
    old = [Contact("a", ("x",), 4), Contact("b", ("x",), 5)]
    for c in old:
        assert table.seen(c)
    assert not table.seen(Contact("c", ("x",), 6))
    assert table.seen(Contact("a", ("y",), 4))  # a known contact is refreshed, not refused
    assert sorted(c.peer_id for c in table.closest(6, 5)) == ["a", "b"]
    table.failed("b")
    assert table.seen(Contact("c", ("x",), 6))


def test_deeply_nested_json_is_malformed_not_a_crash():
    from pcomm.discovery.signed import parse_json

    deep = b"[" * 100000 + b"]" * 100000
    with pytest.raises(InvalidRecordError, match="malformed"):
        verify_record(b'{"p":' + b"[" * 2000 + b"]" * 2000 + b',"k":"","s":""}', NOW)
    with pytest.raises(ValueError, match="nested"):
        parse_json(deep)
    with pytest.raises(ValueError, match="deeper than 32"):
        parse_json(b"[" * 40 + b"]" * 40)
    assert parse_json(b"[" * 32 + b"]" * 32) is not None


def test_an_expiry_too_large_for_a_float_is_malformed():
    key = create_new_key_pair()
    payload = json.loads(json.loads(signed(key.private_key).raw)["p"])
    payload["expires"] = 10**400
    with pytest.raises(InvalidRecordError, match="malformed"):
        verify_record(forge(payload, key.private_key), NOW)


def test_cancellation_is_found_inside_exception_groups():
    import trio

    from pcomm.discovery._runner import has_cancelled

    async def cancelled():
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.sleep(1)
            except trio.Cancelled as e:
                return e

    c = trio.run(cancelled)
    assert has_cancelled(BaseExceptionGroup("outer", [ValueError(), BaseExceptionGroup("inner", [c])]))
    assert not has_cancelled(ExceptionGroup("outer", [ValueError(), KeyError()]))


SECRET = b"0123456789abcdef-run-secret"
OTHER_SECRET = b"fedcba9876543210-run-secret"


def reseal(record, key, **changes) -> bytes:
    """``record``'s payload with ``changes`` (its proof kept), signed again with ``key``:
    what a holder of ``key`` can make without the run secret."""
    payload = json.loads(json.loads(record.raw)["p"])
    payload.update(changes)
    return forge(payload, key)


def test_a_record_proves_the_run_secret_only_with_every_field_as_signed():
    key = create_new_key_pair().private_key
    r = signed(key, secret=SECRET)
    check_proof(verify_record(r.raw, NOW), SECRET)
    # Each field changed by a holder of the publisher key, the proof kept: refused.
    for field, value in [("kind", "relay"), ("run", "other-run"), ("addrs", ["6.6.6.6:1"]), ("seq", 2), ("expires", NOW + 61)]:
        tampered = verify_record(reseal(r, key, **{field: value}), NOW)  # signed correctly ...
        with pytest.raises(InvalidRecordError, match="does not prove this run secret"):
            check_proof(tampered, SECRET)  # ... but not proven
    # Another publisher copying the proof into its own record: refused.
    thief = create_new_key_pair()
    stolen = reseal(r, thief.private_key, publisher=ID.from_pubkey(thief.public_key).to_base58())
    with pytest.raises(InvalidRecordError, match="does not prove this run secret"):
        check_proof(verify_record(stolen, NOW), SECRET)


def test_a_proof_made_for_another_run_kind_or_secret_is_refused():
    key = create_new_key_pair().private_key
    with pytest.raises(InvalidRecordError, match="does not prove this run secret"):
        check_proof(signed(key, secret=OTHER_SECRET), SECRET)
    # A proof taken from the same publisher's record of another run or kind.
    for other in (signed(key, run="other-run", secret=SECRET), signed(key, kind="relay", secret=SECRET)):
        proof = json.loads(json.loads(other.raw)["p"])["proof"]
        forged = verify_record(reseal(signed(key), key, proof=proof), NOW)
        with pytest.raises(InvalidRecordError, match="does not prove this run secret"):
            check_proof(forged, SECRET)


def test_readers_with_and_without_the_secret_believe_different_records():
    proven, plain = signed(secret=SECRET), signed()
    with pytest.raises(InvalidRecordError, match="carries no proof of the run secret"):
        check_proof(plain, SECRET)
    with pytest.raises(InvalidRecordError, match="pass secret= or set PCOMM_SECRET_FILE"):
        check_proof(proven, None)
    check_proof(plain, None)
    check_proof(proven, SECRET)
    key = create_new_key_pair().private_key
    with pytest.raises(InvalidRecordError, match="proof must be 64 lowercase hex digits"):
        verify_record(reseal(signed(key), key, proof="not a tag"), NOW)


def test_publishing_a_record_that_nodes_would_refuse_is_refused_up_front():
    from pcomm.discovery import Node

    with pytest.raises(InvalidArgumentError, match="live over 3600 s"):
        Node().publish("coordinator", "llama", ["10.0.0.1:1"], ttl=24 * 3600)
