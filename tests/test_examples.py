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
