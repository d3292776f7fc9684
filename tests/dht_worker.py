"""A process hosting several discovery nodes, driven by JSON lines on stdin.

    python tests/dht_worker.py --nodes 5 [--bootstrap MULTIADDR ...] [--client]

Prints one line ``{"addrs": [[multiaddr, ...] per node], "peer_ids": [...]}`` once every
node has started, then answers each command line with one JSON line. The nodes take
the run secret from $PCOMM_SECRET_FILE when it is set.

    {"cmd": "publish", "node": 0, "kind": "coordinator", "run": "r", "addrs": [...], "ttl": 30}
    {"cmd": "lookup", "node": 0, "kind": "coordinator", "run": "r"}
        -> {"records": [{"publisher", "addrs", "seq", "expires", "raw_b64"}], "seconds": wall time}
    {"cmd": "put_raw", "node": 0, "kind": ..., "run": ..., "raw_b64": ...} -> {"accepted": n}
    {"cmd": "stats"} -> {"tables": [...], "stored": [...], "rejected": [...], "ignored": [...]}
    {"cmd": "stop", "node": 0, "announcement": 0}   (stops refreshing that announcement)
    {"cmd": "lookup_many", "node": 0, "kind", "run", "count": n}
        -> {"seconds": [...], "cpu_seconds": process CPU time for all n}
    {"cmd": "rpc_many", "node": 0, "count": n}   (one warm request/response each)

Errors come back as {"error": "TypeName: message"}. EOF on stdin closes every node.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

from pcomm.discovery import Node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--bootstrap", nargs="*", default=[])
    parser.add_argument("--client", action="store_true")
    args = parser.parse_args()
    nodes = []
    for i in range(args.nodes):
        boot = args.bootstrap or ([nodes[0].addrs[0]] if nodes else [])
        nodes.append(Node(bootstrap=boot, server=not args.client, timeout=20).start())
    print(json.dumps({"addrs": [n.addrs for n in nodes], "peer_ids": [n.peer_id for n in nodes]}), flush=True)
    announcements = []
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            try:
                reply = run(cmd, nodes, announcements)
            except Exception as e:  # every failure goes back to the test
                reply = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(reply), flush=True)
    finally:
        for n in nodes:
            n.close()


def run(cmd: dict, nodes: list[Node], announcements: list) -> dict:
    what = cmd["cmd"]
    node = nodes[cmd.get("node", 0)]
    if what == "publish":
        a = node.publish(cmd["kind"], cmd["run"], cmd["addrs"], ttl=cmd.get("ttl", 300.0))
        announcements.append(a)
        return {"announcement": len(announcements) - 1, "stored_on": a.stored_on}
    if what == "stop":
        announcements[cmd["announcement"]].stop()
        return {"ok": True}
    if what == "lookup":
        t = time.perf_counter()
        records = node.lookup(cmd["kind"], cmd["run"])
        seconds = time.perf_counter() - t
        return {"records": [{"publisher": r.publisher, "addrs": list(r.addrs), "seq": r.seq, "expires": r.expires,
                             "raw_b64": base64.b64encode(r.raw).decode()} for r in records], "seconds": seconds}
    if what == "lookup_many":
        times = []
        cpu = time.process_time()
        for _ in range(cmd["count"]):
            t = time.perf_counter()
            found = node.lookup(cmd["kind"], cmd["run"])
            times.append(time.perf_counter() - t)
            if not found:
                return {"error": "lookup found nothing"}
        return {"seconds": times, "cpu_seconds": time.process_time() - cpu}
    if what == "rpc_many":
        # Baseline for lookups: one find_node request/response to one node, warm.
        contact = node._table.closest(0, 1)[0]
        message = node._request("find_node", target="00" * 32)
        times = []
        cpu = time.process_time()
        for _ in range(cmd["count"]):
            t = time.perf_counter()
            node._runner.call(node._rpc, contact, message, timeout=10, what="rpc")
            times.append(time.perf_counter() - t)
        return {"seconds": times, "cpu_seconds": time.process_time() - cpu}
    if what == "put_raw":
        return {"accepted": node.put_raw(cmd["kind"], cmd["run"], base64.b64decode(cmd["raw_b64"]))}
    if what == "stats":
        return {"tables": [n.routing_table_size for n in nodes], "stored": [n.stored_records for n in nodes],
                "rejected": [n.rejected_records for n in nodes], "ignored": [n.ignored_records for n in nodes]}
    raise ValueError(f"unknown command {what!r}")


if __name__ == "__main__":
    main()
