"""A pcomm peer in its own process, driven by the tests over stdin/stdout.

Each stdin line is a JSON command {"op": ..., ...}; each reply is one JSON line
{"ok": bool, "result"|"error"+"message", "elapsed": seconds}. Running peers as real
processes lets tests SIGKILL and SIGSTOP them.
"""

import json
import sys
import time

import pcomm


def info(comm):
    return {
        "world_size": comm.world_size,
        "rank": comm.rank,
        "epoch": comm.epoch,
        "peer_id": comm.peer_id,
        "peers": comm.peers,
        "pending_peers": comm.pending_peers,
    }


def main():
    args = json.loads(sys.argv[1])
    comm = pcomm.Communicator(**args)
    print(json.dumps({"ok": True, "result": "ready"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
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
            elif op == "wait_world_size":
                # Polls locally so the measured latency excludes the pipe round trip.
                deadline = start + cmd["within"]
                while comm.world_size != cmd["size"] and time.monotonic() < deadline:
                    time.sleep(0.001)
                result = info(comm)
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
