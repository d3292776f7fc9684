"""A real network partition: 4 CRDT replicas, each in its own network namespace
(tests/netns.py), split 2 | 2 by iptables DROP rules. Each side keeps writing and
converging on its own; once the rules go, all four converge to one state holding every
write, with conflicting map writes resolved the same way everywhere."""

import time

import pytest


import netns
from harness import ReplicaProcess, converge

pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))


def cut(hosts: netns.Namespaces, side_a: list[int], side_b: list[int]) -> None:
    for mine, theirs in ((side_a, side_b), (side_b, side_a)):
        for i in mine:
            for j in theirs:
                hosts.sh(*hosts.prefix(i), "iptables", "-A", "INPUT", "-s", hosts.address(j), "-j", "DROP")
                hosts.sh(*hosts.prefix(i), "iptables", "-A", "OUTPUT", "-d", hosts.address(j), "-j", "DROP")


def heal(hosts: netns.Namespaces) -> None:
    for i in range(len(hosts.names)):
        hosts.sh(*hosts.prefix(i), "iptables", "-F")


def fingerprints(replicas) -> list[str]:
    return [r.call("state")["fingerprint"] for r in replicas]


def test_two_partitions_write_independently_then_heal_and_converge():
    with netns.Namespaces(4) as hosts:
        replicas = []
        try:
            for i in range(4):
                boot = [replicas[0].addrs[0]] if replicas else []
                replicas.append(ReplicaProcess("split-run", bootstrap=boot, prefix=hosts.prefix(i),
                                               listen=f"/ip4/{hosts.address(i)}/tcp/0", sync_interval=0.2))
            deadline = time.monotonic() + 30
            while any(r.call("state")["replicas"] < 3 for r in replicas):
                assert time.monotonic() < deadline, "replicas did not find each other"
                time.sleep(0.1)
            replicas[0].call("write", ops=[["map", "config", "lr", 0.1], ["add", "shards", "s0"], ["inc", "tokens", 1]])
            converge(replicas, 20)

            cut(hosts, [0, 1], [2, 3])
            left, right = replicas[:2], replicas[2:]
            for i, r in enumerate(replicas):
                side = "L" if i < 2 else "R"
                r.call("write", ops=[
                    ["map", "config", "lr", 0.2 if side == "L" else 0.3],
                    ["map", "config", f"by-{i}", side],
                    ["add", "shards", f"s{i + 1}"],
                    ["remove", "shards", "s0"] if i == 0 else ["add", "shards", "s0"],  # add wins
                    ["inc", "tokens", 10 ** i],
                ])
            converge(left, 20)
            converge(right, 20)
            assert len(set(fingerprints(replicas))) == 2  # the sides really were apart
            l, r = left[0].call("state")["snapshot"], right[0].call("state")["snapshot"]
            assert l["pn"]["tokens"] == 1 + 1 + 10 and r["pn"]["tokens"] == 1 + 100 + 1000
            assert "by-2" not in l["lww"]["config"] and "by-0" not in r["lww"]["config"]

            heal(hosts)
            seconds = converge(replicas, 60)
            states = [x.call("state")["snapshot"] for x in replicas]
            assert all(s == states[0] for s in states)
            s = states[0]
            assert s["pn"]["tokens"] == 1 + 1 + 10 + 100 + 1000
            assert sorted(s["orset"]["shards"]) == ["s0", "s1", "s2", "s3", "s4"]
            config = s["lww"]["config"]
            assert {k: v for k, v in config.items() if k.startswith("by-")} == {"by-0": "L", "by-1": "L", "by-2": "R", "by-3": "R"}
            assert config["lr"] in (0.2, 0.3)
            print(f"healed partition converged in {seconds:.2f} s")
        finally:
            for r in replicas:
                r.cleanup()
