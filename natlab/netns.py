"""Network-namespace plumbing: nodes, command helpers and the cleanup registry."""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from natlab.spec import NatSpec

DEFAULT_TIMEOUT = 10.0


class LabError(RuntimeError):
    """A lab command failed."""


def run(
    argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace, capturing output as text."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.strip()}"
        )
    return proc


def list_netns() -> list[str]:
    """Names of all named network namespaces (`ip netns list`)."""
    out = run(["ip", "netns", "list"]).stdout
    # Lines look like "name (id: 3)" or just "name".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# Safety net: namespaces still alive at interpreter exit (e.g. a lab that was
# never closed because the process was interrupted) are deleted here.
_live_lock = threading.Lock()
_live_netns: set[str] = set()


def register_netns(name: str) -> None:
    with _live_lock:
        _live_netns.add(name)


def delete_netns(name: str) -> None:
    """Delete a namespace; interfaces inside it (veth ends) vanish with it."""
    run(["ip", "netns", "delete", name], check=False)
    with _live_lock:
        _live_netns.discard(name)


@atexit.register
def _cleanup_at_exit() -> None:
    with _live_lock:
        leftover = sorted(_live_netns)
    for name in leftover:
        delete_netns(name)


@dataclass(eq=False)
class Node:
    """A host, router or switch living in its own network namespace."""

    name: str
    netns: str
    ips: list[str] = field(default_factory=list)

    @property
    def ip(self) -> str:
        """Primary address."""
        if not self.ips:
            raise LabError(f"node {self.name} has no address")
        return self.ips[0]

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def run(
        self, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside this node's namespace."""
        return run([*self.exec_prefix, *argv], timeout=timeout, check=check)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process inside this node's namespace (caller owns it)."""
        return subprocess.Popen([*self.exec_prefix, *argv], **kw)

    def ip_cmd(self, *args: str) -> None:
        """`ip -n NETNS ...` (cheaper than `ip netns exec NETNS ip ...`)."""
        run(["ip", "-n", self.netns, *args])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "netns": self.netns, "ip": self.ip, "ips": list(self.ips)}


@dataclass(eq=False)
class Router(Node):
    """A NAT router configured by router.sh."""

    spec: NatSpec | None = None
    public_ip: str = ""
    lan_ip: str = ""
    wan_if: str = "wan0"
    lan_if: str = "lan0"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(public_ip=self.public_ip, lan_ip=self.lan_ip)
        if self.spec is not None:
            d["nat"] = {
                "kind": self.spec.kind.value,
                "binding_timeout": self.spec.binding_timeout,
                "loss": self.spec.loss,
                "hairpin": self.spec.hairpin,
                "wan_firewall": self.spec.wan_firewall,
            }
        return d


# A wire carries datagrams one by one: with UDP segmentation offload off on a host's veth,
# a sender's GSO batch is cut there (in software, before the veth), not at its destination,
# so a router's loss rule drops datagrams rather than whole 64 KB batches of them, a burst
# no real link makes. (TCP keeps its offloads: the lab's TCP ceiling stays one.)
def no_udp_segmentation(interface: str) -> list[str]:
    """The command that turns UDP segmentation offload off on ``interface``."""
    return ["ethtool", "-K", interface, "tx-udp-segmentation", "off"]


def netns_supported() -> tuple[bool, str]:
    """Can we create namespaces, veths and nft tables here? (reason if not)."""
    if os.geteuid() != 0:
        return False, "the NAT lab needs root (network namespaces, nftables)"
    probe = f"nlprobe{os.getpid()}-{threading.get_ident() % 100000}"
    try:
        run(["ip", "netns", "add", probe])
    except (OSError, LabError) as exc:
        return False, f"cannot create network namespaces: {exc}"
    try:
        run(["ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
        run(["ip", "netns", "exec", probe, "nft", "add", "table", "ip", "probe"])
        run(["ip", "netns", "exec", probe, *no_udp_segmentation("probe0")])
    except (OSError, LabError) as exc:
        return False, f"veth/nftables/ethtool unavailable in a namespace: {exc}"
    finally:
        run(["ip", "netns", "delete", probe], check=False)
    return True, ""
