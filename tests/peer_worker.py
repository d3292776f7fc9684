"""A pcomm peer in its own process, driven by the tests over stdin/stdout.

Each stdin line is a JSON command {"cmd": ..., ...}; each reply is one JSON line
{"ok": bool, "result"|"error"+"message", "elapsed": seconds}. Running peers as real
processes lets tests SIGKILL and SIGSTOP them.
"""

import dataclasses
import json
import sys
import time

import numpy as np

import pcomm
from harness import digest, make_input


def info(comm):
    return {
        "world_size": comm.world_size,
        "rank": comm.rank,
        "epoch": comm.epoch,
        "peer_id": comm.peer_id,
        "term": comm.term,
        "peers": comm.peers,
        "pending_peers": comm.pending_peers,
        "data_address": comm.data_address,
    }


def main():
    args = json.loads(sys.argv[1])
    comm = pcomm.Communicator(**args)
    state = None
    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("cmd")
        start = time.monotonic()
        try:
            if op == "connect":
                comm.connect(**cmd)
                result = info(comm)
            elif op == "update_topology":
                comm.update_topology(**cmd)
                result = info(comm)
            elif op == "info":
                result = info(comm)
            elif op == "links":
                result = [dataclasses.asdict(link) for link in comm.links()]
            elif op == "wait_world_size":
                # Polls locally so the measured latency excludes the pipe round trip.
                deadline = start + cmd["within"]
                while comm.world_size != cmd["size"] and time.monotonic() < deadline:
                    time.sleep(0.001)
                result = info(comm)
            elif op == "all_reduce":
                # One all-reduce of make_input(...) data; reports hashes so the test can
                # compare bytes across peers and check the input survived a failure.
                x = make_input(cmd["dtype"], cmd["count"], cmd["index"], cmd.get("op", "sum"), cmd.get("seed"))
                before = digest(x)
                try:
                    rinfo = comm.all_reduce(
                        x, op=cmd.get("op", "sum"), tag=cmd.get("tag", 0),
                        quantization=cmd.get("quantization"), timeout=cmd.get("timeout"),
                    )
                except pcomm.errors.PcommError as e:
                    e.args = (f"{e} [failed_at={time.time()!r} before={before} after={digest(x)}]",)
                    raise
                result = {"before": before, "after": digest(x), "world_size": rinfo.world_size,
                          "bytes_sent": rinfo.bytes_sent, "seconds": rinfo.seconds}
            elif op == "all_reduce_retry":
                # What a training loop does: retry at once while peers are lost.
                x = make_input(cmd["dtype"], cmd["count"], cmd["index"])
                before, errors = digest(x), []
                while True:
                    try:
                        rinfo = comm.all_reduce(x, timeout=cmd.get("timeout"))
                        break
                    except (pcomm.errors.PeerLostError, pcomm.errors.AbortedError) as e:
                        errors.append(type(e).__name__)
                        if digest(x) != before or len(errors) > 5:
                            raise
                result = {"errors": errors, "after": digest(x), "world_size": rinfo.world_size}
            elif op == "loop":
                # all-reduces of known data, k = start.., retried on AbortedError (a lost
                # coordinator): peer i contributes i + 1 + k (tests/test_failover.py).
                result = []
                for k in range(cmd["start"], cmd["start"] + cmd["count"]):
                    x = np.full(cmd.get("n", 4096), float(cmd["index"] + 1 + k), dtype=np.float32)
                    while True:
                        try:
                            rinfo = comm.all_reduce(x, timeout=cmd.get("timeout"))
                            break
                        except pcomm.errors.AbortedError:
                            continue
                    result.append([k, float(x[0]), rinfo.world_size])
            elif op == "all_reduce_cases":
                # Many all-reduces in a row; returns the hash of each result.
                result = []
                for dtype, rop, count, quant in cmd["cases"]:
                    x = make_input(dtype, count, cmd["index"], rop)
                    rinfo = comm.all_reduce(x, op=rop, quantization=quant, timeout=cmd.get("timeout"))
                    result.append({"hash": digest(x), "world_size": rinfo.world_size})
            elif op == "state_make":
                # A SharedState of float32 tensors {name: count} filled from make_input.
                arrays = {name: make_input("float32", n, cmd.get("index", 0), seed=cmd.get("seed"))
                          for name, n in cmd["tensors"].items()}
                if cmd.get("zero"):
                    for a in arrays.values():
                        a[:] = 0
                state = pcomm.SharedState(arrays, revision=cmd.get("revision", 0))
                result = None
            elif op == "state_flip":
                view = state[cmd["name"]].view("uint8")
                view[cmd["byte"]] ^= 0xFF
                result = None
            elif op == "state_digest":
                result = {"revision": state.revision, "tensors": {n: digest(t) for n, t in state.tensors.items()}}
            elif op == "state_sync":
                s = comm.sync_shared_state(state, strategy=cmd.get("strategy", "enforce_popular"),
                                           timeout=cmd.get("timeout"))
                result = {"received": s.tensors_received, "bytes_received": s.bytes_received,
                          "bytes_sent": s.bytes_sent, "revision": s.revision, "hash": s.content_hash,
                          "seconds": time.monotonic() - start}
            elif op == "close":
                comm.close()
                result = None
            elif op == "exit":
                comm.close()
                print(json.dumps({"ok": True, "result": None}), flush=True)
                return
            else:
                raise ValueError(f"unknown op {op}")
            reply = {"ok": True, "result": result}
        except pcomm.errors.PcommError as e:
            reply = {"ok": False, "error": type(e).__name__, "message": str(e)}
        reply["elapsed"] = time.monotonic() - start
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
