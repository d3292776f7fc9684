"""A small internet in network namespaces, for NAT traversal tests (needs root).

One "public" bridge 198.18.0.0/24; the root namespace sits on it at 198.18.0.254 and
runs the coordinator and relays. Hosts are of three kinds:

  - "a": a public host on the bridge (198.18.0.N);
  - "b": a private host 198.19.N.2 behind its own router (WAN 198.18.0.100+N) doing
    port-preserving MASQUERADE, like a home router;
  - "c": the same behind a router doing MASQUERADE --random-fully: every connection gets
    a new random port (symmetric-like NAT).

Routers drop unsolicited inbound traffic (only conntrack's ESTABLISHED/RELATED passes).
Addresses come from 198.18.0.0/15 only. Everything is deleted on exit, also on failure.
While it exists, $PCOMM_SECRET_FILE names a run secret (netns.RunSecret): the runs in it
listen off loopback, so they are authenticated and encrypted like real ones.
"""

from __future__ import annotations

import os
import subprocess

from netns import RunSecret, available, cap_link  # noqa: F401  (available: re-exported; tests skip with its reason)

PUBLIC_GATEWAY = "198.18.0.254"


def sh(*cmd: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")


class Internet:
    _made_here = 0

    def __init__(self, kinds: list[str], rate: str | None = None) -> None:
        """kinds: one letter per host, e.g. ["a", "b", "b", "c"]. rate: cap every host's
        link to the public net with tbf, both ways (e.g. "200mbit")."""
        for k in kinds:
            if k not in ("a", "b", "c"):
                raise ValueError(f"unknown host kind {k!r}")
        Internet._made_here += 1  # names stay unique when one process builds several
        tag = (os.getpid() % 10000) * 10 + Internet._made_here % 10
        self.tag = tag
        self.kinds = kinds
        self.bridge = f"pnbr{tag}"
        self.hosts = [f"pn{tag}h{i}" for i in range(len(kinds))]
        self.routers = [f"pn{tag}r{i}" if k != "a" else None for i, k in enumerate(kinds)]
        self.rate = rate
        self._made: list[str] = []
        self._links: list[str] = []  # root-side veth ends (deleted with their namespace, but not at once)

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[i]]

    def address(self, i: int) -> str:
        """The host's own address (private for b and c)."""
        return f"198.18.0.{i + 1}" if self.kinds[i] == "a" else f"198.19.{i + 1}.2"

    def public_address(self, i: int) -> str:
        """Where the host appears on the public net (its router's WAN address for b, c)."""
        return f"198.18.0.{i + 1}" if self.kinds[i] == "a" else f"198.18.0.{100 + i + 1}"

    def _netns(self, name: str) -> list[str]:
        sh("ip", "netns", "add", name)
        self._made.append(name)
        ns = ["ip", "netns", "exec", name]
        sh(*ns, "ip", "link", "set", "lo", "up")
        return ns

    def _on_bridge(self, ns_name: str, dev: str, address: str) -> None:
        outside = f"{dev}o"
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", dev)
        self._links.append(outside)
        sh("ip", "link", "set", dev, "netns", ns_name)
        sh("ip", "link", "set", outside, "master", self.bridge)
        sh("ip", "link", "set", outside, "up")
        ns = ["ip", "netns", "exec", ns_name]
        sh(*ns, "ip", "addr", "add", f"{address}/24", "dev", dev)
        sh(*ns, "ip", "link", "set", dev, "up")
        if self.rate:  # both directions: this end's egress, and the bridge port's
            cap_link(ns, dev, self.rate)
            cap_link([], outside, self.rate)

    def __enter__(self) -> "Internet":
        self._secret = RunSecret().__enter__()
        try:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            sh("ip", "addr", "add", f"{PUBLIC_GATEWAY}/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
            for i, kind in enumerate(self.kinds):
                host = self._netns(self.hosts[i])
                if kind == "a":
                    self._on_bridge(self.hosts[i], f"pn{self.tag}a{i}", self.address(i))
                    continue
                router_name = self.routers[i]
                router = self._netns(router_name)
                wan = f"pn{self.tag}w{i}"
                self._on_bridge(router_name, wan, self.public_address(i))
                lan_r, lan_h = f"pn{self.tag}l{i}", f"pn{self.tag}m{i}"
                sh("ip", "link", "add", lan_r, "type", "veth", "peer", "name", lan_h)
                sh("ip", "link", "set", lan_r, "netns", router_name)
                sh("ip", "link", "set", lan_h, "netns", self.hosts[i])
                sh(*router, "ip", "addr", "add", f"198.19.{i + 1}.1/24", "dev", lan_r)
                sh(*router, "ip", "link", "set", lan_r, "up")
                sh(*host, "ip", "addr", "add", f"{self.address(i)}/24", "dev", lan_h)
                sh(*host, "ip", "link", "set", lan_h, "up")
                sh(*host, "ip", "route", "add", "default", "via", f"198.19.{i + 1}.1")
                sh(*router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
                masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE"]
                if kind == "c":
                    masq.append("--random-fully")
                sh(*router, *masq)
                for chain in ("INPUT", "FORWARD"):  # unsolicited inbound traffic is dropped
                    sh(*router, "iptables", "-A", chain, "-i", wan, "-m", "conntrack", "--ctstate",
                       "ESTABLISHED,RELATED", "-j", "ACCEPT")
                    sh(*router, "iptables", "-A", chain, "-i", wan, "-j", "DROP")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._secret.__exit__(None, None, None)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
