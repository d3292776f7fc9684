"""Test helpers: peers and coordinators as real processes that tests can kill.

PeerProcess runs tests/peer_worker.py; send() queues a command without waiting (so a
test can start a blocking connect() and drive other peers meanwhile) and reply() reads
the next answer with a deadline, so a test never hangs on a stuck process.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

WORKER = os.path.join(os.path.dirname(__file__), "peer_worker.py")
DHT_WORKER = os.path.join(os.path.dirname(__file__), "dht_worker.py")
CRDT_WORKER = os.path.join(os.path.dirname(__file__), "crdt_worker.py")

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64"]
OPS = ["sum", "avg", "min", "max", "prod"]


def make_input(dtype: str, count: int, index: int, op: str = "sum", seed: int | None = None):
    """Deterministic input of peer `index`: small integers, so that every reduction of
    them is exact in every dtype and order (prod uses -1, 1, 2 to stay in range).
    With a seed: uniform floats in [0, 1) instead (for bit-identity and error bounds)."""
    import numpy as np

    if seed is not None:
        values = np.random.default_rng(seed * 1000 + index).random(count)
    elif op == "prod":
        values = np.array([-1.0, 1.0, 2.0])[(np.arange(count) * 5 + index * 3) % 3]
    else:
        values = ((np.arange(count) * 7 + index * 13) % 11).astype(np.float64)
        if dtype != "uint8":
            values -= 5
    if dtype == "bfloat16":
        import torch

        return torch.tensor(values, dtype=torch.float32).to(torch.bfloat16)
    return values.astype(dtype)


def as_bytes(x) -> bytes:
    """Raw bytes of a numpy array or torch tensor (bfloat16 included)."""
    if hasattr(x, "data_ptr"):
        import torch

        return x.contiguous().view(torch.uint8).numpy().tobytes() if x.numel() else b""
    return x.tobytes()


def digest(x) -> str:
    import hashlib

    return hashlib.sha256(as_bytes(x)).hexdigest()


class ProcessFailed(AssertionError):
    pass


class _Proc:
    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def read_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise ProcessFailed(f"no output within {timeout} s; stderr:\n{self.stderr()}") from None
        if line is None:
            raise ProcessFailed(f"process exited ({self.proc.poll()}); stderr:\n{self.stderr()}")
        return line

    def stderr(self) -> str:
        return "".join(self.stderr_lines[-40:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.kill()


class PeerProcess(_Proc):
    def __init__(self, coordinator: str, env: dict | None = None, prefix: list[str] | None = None, **kwargs) -> None:
        """prefix: a command to run the worker under (e.g. `ip netns exec NAME`)."""
        kwargs["coordinator"] = coordinator
        super().__init__((prefix or []) + [sys.executable, WORKER, json.dumps(kwargs)], env)
        assert self.reply(timeout=30)["result"] == "ready"

    def send(self, command: str, **args) -> None:
        args["cmd"] = command
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = 30) -> dict:
        return json.loads(self.read_line(timeout))

    # `wait` bounds how long the test waits for the reply; `timeout` in args goes to pcomm.
    def call(self, command: str, wait: float = 30, **args) -> dict:
        self.send(command, **args)
        return self.reply(wait)

    def ok(self, command: str, wait: float = 30, **args):
        r = self.call(command, wait, **args)
        if not r["ok"]:
            raise ProcessFailed(f"{command} failed: {r['error']}: {r['message']}")
        return r["result"]


class CoordinatorProcess(_Proc):
    """`pcomm coordinator` as a process (for tests that kill the coordinator)."""

    def __init__(self, heartbeat_timeout: float = 5.0, run: str = "default", env: dict | None = None,
                 announce_through: list[str] | None = None, listen: str = "127.0.0.1:0",
                 args: list[str] | None = None) -> None:
        """announce_through: DHT bootstrap multiaddrs; the coordinator then announces
        ``run`` there and the constructor returns once the record is stored. args: more
        `pcomm coordinator` options (--standby, --peer-of, --state-dir...)."""
        extra = ["--announce", run, "--bootstrap", *announce_through] if announce_through else []
        super().__init__(
            [
                sys.executable, "-m", "pcomm", "coordinator", "--listen", listen,
                "--heartbeat-timeout", str(heartbeat_timeout), "--run", run, *extra, *(args or []),
            ],
            env,
        )
        first = self.read_line(30)
        self.address = first.strip().rsplit(" ", 1)[-1]
        if announce_through:
            line = self.read_line(30)
            assert line.startswith("announced "), line


class RelayProcess(_Proc):
    """`pcomm relay` as a process (for tests that SIGKILL a relay)."""

    def __init__(self, listen: str = "127.0.0.1:0", prefix: list[str] | None = None, env: dict | None = None) -> None:
        super().__init__((prefix or []) + [sys.executable, "-m", "pcomm", "relay", "--listen", listen], env)
        first = self.read_line(30)
        self.address = first.strip().rsplit(" ", 1)[-1]


class _JsonWorker(_Proc):
    """A worker answering one JSON line per {"cmd": ...} line; {"error": ...} raises."""

    def call(self, cmd: str, wait: float = 60, **args) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.read_line(wait))
        if "error" in reply:
            raise ProcessFailed(f"{cmd} failed: {reply['error']}")
        return reply


class DhtProcess(_JsonWorker):
    """tests/dht_worker.py: several discovery nodes in one process."""

    def __init__(self, nodes: int, bootstrap: list[str] | None = None, client: bool = False, env: dict | None = None) -> None:
        argv = [sys.executable, DHT_WORKER, "--nodes", str(nodes)]
        if bootstrap:
            argv += ["--bootstrap", *bootstrap]
        if client:
            argv.append("--client")
        super().__init__(argv, env)
        hello = json.loads(self.read_line(60))
        self.addrs: list[list[str]] = hello["addrs"]
        self.peer_ids: list[str] = hello["peer_ids"]


def admit(members: list[PeerProcess], joiner: PeerProcess, timeout: float = 30) -> list[dict]:
    """The joiner connects and the accepted members admit it with update_topology.
    Returns the replies (members first, joiner last); each must be ok."""
    joiner.send("connect")
    # Only once the coordinator counts it as pending will the barrier admit it.
    assert wait_for(lambda: members[0].ok("info")["pending_peers"] >= 1, timeout), "joiner never became pending"
    for p in members:
        p.send("update_topology")
    replies = [p.reply(timeout) for p in members + [joiner]]
    assert all(r["ok"] for r in replies), replies
    return replies


def join_while_looping(members: list[PeerProcess], joiner: PeerProcess, timeout: float = 10) -> float:
    """The joiner connects while the members loop on update_topology, as a training
    loop would. Returns the joiner's connect() latency as it measured it."""
    joiner.send("connect")
    while True:
        for p in members:
            p.send("update_topology")
        for p in members:
            r = p.reply(timeout)
            assert r["ok"], r
        if r["result"]["world_size"] == len(members) + 1:
            break  # admitted: it is in the ring now, so stop calling without it
    r = joiner.reply(timeout)
    assert r["ok"], r
    return r["elapsed"]


