"""What an attacker on the path sees and can do, on real interfaces: peers in network
namespaces, and every data link between them diverted (iptables DNAT in each peer's
namespace) through a forwarding proxy in the root namespace. With the run secret the
proxy's capture holds no plaintext of a known all-reduce (without one it does: the
control that shows the capture works), and one flipped byte makes the op fail on every
peer, never return a wrong result; the run then recovers. Needs root (CI is)."""

from __future__ import annotations

import contextlib
import socket
import threading

import pcomm
import pytest
from allreduce_expect import expected
from harness import PeerProcess, connect_all, digest, make_input
from netns import Namespaces, RunSecret, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

DATA_PORT = 7100
COUNT = 262_147  # 1 MiB of float32 per peer
GATEWAY = "198.18.0.254"


class TamperingProxy:
    """Forwards connections for one peer's data port, keeping every byte it forwards;
    once armed, it flips one byte of the stream after `flip_after` more bytes."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.listener = socket.create_server((GATEWAY, 0))
        self.port = self.listener.getsockname()[1]
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.flip_after: int | None = None
        self.flipped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            host, port = self.target.rsplit(":", 1)
            try:
                server = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                data = bytearray(chunk)
                with self.lock:
                    self.captured += data
                    if self.flip_after is not None and not self.flipped:
                        if self.flip_after < len(data):
                            data[self.flip_after] ^= 0x01
                            self.flipped = True
                        else:
                            self.flip_after -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def divert(ns: Namespaces, proxies: list[TamperingProxy]) -> None:
    """In every peer's namespace, connections to another peer's data port go to the
    proxy in front of that peer."""
    for j in range(len(ns.names)):
        for i, proxy in enumerate(proxies):
            if i != j:
                ns.sh(*ns.prefix(j), "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", ns.address(i),
                      "--dport", str(DATA_PORT), "-j", "DNAT", "--to-destination", f"{GATEWAY}:{proxy.port}")


@pytest.fixture(params=[True, False], ids=["secret", "no-secret-control"])
def tapped(request):
    secure = request.param
    with Namespaces(3) as ns, (RunSecret() if secure else contextlib.nullcontext()):
        proxies = [TamperingProxy(f"{ns.address(i)}:{DATA_PORT}") for i in range(3)]
        divert(ns, proxies)
        with pcomm.Coordinator(listen=f"{GATEWAY}:0", heartbeat_timeout=3.0, insecure=not secure) as coord:
            assert coord.secure == secure
            peers = [PeerProcess(coord.address, prefix=ns.prefix(i), timeout=30,
                                 data_listen=f"{ns.address(i)}:{DATA_PORT}", connections_per_peer=1)
                     for i in range(3)]
            try:
                connect_all(peers)
                yield secure, proxies, peers
            finally:
                for p in peers:
                    p.cleanup()
                for proxy in proxies:
                    proxy.close()


def all_reduce(peers):
    for i, p in enumerate(peers):
        p.send("all_reduce", dtype="float32", count=COUNT, index=i, timeout=20)
    return [p.reply(60) for p in peers]


def test_a_capture_of_the_path_holds_no_plaintext(tapped):
    secure, proxies, peers = tapped
    replies = all_reduce(peers)
    assert all(r["ok"] for r in replies), replies
    want = expected("float32", "sum", COUNT, 3)
    assert [r["result"]["after"] for r in replies] == [digest(want)] * 3
    captured = b"".join(bytes(p.captured) for p in proxies)
    assert len(captured) > COUNT * 4  # the data links did pass the proxies
    # The inputs and the result repeat every 11 values: 64-byte windows at each of the 11
    # phases of each. In plaintext the result's windows are all there (every peer
    # receives the summed chunks); in TLS records, none may be.
    windows = {x.tobytes()[k:k + 64] for x in [make_input("float32", COUNT, i) for i in range(3)] + [want]
               for k in range(0, 44, 4)}
    found = sum(w in captured for w in windows)
    assert found == 0 if secure else found >= 11, found


@pytest.mark.parametrize("tapped", [True], ids=["secret"], indirect=True)
def test_one_flipped_byte_fails_the_op_on_every_peer(tapped):
    secure, proxies, peers = tapped
    for proxy in proxies:
        with proxy.lock:
            proxy.flip_after = 200_000
    replies = all_reduce(peers)
    assert any(p.flipped for p in proxies)
    assert [r["ok"] for r in replies] == [False] * 3, replies
    assert all(r["error"] in ("PeerLostError", "AbortedError") for r in replies), replies
    for r in replies:  # the input is intact: before == after in the failure's report
        before = r["message"].split("before=")[1].split()[0]
        after = r["message"].split("after=")[1].rstrip("]")
        assert before == after
    # The run goes on: new links, an exact result.
    for proxy in proxies:
        with proxy.lock:
            proxy.flip_after = None
    for i, p in enumerate(peers):
        p.send("all_reduce_retry", dtype="float32", count=COUNT, index=i, timeout=20)
    retried = [p.reply(90) for p in peers]
    assert all(r["ok"] for r in retried), retried
    assert [r["result"]["after"] for r in retried] == [digest(expected("float32", "sum", COUNT, 3))] * 3
