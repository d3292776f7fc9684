"""The examples run end to end (shortened): they are part of what users trust."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_diloco_digits_reaches_95_percent():
    out = run("examples/diloco_digits.py", "--steps", "600", "--sync-every", "50")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all peers equal: True" in out.stdout
    assert "50x more" in out.stdout


def test_local_swarm_survives_a_kill():
    out = run("examples/local_swarm.py", "--seconds", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SIGKILL" in out.stdout and "0 peer(s) failed" in out.stdout
    assert "every all-reduce exact" in out.stdout


def test_diloco_charlm_learns_and_peers_end_bit_identical():
    import re

    out = run("examples/diloco_charlm.py", "--peers", "3", "--steps", "200", "--sync-every", "50", "--corpus-mb", "1",
              "--width", "64", "--no-token-baseline")
    assert out.returncode == 0, out.stdout + out.stderr
    entropy = float(re.search(r"unigram entropy ([0-9.]+) nats", out.stdout).group(1))
    loss = float(re.search(r"DiLoCo sync, 3 peers, H=50, minmax_u8: held-out loss ([0-9.]+)", out.stdout).group(1))
    assert loss < 0.85 * entropy, (loss, entropy)  # it learned context, not just byte frequencies
    assert "all peers bit-identical: True (3 peers)" in out.stdout
    assert out.stdout.count("outer step ") == 4  # a line per outer step while it runs
