"""Authenticated, encrypted runs on loopback, probed as an attacker would: without the
run's secret nobody joins, reads a data link, fetches shared state or replays a
handshake; strangers cost bounded memory; non-loopback servers refuse to start without a
secret. (Capture and tampering on a real interface: test_security_netns.py.)"""

import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

import pcomm
import pytest
from harness import CoordinatorProcess, PeerProcess, all_reduce_is_exact, connect_all, make_input, sync_all, wait_for
from pcomm import _pcomm
from pcomm.errors import AuthenticationError, InvalidArgumentError

SECRET = secrets.token_hex(32)
HEADER = struct.Struct("<4sHHI")  # magic, version, type, payload length
LINK_HELLO, FETCH_HELLO, FETCH_REQUEST = 20, 23, 24


def frame(msg_type, payload=b"", length=None):
    return HEADER.pack(b"PCOM", pcomm.PROTOCOL_VERSION, msg_type, len(payload) if length is None else length) + payload


def string(s):
    return struct.pack("<I", len(s.encode())) + s.encode()


def drain(sock, seconds):
    """Everything the far side sends within `seconds` (or until it closes)."""
    sock.settimeout(0.2)
    got, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        got += chunk
    return got


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "run.secret"
    path.write_text(SECRET + "\n")
    return str(path)


@pytest.fixture
def secure_run(secret_file):
    """A coordinator with the secret and two peers holding it, connected."""
    with pcomm.Coordinator(heartbeat_timeout=5.0, secret=SECRET) as coord:
        peers = [PeerProcess(coord.address, timeout=30, env={"PCOMM_SECRET_FILE": secret_file}) for _ in range(2)]
        try:
            connect_all(peers)
            yield coord, peers
        finally:
            for p in peers:
                p.cleanup()


def test_the_secret_decides_who_joins_and_the_run_goes_on(secure_run):
    coord, peers = secure_run
    all_reduce_is_exact(peers, 10_007)
    with pytest.raises(AuthenticationError, match="did not accept this run's secret"):
        pcomm.Communicator(coord.address, timeout=5, secret=b"w" * 32).connect()
    with pytest.raises(AuthenticationError, match="this run needs its secret"):
        pcomm.Communicator(coord.address, timeout=5, secret=None).connect()
    assert len(coord.peers) == 2 and coord.pending_peers == 0
    all_reduce_is_exact(peers, 10_007)
    assert peers[0].ok("info")["world_size"] == 2


def test_a_stranger_on_a_data_port_reads_no_data_and_no_state(secure_run):
    coord, peers = secure_run
    addresses = [p.ok("info")["data_address"] for p in peers]
    host, port = addresses[0].rsplit(":", 1)
    pattern = make_input("float32", 4096, 0, seed=3).tobytes()[:64]
    stolen = []

    def probe():
        # A plaintext hello for a pool or a state fetch, as a stock client would send.
        for hello in (frame(LINK_HELLO, string("default") + string(peers[1].ok("info")["peer_id"]) +
                            struct.pack("<QII", 7, 0, 1)),
                      frame(FETCH_HELLO, string("default") + string("rogue") + struct.pack("<Q", 1)) +
                      frame(FETCH_REQUEST, struct.pack("<QQ", 0, 1 << 20))):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(hello)
                stolen.append(drain(s, 1.5))

    thief = threading.Thread(target=probe)
    thief.start()
    for i, p in enumerate(peers):
        p.ok("state_make", tensors={"w": 4096}, index=i, seed=3 + i)
    sync_all(peers)
    all_reduce_is_exact(peers, 4096)
    thief.join(10)
    assert stolen == [b"", b""]  # closed without a byte: no data frame, no state
    assert pattern not in b"".join(stolen)
    # A TLS client with a made-up data-link key is refused too.
    forged = f"pcomm pair v1 {coord.epoch} {peers[1].ok('info')['peer_id']}"
    with pytest.raises(AuthenticationError, match="TLS handshake"):
        _pcomm._tls_probe(addresses[0], forged, secrets.token_bytes(32))
    all_reduce_is_exact(peers, 4096)


