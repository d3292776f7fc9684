"""Relay forwarding throughput on loopback, against a direct TCP connection measured in
the same run: a sender process streams bytes to a receiver process, once straight and
once through `pcomm relay` (its own process; splice, no copies into user space). Prints
GB/s of each, the ratio, and the relay's CPU seconds per GB forwarded (from /proc).

    python bench/relay.py [--gb 4]

Not part of the test suite. Numbers depend on the machine: compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CHUNK = 4 << 20
REGISTER, JOIN, PAIRED = 40, 42, 43


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frame(kind: int, payload: bytes) -> bytes:
    import pcomm

    return b"PCOM" + struct.pack("<HHI", pcomm.PROTOCOL_VERSION, kind, len(payload)) + payload


def string(s: str) -> bytes:
    return struct.pack("<I", len(s)) + s.encode()


def receive(s: socket.socket, nbytes: int) -> float:
    buf = bytearray(CHUNK)
    got = 0
    start = time.perf_counter()
    while got < nbytes:
        n = s.recv_into(buf)
        if n == 0:
            raise SystemExit("stream ended early")
        got += n
    return time.perf_counter() - start


def worker(role: str, address: str, nbytes: int, token: str) -> None:
    """serve: listen, print the port, receive from the first connection. recv/send:
    connect to address (joining the relay with token), then move nbytes. The receiving
    side prints the seconds it took."""
    if role == "serve":
        srv = socket.create_server(("127.0.0.1", 0))
        print(srv.getsockname()[1], flush=True)
        conn, _ = srv.accept()
        print(receive(conn, nbytes), flush=True)
        return
    host, port = address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    if token:
        s.sendall(frame(JOIN, string(token)))
        assert struct.unpack("<H", s.recv(12, socket.MSG_WAITALL)[6:8])[0] == PAIRED, "not paired"
    if role == "recv":
        print(receive(s, nbytes), flush=True)
        return
    buf = memoryview(os.urandom(CHUNK))
    left = nbytes
    while left > 0:
        left -= s.send(buf[: min(CHUNK, left)])
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # until the other side closes


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", *args], stdout=subprocess.PIPE, text=True)


def direct_seconds(nbytes: int) -> float:
    server = spawn("serve", "", str(nbytes), "")
    port = server.stdout.readline().strip()
    sender = spawn("send", f"127.0.0.1:{port}", str(nbytes), "")
    seconds = float(server.stdout.readline())
    sender.wait(60)
    return seconds


def relayed_seconds(relay_address: str, nbytes: int) -> float:
    host, port = relay_address.rsplit(":", 1)
    control = socket.create_connection((host, int(port)))
    token = "ab" * 16
    control.sendall(frame(REGISTER, struct.pack("<I", 1) + string(token) + string("bench-a") + string("bench-b")
                          + struct.pack("<I", 60_000)))
    control.recv(64)  # RelayRegistered
    receiver = spawn("recv", relay_address, str(nbytes), token)
    sender = spawn("send", relay_address, str(nbytes), token)
    seconds = float(receiver.stdout.readline())
    sender.wait(60)
    control.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--gb", type=float, default=4.0, help="GB to move (default 4)")
    args = parser.parse_args()
    if args.worker:
        role, address, nbytes, token = args.worker
        worker(role, address, int(nbytes), token)
        return
    from harness import RelayProcess

    nbytes = int(args.gb * 1e9)
    direct = direct_seconds(nbytes)
    relay = RelayProcess("127.0.0.1:0")
    try:
        before = cpu_seconds(relay.pid)
        relayed = relayed_seconds(relay.address, nbytes)
        cpu = cpu_seconds(relay.pid) - before
    finally:
        relay.cleanup()
    gb = nbytes / 1e9
    print(f"{'path':10} {'GB':>6} {'seconds':>8} {'GB/s':>7}")
    print(f"{'direct':10} {gb:6.1f} {direct:8.3f} {gb / direct:7.2f}")
    print(f"{'relayed':10} {gb:6.1f} {relayed:8.3f} {gb / relayed:7.2f}")
    print(f"relayed/direct: {direct / relayed:.2f}; relay CPU {cpu / gb:.3f} s per GB ({cpu:.2f} s for {gb:.1f} GB)")


if __name__ == "__main__":
    main()
