"""Network namespaces as separate hosts on one machine (needs root; see DESIGN.md,
"Testing on one machine"): N hosts 198.18.0.1.. on a bridge whose root-side address is
198.18.0.254, each link optionally capped with tbf. Everything is deleted on exit."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile


def cap_link(prefix: list[str], dev: str, rate: str) -> None:
    """Caps dev's egress with tbf (prefix: the command that enters its namespace)."""
    subprocess.run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb",
                    "latency", "50ms"], check=True, capture_output=True)


class RunSecret:
    """A run secret in a temporary file, named by $PCOMM_SECRET_FILE while entered: the
    coordinators, relays and peers started meanwhile (here or as child processes) hold
    it, as every run that listens off loopback must. Nested use keeps the outer one."""

    def __enter__(self) -> "RunSecret":
        self._before = os.environ.get("PCOMM_SECRET_FILE")
        self._path = None
        if self._before is None:
            fd, self._path = tempfile.mkstemp(prefix="pcomm-secret-")
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
            os.environ["PCOMM_SECRET_FILE"] = self._path
        return self

    def __exit__(self, *exc) -> None:
        if self._path is not None:
            os.environ.pop("PCOMM_SECRET_FILE", None)
            os.unlink(self._path)


def available() -> str | None:
    """None if namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "iproute2 (ip, tc) is not installed"
    return None


class Namespaces:
    def __init__(self, hosts: int, rate: str | None = None) -> None:
        tag = os.getpid() % 100000
        self.names = [f"pc{tag}n{i}" for i in range(hosts)]
        self.bridge = f"pcbr{tag}"
        self.rate = rate

    @staticmethod
    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    def address(self, i: int) -> str:
        return f"198.18.0.{i + 1}"

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    def __enter__(self) -> "Namespaces":
        try:
            self.sh("ip", "link", "add", self.bridge, "type", "bridge")
            self.sh("ip", "addr", "add", "198.18.0.254/24", "dev", self.bridge)
            self.sh("ip", "link", "set", self.bridge, "up")
            for i, ns in enumerate(self.names):
                host, peer = f"{ns}h", f"{ns}p"
                self.sh("ip", "netns", "add", ns)
                self.sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
                self.sh("ip", "link", "set", peer, "netns", ns)
                self.sh("ip", "link", "set", host, "master", self.bridge)
                self.sh("ip", "link", "set", host, "up")
                self.sh(*self.prefix(i), "ip", "addr", "add", f"{self.address(i)}/24", "dev", peer)
                self.sh(*self.prefix(i), "ip", "link", "set", peer, "up")
                self.sh(*self.prefix(i), "ip", "link", "set", "lo", "up")
                if self.rate:  # both directions: the peer's egress, and the bridge port's
                    cap_link(self.prefix(i), peer, self.rate)
                    cap_link([], host, self.rate)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