class RecordingProxy:
    """Forwards one connection to `target`, keeping the client's bytes."""

    def __init__(self, target):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.from_client = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.listener.accept()
        host, port = self.target.rsplit(":", 1)
        server = socket.create_connection((host, int(port)))

        def pump(src, dst, record):
            try:
                while chunk := src.recv(65536):
                    if record:
                        self.from_client += chunk
                    dst.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=pump, args=(server, client, False), daemon=True).start()
        pump(client, server, True)


def test_a_replayed_handshake_is_refused(secret_file):
    with pcomm.Coordinator(heartbeat_timeout=5.0, secret=SECRET) as coord:
        proxy = RecordingProxy(coord.address)
        peer = PeerProcess(proxy.address, timeout=30, env={"PCOMM_SECRET_FILE": secret_file})
        try:
            peer.ok("connect")
            assert wait_for(lambda: len(coord.peers) == 1, 10)
            recorded = proxy.from_client
            assert recorded[:1] == b"\x16"  # a TLS ClientHello, not a plaintext Hello
            host, port = coord.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(recorded)
                reply = drain(s, 3)
            assert b"PCOM" not in reply  # no Welcome, nothing in the clear
            time.sleep(0.3)
            assert len(coord.peers) == 1 and coord.pending_peers == 0
        finally:
            peer.cleanup()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("secure", [True, False], ids=["secret", "loopback-without-secret"])
def test_strangers_cost_bounded_memory(secure, secret_file):
    env = {"PCOMM_SECRET_FILE": secret_file} if secure else {}
    coord = CoordinatorProcess(env=env)
    try:
        host, port = coord.address.rsplit(":", 1)
        baseline = rss_mb(coord.proc.pid)
        # Each stranger claims a huge message and sends part of it: a TLS record header
        # (16 KiB) with a secret, else a frame header claiming 1 MiB.
        claim = b"\x16\x03\x01\x40\x00" if secure else frame(2, length=1 << 20)
        socks, peak = [], 0.0
        for _ in range(300):
            try:
                s = socket.create_connection((host, int(port)), timeout=2)
                s.setblocking(False)
                s.send(claim + os.urandom(16000))
                socks.append(s)
            except OSError:
                pass
        time.sleep(1.0)
        peak = rss_mb(coord.proc.pid)
        for s in socks:
            s.close()
        time.sleep(1.5)
        after = rss_mb(coord.proc.pid)
        print(f"coordinator RSS: baseline {baseline:.1f} MB, with strangers {peak:.1f} MB, after {after:.1f} MB")
        assert peak - baseline < 100, (baseline, peak)
        assert after - baseline < 50, (baseline, after)
        # Still serving: a peer with the right credentials joins.
        peer = PeerProcess(coord.address, timeout=30, env=env)
        try:
            peer.ok("connect")
            assert peer.ok("info")["world_size"] == 1
        finally:
            peer.cleanup()
    finally:
        coord.cleanup()


def test_servers_off_loopback_need_a_secret():
    with pytest.raises(InvalidArgumentError, match="needs the run secret.*--insecure"):
        pcomm.Coordinator(listen="0.0.0.0:0")
    with pytest.raises(InvalidArgumentError, match="needs the run secret"):
        pcomm.Relay(listen="0.0.0.0:0")
    with pytest.raises(InvalidArgumentError, match="at least 16"):
        pcomm.Coordinator(secret="short")
    with pcomm.Coordinator(listen="0.0.0.0:0", insecure=True) as c:
        assert not c.secure
    with pcomm.Relay(listen="0.0.0.0:0", secret=SECRET) as r:
        assert r.address
    out = subprocess.run([sys.executable, "-m", "pcomm", "coordinator", "--listen", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "PCOMM_SECRET_FILE": ""})
    assert out.returncode == 2 and "--insecure" in out.stderr


