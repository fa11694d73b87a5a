"""Hosts on one machine: a network namespace per host, each on a veth link to one bridge.

The local topology's fault tests and benchmarks cut a host off the network the way a failed
switch port or cable does — its link goes down, packets vanish, no connection is refused or
reset — and heal it again. It needs root (``ip netns``, ``ip link``), and touches nothing but
the bridge and namespaces it made, under names unique to this process.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass, field


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def available() -> bool:
    """Whether this process may make namespaces (root, with iproute2)."""
    if os.geteuid() != 0:
        return False
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@dataclass
class Network:
    """``hosts`` namespaces on a bridge of their own subnet (10.X.Y.0/24, X.Y random)."""

    hosts: int
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}{random.randrange(100)}")
    subnet: str = field(
        default_factory=lambda: f"10.{random.randrange(160, 250)}.{random.randrange(1, 250)}"
    )
    made: bool = False

    @property
    def bridge(self) -> str:
        return f"hb{self.tag}"[:15]

    def namespace(self, i: int) -> str:
        return f"hie{self.tag}n{i}"

    def link(self, i: int) -> str:
        return f"hv{self.tag}n{i}"[:15]

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    @property
    def gateway(self) -> str:
        """This (the root) namespace's address on the bridge: clients reach hosts from it."""
        return f"{self.subnet}.1"

    def make(self) -> None:
        self.made = True
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(self.hosts):
            ns = self.namespace(i)
            _ip("netns", "add", ns)
            _ip("link", "add", self.link(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", self.link(i), "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``i`` (``ip netns exec`` replaces itself with it)."""
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def cut(self, i: int) -> None:
        """Host ``i``'s link down: nothing reaches it, nothing leaves it."""
        _ip("link", "set", self.link(i), "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self.link(i), "up")

    def remove(self) -> None:
        if not self.made:
            return
        for i in range(self.hosts):
            subprocess.run(["ip", "netns", "del", self.namespace(i)], capture_output=True)
            subprocess.run(["ip", "link", "del", self.link(i)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.made = False
