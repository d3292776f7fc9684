"""Progress in the run's CRDT store: the ProgressBoard's numbers, DiLoCo peers
publishing at every outer step, and `pcomm progress` printing their table."""

import subprocess
import sys
import time

import pytest


from harness import ReplicaProcess, wait_for
from test_diloco import DiLoCoPeer

from pcomm.crdt import ProgressBoard, Store, progress_table
from pcomm.discovery import Node


def test_board_derives_samples_and_throughput_and_coalesces():
    with Store("progress-unit") as store:
        board = ProgressBoard(store, samples_per_step=32, min_interval=0.2)
        assert board.report(10)
        first = store.map("progress")[store.peer_id]
        assert (first["step"], first["samples"], first["throughput"]) == (10, 320, None)
        assert not board.report(11)  # within min_interval: skipped
        time.sleep(0.25)
        assert board.report(20, outer_step=2)
        e = store.map("progress")[store.peer_id]
        assert e["samples"] == 640 and e["outer_step"] == 2
        assert 10 * 32 / (e["time"] - first["time"]) == pytest.approx(e["throughput"])
        table = progress_table(store, now=e["time"] + 1.5).splitlines()
        assert table[0] == "1 peers reported (no run incarnation named)"
        assert table[1].split() == ["peer", "step", "samples", "throughput", "outer", "age", "s", "state"]
        assert table[2].split()[1:3] == ["20", "640"] and table[2].split()[-3:] == ["2", "1.5", "-"]
        # Anyone can write to the store: junk rows print as '?', they do not break the table.
        progress = store.map("progress")
        progress["junk-list"] = [1, 2]
        progress["junk-strings"] = {"step": "many", "time": {"a": 1}, "throughput": [1]}
        rows = [line.split() for line in progress_table(store, now=e["time"]).splitlines()[2:]]
        assert rows[0][1] == "20" and sorted(r[1] for r in rows[1:]) == ["?", "?"]


class FakeComm:
    """What a ProgressBoard reads of a Communicator."""

    def __init__(self, peer_id, run_id, epoch, ring):
        self.peer_id, self.run_id, self.epoch, self.peers = peer_id, run_id, epoch, ring
        self.world_size, self.rank = len(ring), ring.index(peer_id)


def test_table_shows_the_newest_incarnation_and_who_is_gone():
    with Store("progress-incarnations") as store:
        now = time.time()
        # An earlier incarnation of the run: its rows must not show.
        ProgressBoard(store, min_interval=0).report(900, comm=FakeComm("old0", "run-1", 9, ["old0"]))
        time.sleep(0.01)
        # This incarnation: b died after epoch 2 (its row stays in the store), c joined.
        ring2 = ["a", "b"]
        ProgressBoard(store, min_interval=0).report(5, comm=FakeComm("b", "run-2", 2, ring2))
        ProgressBoard(store, min_interval=0).report(5, comm=FakeComm("a", "run-2", 2, ring2))
        ring3 = ["a", "c"]
        ProgressBoard(store, min_interval=0).report(10, comm=FakeComm("c", "run-2", 3, ring3))
        ProgressBoard(store, min_interval=0).report(10, outer_step=2, comm=FakeComm("a", "run-2", 3, ring3))
        rows = store.map("progress").to_dict()
        assert set(rows) == {"old0", "a", "b", "c"} and rows["a"]["ring"] == ring3 and "ring" not in rows["c"]
        lines = progress_table(store, now=now + 60).splitlines()
        assert lines[0].startswith("run incarnation run-2: 3 peers reported; ring of 2 at epoch 3, as of 6")
        assert lines[0].endswith("; 1 rows of earlier incarnations not shown")
        table = {line.split()[0]: line.split() for line in lines[2:]}
        assert {k: (v[1], v[-1]) for k, v in table.items()} == {"a": ("10", "alive"), "c": ("10", "alive"),
                                                                 "b": ("5", "gone")}
        assert table["a"][4] == "2"
    with Store("progress-empty") as store:
        assert progress_table(store) == "no peer of this run has reported progress yet"


def test_diloco_peers_publish_progress_and_the_cli_prints_it(coordinator):
    with Node().start() as dht:
        boot = dht.addrs[0]
        peers = [DiLoCoPeer(coordinator.address, index=i, sync_every=5, rounds=3, min_world=2,
                            progress_bootstrap=[boot], run="default") for i in range(2)]
        try:
            ids = sorted(p.read_all()[0][-1]["peer"] for p in peers)
            out = subprocess.run([sys.executable, "-m", "pcomm", "progress", "--run", "default", "--bootstrap", boot],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            assert lines[0].startswith(f"run incarnation {coordinator.run_id}: 2 peers reported; ring of 2 at epoch ")
            rows = [line.split() for line in lines[2:]]
            # One row per peer, keyed by its peer id, both in the ring.
            assert sorted(r[0] for r in rows) == ids
            assert [r[-1] for r in rows] == ["alive", "alive"]
            # Every outer boundary reports: the last after 3 rounds of 5 steps of 64 samples.
            assert [r[1:3] for r in rows] == [["15", "960"], ["15", "960"]]
            assert [r[4] for r in rows] == ["3", "3"]
        finally:
            for p in peers:
                try:
                    p.proc.stdin.write("\n")
                    p.proc.stdin.flush()
                except OSError:
                    pass
            for p in peers:
                p.cleanup()


def test_cli_says_when_no_replica_of_the_run_exists():
    with Node().start() as dht:
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "pcomm", "progress", "--run", "nobody", "--bootstrap", dht.addrs[0],
                              "--timeout", "2"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert "no replica of the store of run 'nobody' found within 2.0 s" in out.stderr
        assert time.monotonic() - start < 10


def test_cli_outlasts_a_dead_replica_and_says_when_nobody_reported():
    """A replica whose process died keeps its DHT record until it expires. Before the
    fix, `pcomm progress` synced as soon as it knew one replica and failed with "none of
    the 1 replicas answered" when that one was the dead one, though live ones came up."""
    with Node().start() as dht:
        boot = dht.addrs[0]
        dead = ReplicaProcess("default", bootstrap=[boot], sync_interval=0.2)
        try:
            dead.call("write", ops=[["map", "progress", "dead", {"step": 1, "time": time.time()}]])
            with Node(bootstrap=[boot], server=False).start() as probe:  # its record is in the DHT
                assert wait_for(lambda: len(probe.lookup("peer", "crdt:default")) == 1, 20)
        finally:
            dead.proc.kill()
            dead.cleanup()
        cli = subprocess.Popen([sys.executable, "-m", "pcomm", "progress", "--run", "default", "--bootstrap", boot,
                                "--timeout", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        live = None
        try:
            time.sleep(1.5)  # the CLI has found the dead replica only
            live = ReplicaProcess("default", bootstrap=[boot], sync_interval=0.2)
            live.call("write", ops=[["map", "config", "lr", 0.1]])  # no progress row yet
            out, err = cli.communicate(timeout=60)
            assert cli.returncode == 0, err
            assert out.strip() == "no peer of this run has reported progress yet", out
            live.call("write", ops=[["map", "progress", "live", {"step": 7, "time": time.time()}]])
            again = subprocess.run([sys.executable, "-m", "pcomm", "progress", "--run", "default", "--bootstrap",
                                    boot], capture_output=True, text=True, timeout=60)
            assert again.returncode == 0, again.stderr
            assert [line.split()[:2] for line in again.stdout.splitlines()[2:]] == [["live", "7"]], again.stdout
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.communicate()
            if live is not None:
                live.cleanup()