def test_the_relay_takes_registrations_only_from_its_runs_coordinator():
    with pcomm.Relay(listen="127.0.0.1:0", secret=SECRET) as relay:
        register = frame(40, struct.pack("<I", 1) + string("t" * 32) + string("a") + string("b") + struct.pack("<I", 1000))
        host, port = relay.address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(register)
            reply = drain(s, 3)
        assert b"takes registrations only from its run's coordinator" in reply
        with pytest.raises(AuthenticationError, match="TLS handshake"):
            _pcomm._tls_probe(relay.address, "pcomm relay v1", _pcomm._derive_key(b"x" * 32, "relay psk"))
        _pcomm._tls_probe(relay.address, "pcomm relay v1", _pcomm._derive_key(SECRET.encode(), "relay psk"))
        assert relay.stats()["refused"] >= 1


def test_python_and_cpp_derive_the_same_keys():
    from pcomm import _secret

    for purpose in ("coordinator psk", "relay psk", "dht record"):
        assert _secret.derive(SECRET.encode(), purpose.encode()) == _pcomm._derive_key(SECRET.encode(), purpose)


def test_a_member_cannot_pose_as_another_on_a_data_link(secret_file):
    """Member A holds the key of pair (A, C). It may open a link to C as itself, but a
    hello naming B on it is refused, and so is A's key presented under B's name."""
    with pcomm.Coordinator(heartbeat_timeout=5.0, secret=SECRET) as coord:
        peers = [PeerProcess(coord.address, timeout=30, env={"PCOMM_SECRET_FILE": secret_file}) for _ in range(3)]
        try:
            connect_all(peers)
            a, b, c = (p.ok("info") for p in peers)
            epoch = coord.epoch
            key_ac = coord._impl._pair_key(epoch, a["peer_id"], c["peer_id"])

            def hello(from_peer):
                return frame(LINK_HELLO, string("default") + string(from_peer) + struct.pack("<QII", 99, 0, 1))

            as_a = f"pcomm pair v1 {epoch} {a['peer_id']}"
            as_b = f"pcomm pair v1 {epoch} {b['peer_id']}"
            refused = _pcomm._tls_probe(c["data_address"], as_a, key_ac, send=hello(b["peer_id"]))
            assert b"on a link keyed for peer " + a["peer_id"].encode() in refused
            with pytest.raises(AuthenticationError, match="TLS handshake"):
                _pcomm._tls_probe(c["data_address"], as_b, key_ac)
            # The key itself is good: under its own name the handshake is taken.
            assert _pcomm._tls_probe(c["data_address"], as_a, key_ac) == b""
            all_reduce_is_exact(peers, 1000)  # and the run never noticed
        finally:
            for p in peers:
                p.cleanup()


def test_many_peers_joining_at_once_from_one_host_all_get_in():  # more than the per-source cap
    """80 joiners from one address at the same moment: each TLS handshake makes it a
    stranger for a while, and the per-source cap must not turn that into refusals."""
    with pcomm.Coordinator(heartbeat_timeout=5.0, secret=SECRET) as coord:
        comms = [pcomm.Communicator(coord.address, timeout=20, secret=SECRET, connections_per_peer=1)
                 for _ in range(80)]
        errors = []

        def join(c):
            try:
                c.connect()
            except pcomm.errors.PcommError as e:
                errors.append(e)

        threads = [threading.Thread(target=join, args=(c,), daemon=True) for c in comms]
        for t in threads:
            t.start()
        try:
            assert wait_for(lambda: len(coord.peers) + coord.pending_peers == 80 or errors, 20)
            assert not errors, errors[:3]
        finally:
            for c in comms:
                c.close()
            for t in threads:
                t.join(10)
