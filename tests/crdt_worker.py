"""One CRDT replica (a discovery node + a Store) in its own process, driven by JSON
lines on stdin; used by the tests and bench/crdt.py.

    python tests/crdt_worker.py '{"name": "run", "path": null, "listen": "/ip4/127.0.0.1/tcp/0",
                                  "bootstrap": [], "sync_interval": 0.2, "secret": null}'

``secret``: the run secret of the node and the store (else $PCOMM_SECRET_FILE, else none).

Prints {"addrs": [...], "writer": id} once up, then one JSON reply per command:

    {"cmd": "write", "ops": [["map", obj, key, value], ["del", obj, key], ["add", obj, x],
                              ["remove", obj, x], ["inc", obj, n], ["dec", obj, n], ["ginc", obj, n]]}
    {"cmd": "burst", "count": n, "prefix": p}       n writes: map keys, set adds, counter steps
    {"cmd": "write_loop", "prefix": p}             writes until killed, one {"acked": i} line per write
    {"cmd": "state"}      -> fingerprint, snapshot, writes, rejected, refused_writers, refused_future, digest, replicas
    {"cmd": "add_replica", "addr": multiaddr}
    {"cmd": "inject", "addr": multiaddr, "deltas": [base64...], "garbage": base64 | null}
        sends deltas (or raw garbage) to that replica over the CRDT protocol
    {"cmd": "sign_as_other", ...} see below
"""

from __future__ import annotations

import base64
import json
import sys
import time

import trio

from pcomm.crdt import Store
from pcomm.crdt import replication
from pcomm.discovery import Node, wire
from pcomm.discovery.host import parse_bootstrap


def apply_ops(store: Store, ops: list) -> None:
    for op, obj, *rest in ops:
        if op == "map":
            store.map(obj)[rest[0]] = rest[1]
        elif op == "del":
            del store.map(obj)[rest[0]]
        elif op == "add":
            store.set(obj).add(rest[0])
        elif op == "remove":
            store.set(obj).remove(rest[0])
        elif op == "inc":
            store.counter(obj).increment(rest[0])
        elif op == "dec":
            store.counter(obj).decrement(rest[0])
        elif op == "ginc":
            store.gcounter(obj).increment(rest[0])
        else:
            raise ValueError(f"unknown op {op!r}")


def burst_ops(count: int, prefix: str) -> list:
    ops = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            ops.append(["map", "progress", f"{prefix}-{i}", i])
        elif kind == 1:
            ops.append(["add", "shards", f"{prefix}-{i}"])
        else:
            ops.append(["inc", "tokens", 1])
    return ops


async def inject(node: Node, addr: str, deltas: list[bytes], garbage: bytes | None, store: str) -> str:
    info = parse_bootstrap(addr)
    await node._host.connect(info)
    stream = await node._host.new_stream(info.peer_id, [replication.PROTOCOL])
    try:
        if garbage is not None:
            await stream.write(garbage)
            try:
                with trio.move_on_after(2):
                    return f"answered {await stream.read(100)!r}"
                return "no answer"
            except Exception as e:  # the replica reset the stream: what we expect
                return f"closed: {type(e).__name__}"
        await wire.write_message(stream, {"store": store, "digest": {}}, replication.kMaxMessageBytes)
        await wire.read_message(stream, replication.kMaxMessageBytes)
        await wire.write_message(stream, {"deltas": [base64.b64encode(d).decode() for d in deltas]}, replication.kMaxMessageBytes)
        return "sent"
    finally:
        await stream.close()


def main() -> None:
    args = json.loads(sys.argv[1])
    node = Node(listen=args.get("listen", "/ip4/127.0.0.1/tcp/0"), bootstrap=args.get("bootstrap", []), timeout=20,
                secret=args.get("secret")).start()
    store = Store(args["name"], node=node, path=args.get("path"), sync_interval=args.get("sync_interval", 0.2))
    print(json.dumps({"addrs": node.addrs, "writer": store.writer}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        what = cmd["cmd"]
        try:
            if what == "write":
                apply_ops(store, cmd["ops"])
                reply = {"ok": len(cmd["ops"])}
            elif what == "burst":
                t = time.perf_counter()
                apply_ops(store, burst_ops(cmd["count"], cmd["prefix"]))
                reply = {"seconds": time.perf_counter() - t}
            elif what == "write_loop":
                i = 0
                while True:
                    store.map("log")[f"{cmd['prefix']}-{i}"] = i
                    store.counter("acked").increment(1)
                    print(json.dumps({"acked": i}), flush=True)
                    i += 1
            elif what == "state":
                reply = {
                    "fingerprint": store.fingerprint(), "snapshot": store.snapshot(), "writes": store.writes,
                    "rejected": store.rejected, "refused_writers": store.refused_writers,
                    "refused_future": store.refused_future, "digest": store.digest(),
                    "replicas": store.replicas,
                }
            elif what == "add_replica":
                store.add_replica(cmd["addr"])
                reply = {"ok": True}
            elif what == "inject":
                deltas = [base64.b64decode(d) for d in cmd.get("deltas", [])]
                garbage = base64.b64decode(cmd["garbage"]) if cmd.get("garbage") else None
                reply = {"result": node._runner.call(inject, node, cmd["addr"], deltas, garbage, cmd.get("store", args["name"]), timeout=10, what="inject")}
            else:
                raise ValueError(f"unknown command {what!r}")
        except Exception as e:  # every failure goes back to the test
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    store.close()
    node.close()


if __name__ == "__main__":
    main()