def connect_all(peers: list[PeerProcess], timeout: float = 30) -> None:
    """Connects peers one by one: the first is accepted at once, each later one is
    admitted by an update_topology of those already in."""
    peers[0].ok("connect")
    for i in range(1, len(peers)):
        admit(peers[:i], peers[i], timeout)


def all_reduce_is_exact(peers: list[PeerProcess], count: int, indices: list[int] | None = None,
                        timeout: float = 60) -> list[dict]:
    """Every peer all-reduces make_input(float32, count, its index); each must succeed
    with exactly the sum of those inputs, bit for bit, over a world of all of them."""
    from allreduce_expect import expected

    indices = indices if indices is not None else list(range(len(peers)))
    for p, i in zip(peers, indices):
        p.send("all_reduce", dtype="float32", count=count, index=i, timeout=timeout)
    replies = [p.reply(2 * timeout) for p in peers]
    assert all(r["ok"] for r in replies), replies
    want = digest(expected("float32", "sum", count, len(indices), indices=indices))
    assert [r["result"]["after"] for r in replies] == [want] * len(peers)
    assert [r["result"]["world_size"] for r in replies] == [len(peers)] * len(peers)
    return replies


def start_retry_round(peers: dict[int, PeerProcess], count: int, timeout: float = 60) -> None:
    """Every peer all-reduces make_input(float32, count, its index), retrying at once on
    PeerLostError/AbortedError as a training loop does (peer_worker's all_reduce_retry)."""
    for i, p in peers.items():
        p.send("all_reduce_retry", dtype="float32", count=count, index=i, timeout=timeout)


def finish_retry_round(peers: dict[int, PeerProcess], count: int, wait: float = 120,
                       victim: int | None = None) -> int:
    """The replies of start_retry_round from the peers still running: all must agree, bit
    for bit, on the sum over exactly the world they report: the survivors, or the
    survivors and `victim` (a peer killed during the round) when the op committed before
    the kill landed. Returns how many attempts failed before the retries succeeded."""
    from allreduce_expect import expected

    replies = {i: p.reply(wait) for i, p in peers.items()}
    bad = {i: r for i, r in replies.items() if not r["ok"]}
    assert not bad, bad
    worlds = {r["result"]["world_size"] for r in replies.values()}
    assert len(worlds) == 1, replies
    members = sorted(peers) + ([victim] if victim is not None and worlds == {len(peers) + 1} else [])
    assert worlds == {len(members)}, (worlds, sorted(peers), victim)
    want = digest(expected("float32", "sum", count, len(members), indices=sorted(members)))
    for i, r in replies.items():
        assert r["result"]["after"] == want, f"peer {i} has a wrong sum (world {r['result']['world_size']})"
    return sum(len(r["result"]["errors"]) for r in replies.values())


def sync_all(peers: list[PeerProcess], timeout: float = 60) -> list[dict]:
    """sync_shared_state on every peer at once; each must succeed. Returns the results."""
    for p in peers:
        p.send("state_sync", timeout=timeout)
    replies = [p.reply(1.5 * timeout) for p in peers]
    assert all(r["ok"] for r in replies), replies
    return [r["result"] for r in replies]


def wait_for(predicate, timeout: float, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class ReplicaProcess(_JsonWorker):
    """tests/crdt_worker.py: one CRDT replica (node + store) in its own process."""

    def __init__(self, name: str, bootstrap: list[str] | None = None, prefix: list[str] | None = None, **kwargs) -> None:
        kwargs.update(name=name, bootstrap=bootstrap or [])
        super().__init__((prefix or []) + [sys.executable, CRDT_WORKER, json.dumps(kwargs)])
        hello = json.loads(self.read_line(60))
        self.addrs: list[str] = hello["addrs"]
        self.writer: str = hello["writer"]


def converge(replicas: list, timeout: float) -> float:
    """Seconds until every replica reports the same fingerprint; raises after timeout."""
    start = time.monotonic()
    while True:
        prints = {r.call("state")["fingerprint"] for r in replicas}
        if len(prints) == 1:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise ProcessFailed(f"{len(prints)} different states after {timeout} s")
        time.sleep(0.02)
