"""The relay on loopback, spoken to byte by byte: one-time tokens (unknown, expired and
reused ones refused), bytes forwarded both ways untouched, garbage and limits closing
only the offending connection."""

import resource
import socket
import struct
import time

import pcomm
import pytest

VERSION = pcomm.PROTOCOL_VERSION
ERROR, REGISTER, REGISTERED, JOIN, PAIRED = 1, 40, 41, 42, 43


def frame(kind: int, payload: bytes) -> bytes:
    return b"PCOM" + struct.pack("<HHI", VERSION, kind, len(payload)) + payload


def string(s: str) -> bytes:
    return struct.pack("<I", len(s)) + s.encode()


def strings(items: list[str]) -> bytes:
    return struct.pack("<I", len(items)) + b"".join(string(s) for s in items)


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    header = exactly(12)
    assert header[:4] == b"PCOM"
    _, kind, length = struct.unpack("<HHI", header[4:])
    return kind, exactly(length)


def closed(sock: socket.socket, within: float = 5.0) -> bool:
    """True once the relay closed the connection (it may say why first)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, socket.timeout):
        return False


def connect(relay) -> socket.socket:
    host, port = relay.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def register(relay, tokens: list[str], ttl_ms: int = 10_000) -> socket.socket:
    control = connect(relay)
    control.sendall(frame(REGISTER, strings(tokens) + string("peer-a") + string("peer-b") + struct.pack("<I", ttl_ms)))
    kind, payload = read_frame(control)
    assert kind == REGISTERED
    return control


def join(relay, token: str) -> socket.socket:
    s = connect(relay)
    s.sendall(frame(JOIN, string(token)))
    return s


@pytest.fixture
def relay():
    with pcomm.Relay(listen="127.0.0.1:0") as r:
        yield r


def test_a_token_pairs_two_joins_and_bytes_pass_untouched(relay):
    token = "a" * 32
    control = register(relay, [token])
    a = join(relay, token)
    b = join(relay, token)
    assert read_frame(a) == (PAIRED, b"") and read_frame(b) == (PAIRED, b"")
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    a.sendall(payload)
    got = b""
    b.settimeout(10)
    while len(got) < len(payload):
        got += b.recv(1 << 20)
    assert got == payload
    b.sendall(b"back")
    assert a.recv(4) == b"back"
    # One side closing ends the other's stream too.
    a.close()
    assert closed(b)
    assert relay.stats()["circuits_total"] == 1
    control.close()


def test_unknown_reused_and_expired_tokens_are_refused(relay):
    unknown = join(relay, "f" * 32)
    kind, payload = read_frame(unknown)
    assert kind == ERROR and b"unknown relay token" in payload
    assert closed(unknown)

    token = "b" * 32
    control = register(relay, [token, "c" * 32], ttl_ms=300)
    first, second = join(relay, token), join(relay, token)
    assert read_frame(first)[0] == PAIRED and read_frame(second)[0] == PAIRED
    third = join(relay, token)
    kind, payload = read_frame(third)
    assert kind == ERROR and b"already used" in payload

    time.sleep(0.5)  # "c"*32 expires unused
    late = join(relay, "c" * 32)
    kind, payload = read_frame(late)
    assert kind == ERROR and (b"expired" in payload or b"unknown" in payload)
    # The circuit made before is unaffected by all of this.
    first.sendall(b"still here")
    second.settimeout(5)
    assert second.recv(10) == b"still here"
    assert relay.stats()["refused"] >= 3
    control.close()


def test_garbage_closes_only_that_connection(relay):
    token = "d" * 32
    control = register(relay, [token])
    a, b = join(relay, token), join(relay, token)
    assert read_frame(a)[0] == PAIRED and read_frame(b)[0] == PAIRED
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"PCOM" + struct.pack("<HHI", VERSION, JOIN, 1 << 30), b"\x00" * 64):
        s = connect(relay)
        s.sendall(junk)
        assert closed(s), junk
    a.sendall(b"ping")
    b.settimeout(5)
    assert b.recv(4) == b"ping"
    # The relay still registers and pairs after the garbage.
    control2 = register(relay, ["e" * 32])
    x, y = join(relay, "e" * 32), join(relay, "e" * 32)
    assert read_frame(x)[0] == PAIRED and read_frame(y)[0] == PAIRED
    control.close()
    control2.close()


def test_a_reset_side_of_an_idle_circuit_does_not_spin_the_relay(relay):
    """One side half-closes, the other sends a little, the first closes with it unread
    (a reset): the circuit must end or idle without burning a core."""
    token = "f0" * 16
    control = register(relay, [token])
    a, b = join(relay, token), join(relay, token)
    assert read_frame(a)[0] == PAIRED and read_frame(b)[0] == PAIRED
    a.shutdown(socket.SHUT_WR)
    b.sendall(b"x" * 100)
    time.sleep(0.2)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()  # reset
    time.sleep(0.2)
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(2.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.5, f"the relay used {cpu:.2f} s of CPU in 2 s of idleness"
    b.close()
    control.close()


def test_limit_per_source_address():
    with pcomm.Relay(listen="127.0.0.1:0", max_per_source=3) as relay:
        held = [connect(relay) for _ in range(3)]
        time.sleep(0.2)
        extra = connect(relay)
        assert closed(extra)  # over the limit: closed at once
        for s in held:
            s.close()
        time.sleep(0.3)  # their slots are free again
        again = connect(relay)
        again.sendall(frame(JOIN, string("z" * 32)))
        assert read_frame(again)[0] == ERROR  # served (and refused for its token), not dropped


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="max_circuits"):
        pcomm.Relay(max_circuits=0)
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="rate"):
        pcomm.Relay(rate=-1)
