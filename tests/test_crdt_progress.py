"""Progress in the run's CRDT store: the ProgressBoard's numbers, DiLoCo peers
publishing at every outer step, and `pcomm progress` printing their table."""

import subprocess
import sys
import time

import pytest


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
        assert table[0].split() == ["peer", "step", "samples", "throughput", "outer", "age", "s"]
        assert table[1].split()[1:3] == ["20", "640"] and table[1].split()[-2:] == ["2", "1.5"]
        # Anyone can write to the store: junk rows print as '?', they do not break the table.
        progress = store.map("progress")
        progress["junk-list"] = [1, 2]
        progress["junk-strings"] = {"step": "many", "time": {"a": 1}, "throughput": [1]}
        rows = [line.split() for line in progress_table(store, now=e["time"]).splitlines()[1:]]
        assert rows[0][1] == "20" and sorted(r[1] for r in rows[1:]) == ["?", "?"]


def test_diloco_peers_publish_progress_and_the_cli_prints_it(coordinator):
    with Node().start() as dht:
        boot = dht.addrs[0]
        peers = [DiLoCoPeer(coordinator.address, index=i, sync_every=5, rounds=3, min_world=2,
                            progress_bootstrap=[boot], run="default") for i in range(2)]
        try:
            for p in peers:
                p.read_all()
            out = subprocess.run([sys.executable, "-m", "pcomm", "progress", "--run", "default", "--bootstrap", boot],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            rows = [line.split() for line in out.stdout.splitlines()[1:]]
            assert len(rows) == 2
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
