"""Hostile and malformed bytes on pcomm's listening ports close that connection only;
the coordinator keeps admitting and serving peers. Bad arguments raise typed errors."""

import os
import socket
import struct

import pcomm
import pytest
from harness import admit, connect_all, wait_for

HEADER = struct.Struct("<4sHHI")  # magic, version, type, payload length
HELLO = 2


def frame(msg_type, payload=b"", version=None, magic=b"PCOM", length=None):
    version = pcomm.PROTOCOL_VERSION if version is None else version
    length = len(payload) if length is None else length
    return HEADER.pack(magic, version, msg_type, length) + payload


def string(s):
    data = s.encode()
    return struct.pack("<I", len(data)) + data


def hello_payload(run="default", data_address="127.0.0.1:9", credentials=""):
    return string(run) + string(data_address) + string(credentials)


def exchange(address, data, shut_write=False, wait=3.0):
    """Sends data, returns everything received until the far side closes. Fails the test
    if the connection is still open after `wait` seconds."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                pytest.fail(f"connection still open after {wait} s; got {received!r}")
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


def error_text(reply):
    magic, version, msg_type, length = HEADER.unpack(reply[: HEADER.size])
    assert magic == b"PCOM" and msg_type == 1, reply
    code, text_len = struct.unpack("<HI", reply[HEADER.size : HEADER.size + 6])
    return code, reply[HEADER.size + 6 : HEADER.size + 6 + text_len].decode()


def assert_still_serves(coordinator, spawn):
    peers = [spawn(coordinator.address, timeout=10) for _ in range(2)]
    connect_all(peers)
    assert [p.ok("info")["world_size"] for p in peers] == [2, 2]


@pytest.fixture
def quick_coordinator():
    # A short heartbeat timeout also bounds how long a silent half-open connection lives.
    with pcomm.Coordinator(listen="127.0.0.1:0", heartbeat_timeout=1.0) as coord:
        yield coord


CASES = {
    "random_bytes": (os.urandom(4096), False),
    "bad_magic": (frame(HELLO, hello_payload(), magic=b"HTTP"), False),
    "truncated_frame_then_close": (frame(HELLO, hello_payload())[:20], True),
    "truncated_frame_left_open": (frame(HELLO, hello_payload())[:20], False),
    "length_2_pow_31": (frame(HELLO, b"", length=2**31), False),
    "length_max_u32": (frame(HELLO, b"", length=2**32 - 1), False),
    "truncated_payload_fields": (frame(HELLO, struct.pack("<I", 1000) + b"abc"), False),
    "trailing_bytes": (frame(HELLO, hello_payload() + b"xx"), False),
    "string_length_huge": (frame(HELLO, struct.pack("<I", 2**31)), False),
    "unknown_type_before_hello": (frame(77, b""), False),
    "bad_data_address": (frame(HELLO, hello_payload(data_address="nonsense")), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_garbage_closes_only_that_connection(quick_coordinator, spawn, case):
    # One peer is already in; it must survive the attack untouched.
    bystander = spawn(quick_coordinator.address)
    bystander.ok("connect")
    data, shut = CASES[case]
    exchange(quick_coordinator.address, data, shut_write=shut)
    info = bystander.ok("info")
    assert info["world_size"] == 1
    assert bystander.ok("update_topology", timeout=5)["world_size"] == 1
    late = spawn(quick_coordinator.address, timeout=10)
    admit([bystander], late)
    assert quick_coordinator.peers == [info["peer_id"], late.ok("info")["peer_id"]]


def test_wrong_version_gets_reply_naming_both_versions(coordinator, spawn):
    reply = exchange(coordinator.address, frame(HELLO, hello_payload(), version=999))
    code, text = error_text(reply)
    assert code == 1
    assert "999" in text and str(pcomm.PROTOCOL_VERSION) in text
    assert_still_serves(coordinator, spawn)


def test_wrong_run_name_is_refused_with_reason(coordinator, spawn):
    reply = exchange(coordinator.address, frame(HELLO, hello_payload(run="other-run")))
    code, text = error_text(reply)
    assert code == 2
    assert "'other-run'" in text and "'default'" in text
    assert_still_serves(coordinator, spawn)


def test_wrong_run_name_raises_invalid_argument(coordinator):
    comm = pcomm.Communicator(coordinator.address, timeout=5, run="elsewhere")
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="run name mismatch"):
        comm.connect()
    comm.close()


def test_many_bad_connections_at_once(quick_coordinator, spawn):
    socks = []
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", int(quick_coordinator.address.rsplit(":", 1)[1])))
        s.sendall(os.urandom(i * 7 + 1))
        socks.append(s)
    assert_still_serves(quick_coordinator, spawn)
    for s in socks:
        s.close()


LINK_HELLO = 20


@pytest.mark.parametrize(
    "data",
    [
        os.urandom(2048),
        frame(LINK_HELLO, b"", length=2**31),
        frame(LINK_HELLO, string("default") + string("nobody") + struct.pack("<QII", 1, 0, 4)),
        frame(LINK_HELLO, string("wrong-run") + string("nobody") + struct.pack("<QII", 99, 0, 4)),
        frame(LINK_HELLO, string("default") + string("nobody") + struct.pack("<QII", 1, 5, 4)),
        frame(LINK_HELLO, string("default") + string("nobody") + struct.pack("<QII", 1, 0, 2**32 - 1)),
    ],
    ids=["random", "huge_length", "stale_pool", "wrong_run", "bad_index", "huge_pool"],
)
def test_garbage_on_a_peer_data_port_leaves_the_peer_running(coordinator, spawn, data):
    comm = pcomm.Communicator(coordinator.address, timeout=10)
    try:
        comm.connect()
        exchange(comm.data_address, data, wait=12)
        # The peer still links with a newcomer (this opens real data connections).
        other = spawn(coordinator.address)
        other.send("connect")
        assert wait_for(lambda: comm.pending_peers == 1, 10)
        comm.update_topology()
        assert other.reply(10)["ok"]
        assert comm.world_size == 2
    finally:
        comm.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coordinator": "no-port"}, "no ':' before the port"),
        ({"coordinator": "host:99999"}, "above 65535"),
        ({"coordinator": "host:abc"}, "not a number"),
        ({"coordinator": ":80"}, "host is empty"),
        ({"coordinator": "127.0.0.1:0"}, "port 0"),
        ({"coordinator": "[::1]:80"}, "IPv6"),
        ({"coordinator": 1234}, "host:port"),
        ({"coordinator": "127.0.0.1:80", "connections_per_peer": 0}, "between 1 and 64"),
        ({"coordinator": "127.0.0.1:80", "timeout": -1}, "positive"),
        ({"coordinator": "127.0.0.1:80", "timeout": "soon"}, "number of seconds"),
        ({"coordinator": "127.0.0.1:80", "data_listen": "x"}, "no ':'"),
    ],
)
def test_bad_communicator_arguments_raise_invalid_argument(kwargs, message):
    with pytest.raises(pcomm.errors.InvalidArgumentError, match=message) as info:
        pcomm.Communicator(**kwargs)
    assert isinstance(info.value, ValueError)


def test_bad_coordinator_arguments_raise_invalid_argument():
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="invalid address"):
        pcomm.Coordinator(listen="localhost")
    with pytest.raises(pcomm.errors.InvalidArgumentError, match="heartbeat_timeout"):
        pcomm.Coordinator(heartbeat_timeout=0)


def test_calls_before_connect_are_refused(coordinator):
    with pcomm.Communicator(coordinator.address) as comm:
        with pytest.raises(pcomm.errors.InvalidArgumentError, match="call connect"):
            comm.update_topology()
        assert comm.world_size == 0 and comm.rank == -1
