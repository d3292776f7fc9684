"""The DHT trusts the run, not whoever publishes: with real processes on loopback, an
attacker without the run secret tries to hijack a run's coordinator record (the
measured attack: seq 2^62 and a 24 h ttl, then the attacker exits) and every lookup
made with the secret still finds the honest coordinator, and only it."""

import base64
import json
import time

import pytest

from harness import DhtProcess
from libp2p.crypto.ed25519 import create_new_key_pair

from pcomm.discovery import Node
from pcomm.discovery.records import kSignaturePrefix, sign_record
from pcomm.discovery.runs import announce, find_run
from pcomm.discovery.signed import seal
from pcomm.errors import DiscoveryError

RUN = "secured-run"
SECRET = "4f1c0a9be2d34c57a8e6b1d2c3f40516"
WRONG = "00000000000000000000000000000000"
HONEST = "10.1.1.1:29500"


@pytest.fixture(scope="module")
def overlay(tmp_path_factory):
    """5 storing nodes that know no secret, and an honest coordinator's publisher that
    takes the secret from $PCOMM_SECRET_FILE."""
    secret_file = tmp_path_factory.mktemp("secret") / "run.secret"
    secret_file.write_text(SECRET + "\n")
    servers = DhtProcess(5)
    boot = servers.addrs[0][0]
    honest = None
    try:
        honest = DhtProcess(1, bootstrap=[boot], client=True, env={"PCOMM_SECRET_FILE": str(secret_file)})
        assert honest.call("publish", kind="coordinator", run=RUN, addrs=[HONEST], ttl=60)["stored_on"] >= 4
        yield servers, honest, boot, secret_file
    finally:
        for p in (honest, servers):
            if p is not None:
                p.cleanup()


def put(proc, raw: bytes, run: str = RUN) -> int:
    return proc.call("put_raw", kind="coordinator", run=run, raw_b64=base64.b64encode(raw).decode())["accepted"]


def rejected(servers) -> int:
    return sum(servers.call("stats")["rejected"])


def test_a_hijacking_record_is_refused_or_ignored_and_lookups_find_the_honest_coordinator(overlay):
    servers, honest, boot, _ = overlay
    honest_raw = base64.b64decode(honest.call("lookup", kind="coordinator", run=RUN)["records"][0]["raw_b64"])
    attacker = DhtProcess(1, bootstrap=[boot], client=True)
    key = create_new_key_pair()
    now = time.time()
    before = rejected(servers)
    # The measured attack and its two halves: refused by every storing node.
    assert put(attacker, sign_record(key.private_key, "coordinator", RUN, ["6.6.6.6:1"], 2**62, now + 24 * 3600).raw) == 0
    assert put(attacker, sign_record(key.private_key, "coordinator", RUN, ["6.6.6.6:1"], 2**62, now + 60).raw) == 0
    assert put(attacker, sign_record(key.private_key, "coordinator", RUN, ["6.6.6.6:1"], time.time_ns(), now + 24 * 3600).raw) == 0
    # The honest record replayed under another run: refused (it is stored under its own key only).
    assert put(attacker, honest_raw, run="other-run") == 0
    assert rejected(servers) - before >= 4 * 4  # each refused by at least 4 storing nodes
    # What storing nodes cannot refuse (they hold no secret): the most a publisher may
    # claim without a proof, one under a wrong secret, and the honest proof copied.
    out = attacker.call("publish", kind="coordinator", run=RUN, addrs=["6.6.6.6:2"], ttl=3600)
    assert out["stored_on"] >= 4
    wrong = sign_record(create_new_key_pair().private_key, "coordinator", RUN, ["6.6.6.6:3"], time.time_ns() + 50 * 10**9,
                        now + 3600, secret=WRONG.encode())
    assert put(attacker, wrong.raw) >= 4
    payload = json.loads(json.loads(sign_record(key.private_key, "coordinator", RUN, ["6.6.6.6:4"], time.time_ns(), now + 3600).raw)["p"])
    payload["proof"] = json.loads(json.loads(honest_raw)["p"])["proof"]
    assert put(attacker, seal(key.private_key, kSignaturePrefix, json.dumps(payload))) >= 4  # its own record, the honest proof
    attacker.cleanup()  # the attacker exits; its stored records live on

    honest_id = honest.peer_ids[0]
    with Node(bootstrap=[boot], server=False, timeout=10, secret=SECRET).start() as node:
        for _ in range(10):
            assert [(r.publisher, r.addrs) for r in node.lookup("coordinator", RUN)] == [(honest_id, (HONEST,))]
        assert node.ignored_records >= 10 * 3  # the three unproven records, every time
    assert find_run(RUN, [boot], 10, secret=SECRET).coordinator == HONEST
    # A reader without the secret believes only records without a proof: the attacker's
    # (it could not join the run anyway), never the honest one it cannot check.
    with Node(bootstrap=[boot], server=False, timeout=10, secret=None).start() as node:
        found = node.lookup("coordinator", RUN)
        assert [r.addrs for r in found] == [("6.6.6.6:2",)]


def test_find_run_and_announce_take_the_secret_and_say_which_is_missing(overlay, monkeypatch):
    _, honest, boot, secret_file = overlay
    honest.call("publish", kind="coordinator", run="only-secured", addrs=["10.1.1.2:29500"], ttl=60)
    with pytest.raises(DiscoveryError, match=r"no coordinator is announced for run 'only-secured'.*prove a run secret: give secret="):
        find_run("only-secured", [boot], 10)
    with pytest.raises(DiscoveryError, match=r"do not prove this run secret: is secret= / PCOMM_SECRET_FILE the run's\?"):
        find_run("only-secured", [boot], 10, secret=WRONG)
    node, _ = announce("relay", "only-secured", "10.1.1.3:3478", [boot], secret=SECRET.encode())
    try:
        monkeypatch.setenv("PCOMM_SECRET_FILE", str(secret_file))  # secret=None reads it
        found = find_run("only-secured", [boot], 10)
        assert (found.coordinator, found.relays) == ("10.1.1.2:29500", ("10.1.1.3:3478",))
    finally:
        node.close()
    with Node(bootstrap=[boot], server=False, timeout=10, secret=WRONG).start() as reader:
        assert reader.lookup("relay", "only-secured") == [] and reader.ignored_records >= 1

