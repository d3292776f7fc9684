"""PCOMM_LOG_LEVEL, log line context, and the `pcomm` command line."""

import re
import subprocess
import sys
import time

import pcomm
import pytest
from harness import CoordinatorProcess, PeerProcess, RelayProcess, connect_all, wait_for


def test_info_log_lines_name_peer_id_and_epoch(coordinator, spawn):
    peers = [spawn(coordinator.address, env={"PCOMM_LOG_LEVEL": "info"}) for _ in range(2)]
    connect_all(peers)
    info = peers[1].ok("info")
    pattern = re.compile(rf"\[pcomm \S+ INFO peer {info['peer_id']} epoch {info['epoch']}\] ")
    assert wait_for(lambda: any(pattern.search(line) for line in peers[1].stderr_lines), 5), peers[1].stderr()


def test_default_level_is_quiet_and_off_silences_errors(spawn):
    coord = CoordinatorProcess(heartbeat_timeout=1.0)
    try:
        quiet = spawn(coord.address, coordinator_grace=0.5)
        silent = spawn(coord.address, env={"PCOMM_LOG_LEVEL": "off"}, coordinator_grace=0.5)
        connect_all([quiet, silent])
        coord.kill()
        for p in (quiet, silent):
            assert p.call("update_topology", timeout=5)["error"] == "CoordinatorLostError"
        time.sleep(0.1)
        assert not any(" INFO " in line for line in quiet.stderr_lines), "default level is warning"
        assert any(" ERROR " in line and "coordinator" in line for line in quiet.stderr_lines)
        assert not any("[pcomm" in line for line in silent.stderr_lines)
    finally:
        coord.cleanup()


def test_cli_help_lists_options():
    out = subprocess.run(
        [sys.executable, "-m", "pcomm", "coordinator", "--help"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    for option in ("--listen", "--heartbeat-timeout", "--run"):
        assert option in out.stdout


def test_cli_coordinator_serves_peers_and_reports_epochs():
    coord = CoordinatorProcess(heartbeat_timeout=2.0, run="cli-run")
    peers = []
    try:
        peers = [PeerProcess(coord.address, run="cli-run") for _ in range(2)]
        connect_all(peers)
        assert peers[0].ok("info")["world_size"] == 2
        assert wait_for(lambda: coord.lines.qsize() > 0 and "2 peers" in "".join(list(coord.lines.queue)), 5)
    finally:
        for p in peers:
            p.cleanup()
        coord.cleanup()


def test_cli_bad_address_is_a_clear_error():
    out = subprocess.run(
        [sys.executable, "-m", "pcomm", "coordinator", "--listen", "nope"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert "invalid address 'nope'" in out.stderr


def test_import_pcomm_stays_light_and_subpackages_load_on_first_use():
    code = (
        "import sys, pcomm\n"
        "assert 'torch' not in sys.modules and 'libp2p' not in sys.modules and 'trio' not in sys.modules\n"
        "assert pcomm.discovery.Node and pcomm.crdt.Store and 'libp2p' in sys.modules\n"
        "assert pcomm.optim.DiLoCo and 'torch' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_cli_relay_and_coordinator_relay_option():
    for argv, message in (
        (["coordinator", "--listen", "127.0.0.1:0", "--relay", "nope"], "invalid address 'nope'"),
        (["relay", "--listen", "nope"], "invalid address 'nope'"),
        (["relay", "--listen", "127.0.0.1:0", "--max-circuits", "0"], "max_circuits"),
        (["relay", "--listen", "127.0.0.1:0", "--announce", "r"], "--bootstrap"),
    ):
        out = subprocess.run([sys.executable, "-m", "pcomm", *argv], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and message in out.stderr, (argv, out.stderr)
    relay = RelayProcess()
    try:
        with pcomm.Coordinator(relays=[relay.address]) as coord:
            assert coord.relays == [relay.address]
            coord.add_relay("127.0.0.1:9")
            assert coord.relays == [relay.address, "127.0.0.1:9"]
            with pytest.raises(pcomm.errors.InvalidArgumentError):
                coord.add_relay("no-port")
    finally:
        relay.cleanup()


def test_version():
    out = subprocess.run([sys.executable, "-m", "pcomm", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == f"pcomm {pcomm.__version__} (wire protocol {pcomm.PROTOCOL_VERSION})"


def test_logs_name_who_joined_and_who_is_gone(capfd, monkeypatch):
    import threading

    monkeypatch.setenv("PCOMM_LOG_LEVEL", "info")
    pcomm._pcomm.reload_log_level()
    try:
        with pcomm.Coordinator() as coord:
            a, b = pcomm.Communicator(coord.address, timeout=10), pcomm.Communicator(coord.address, timeout=10)
            a.connect()
            joiner = threading.Thread(target=b.connect)
            joiner.start()
            a.wait_for_peers(2)
            joiner.join(10)
            a_id, b_id = a.peer_id, b.peer_id
            b.close()
            assert wait_for(lambda: a.world_size == 1, 10)
            a.close()
        err = capfd.readouterr().err
    finally:
        monkeypatch.setenv("PCOMM_LOG_LEVEL", "warning")
        pcomm._pcomm.reload_log_level()
    assert f"ring of 2; joined: {b_id}" in err, err
    assert f"ring of 1; gone: {b_id}" in err, err
    assert f"peer {b_id} left the ring" in err and a_id in err, err
    assert "no longer in the ring" not in err, "a clean leave is not a loss"


def test_survivors_warn_of_a_lost_peer_with_the_reason(coordinator, spawn):
    peers = [spawn(coordinator.address) for _ in range(3)]  # default level: warnings only
    connect_all(peers)
    ids = [p.ok("info")["peer_id"] for p in peers]
    peers[2].ok("close")
    assert wait_for(lambda: peers[0].ok("info")["world_size"] == 2, 10)
    peers[1].kill()
    pattern = re.compile(rf" WARNING peer {ids[0]} epoch \d+\] peer {ids[1]} is no longer in the ring "
                         rf"\(epoch \d+\): lost: ")
    assert wait_for(lambda: any(pattern.search(line) for line in peers[0].stderr_lines), 10), peers[0].stderr()
    assert not any(ids[2] in line for line in peers[0].stderr_lines), "the clean leave stays below warning"


def test_status_shows_the_ring_without_a_peer(tmp_path):
    secret = tmp_path / "run.secret"
    secret.write_text("s" * 32)
    with pcomm.Coordinator(secret="s" * 32) as coord:
        peers = [pcomm.Communicator(coord.address, timeout=10, secret="s" * 32) for _ in range(2)]
        import threading

        import torch

        peers[0].connect()
        joiner = threading.Thread(target=peers[1].connect)
        joiner.start()
        peers[0].wait_for_peers(2)
        joiner.join(10)
        assert peers[0].run_id == peers[1].run_id == coord.run_id and len(coord.run_id) == 16
        # Both peers have reported their links (throughput counts from a peer's first report).
        assert wait_for(lambda: all(p["links"] for p in pcomm._pcomm.coordinator_status(coord.address, b"s" * 32, 5)["peers"]), 5)
        # One all-reduce of 1 MiB each, and a step from the application on one peer.
        data = [torch.full((1 << 18,), float(i + 1)) for i in range(2)]
        works = [p.all_reduce_async(t) for p, t in zip(peers, data)]
        for w in works:
            w.wait()
        assert torch.equal(data[0], torch.full((1 << 18,), 3.0))
        peers[0].set_step(7)
        ring = coord.peers
        first = ring.index(peers[0].peer_id)
        # Reports go out once a second: wait for the ones after the op and the step.
        want = [(7 if i == first else None, 1) for i in range(2)]
        assert wait_for(lambda: [(p["step"], p["ops_done"]) for p in
                                 pcomm._pcomm.coordinator_status(coord.address, b"s" * 32, 5)["peers"]] == want, 5)
        s = pcomm._pcomm.coordinator_status(coord.address, b"s" * 32, 5)
        for rank, p in enumerate(s["peers"]):
            other = ring[1 - rank]
            assert p["peer_id"] == ring[rank] and p["ops_done"] == 1 and p["links"] == [(other, "direct")], p
            assert p["last_op"] == "tag 0, world 2" and 0 <= p["last_op_age"] < 10, p
            # 1 MiB sent in the last 10 s (a ring of 2 sends half of the buffer twice).
            assert 1 << 20 <= p["send_rate"] * 10 <= 2 * (1 << 20) * 10, p
        out = subprocess.run([sys.executable, "-m", "pcomm", "status", "--coordinator", coord.address,
                              "--secret-file", str(secret)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert f"(incarnation {coord.run_id}, term 1)" in out.stdout
        assert f"epoch {coord.epoch}: 2 peers, 0 pending" in out.stdout
        for rank, peer_id in enumerate(ring):
            step = "7" if rank == first else "-"
            assert re.search(rf"^ +{rank}  {peer_id}  127\.0\.0\.1:\d+ +{step} +1 +[\d.]+ s +[\d.]+ [KMG]?B/s  "
                             rf"{ring[1 - rank]} direct$", out.stdout, re.M), out.stdout
        wrong = subprocess.run([sys.executable, "-m", "pcomm", "status", "--coordinator", coord.address],
                               capture_output=True, text=True, timeout=30, env={**__import__("os").environ,
                                                                                "PCOMM_SECRET_FILE": ""})
        assert wrong.returncode == 2 and "needs its secret" in wrong.stderr, wrong.stderr
        for p in peers:
            p.close()


def test_status_finds_the_coordinator_by_run_name():
    from pcomm.discovery import Node

    with Node().start() as dht:
        coord = CoordinatorProcess(run="named-run", announce_through=[dht.addrs[0]])
        try:
            out = subprocess.run([sys.executable, "-m", "pcomm", "status", "--run", "named-run", "--bootstrap",
                                  dht.addrs[0]], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith(f"run 'named-run' (incarnation "), out.stdout
            assert f"at {coord.address}, epoch 0: 0 peers, 0 pending" in out.stdout, out.stdout
            neither = subprocess.run([sys.executable, "-m", "pcomm", "status"], capture_output=True, text=True,
                                     timeout=60)
            assert neither.returncode == 2 and "give --coordinator HOST:PORT, or --run NAME" in neither.stderr
        finally:
            coord.cleanup()
