"""Lab topologies built from network namespaces, veths, bridges and router.sh.

Every segment ("internet", each LAN) is a Linux bridge inside its own switch
namespace; every node reaches it through a veth created directly between the
two namespaces, so nothing is ever named or configured in the root namespace.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from natlab.agent import Agent
from natlab.netns import (
    LabError,
    Node,
    Router,
    delete_netns,
    no_udp_segmentation,
    register_netns,
    run,
)
from natlab.spec import NatKind, NatSpec

log = structlog.get_logger(__name__)

ROUTER_SH = Path(__file__).with_name("router.sh")

# Documentation ranges only (RFC 5737): the lab's internet is never routable.
INTERNET_PREFIX = 24
SERVER_IPS = ("203.0.113.10", "203.0.113.11")  # two addresses for RFC 5780 tests
OUTSIDE_IP = "203.0.113.99"  # unrelated third party / attacker
NAT_PUBLIC_IPS = {"nat_a": "203.0.113.1", "nat_b": "203.0.113.2", "nat": "203.0.113.1"}
CGN_PUBLIC_IP = "203.0.113.3"
OPEN_HOST_IPS = {"a": "203.0.113.21", "b": "203.0.113.22"}
CARRIER_NET = "100.64.0"  # RFC 6598 shared address space between CGN and homes
CARRIER_PREFIX = 10


class Lab:
    """A running NAT lab. Use the topology constructors, as a context manager."""

    def __init__(self, topology: str = "custom") -> None:
        self.topology = topology
        self.prefix = f"nl{secrets.token_hex(3)}-"
        self.nodes: dict[str, Node] = {}
        self.hosts: dict[str, Node] = {}
        self.routers: dict[str, Router] = {}
        self.switches: dict[str, Node] = {}
        self._agents: dict[str, Agent] = {}
        self._ports: dict[str, int] = {}
        self._closed = False

    # ----------------------------------------------------------- topologies
    @classmethod
    def two_nats(cls, a: NatSpec, b: NatSpec) -> Lab:
        """Host "a" behind "nat_a", host "b" behind "nat_b", both on the internet."""
        lab = cls("two-nats")
        with lab._building():
            inet = lab._internet()
            lab._site(
                "a",
                a,
                "nat_a",
                inet,
                NAT_PUBLIC_IPS["nat_a"],
                INTERNET_PREFIX,
                None,
                "10.0.1",
                OPEN_HOST_IPS["a"],
            )
            lab._site(
                "b",
                b,
                "nat_b",
                inet,
                NAT_PUBLIC_IPS["nat_b"],
                INTERNET_PREFIX,
                None,
                "10.0.2",
                OPEN_HOST_IPS["b"],
            )
        return lab

    @classmethod
    def same_lan(cls, nat: NatSpec) -> Lab:
        """Hosts "a" and "b" on one LAN behind one NAT called "nat"."""
        lab = cls("same-lan")
        with lab._building():
            inet = lab._internet()
            if nat.kind is NatKind.OPEN:
                for h in ("a", "b"):
                    lab._host(h, inet, OPEN_HOST_IPS[h], INTERNET_PREFIX, None)
            else:
                lan = lab._router(
                    "nat", nat, inet, NAT_PUBLIC_IPS["nat"], INTERNET_PREFIX, None, "10.0.1"
                )
                lab._host("a", lan, "10.0.1.2", 24, "10.0.1.1")
                lab._host("b", lan, "10.0.1.3", 24, "10.0.1.1")
        return lab

    @classmethod
    def double_nat(cls, a: NatSpec, b: NatSpec, cgn: NatSpec) -> Lab:
        """Home NATs "nat_a"/"nat_b" (WANs in 100.64.0.0/10) behind carrier NAT "cgn"."""
        lab = cls("double-nat")
        with lab._building():
            inet = lab._internet()
            if cgn.kind is NatKind.OPEN:  # degenerate: homes directly on the internet
                carrier, pub_a, pub_b, plen, gw = (
                    inet,
                    NAT_PUBLIC_IPS["nat_a"],
                    NAT_PUBLIC_IPS["nat_b"],
                    INTERNET_PREFIX,
                    None,
                )
            else:
                carrier = lab._router(
                    "cgn",
                    cgn,
                    inet,
                    CGN_PUBLIC_IP,
                    INTERNET_PREFIX,
                    None,
                    CARRIER_NET,
                    lan_prefix=CARRIER_PREFIX,
                )
                pub_a, pub_b = f"{CARRIER_NET}.2", f"{CARRIER_NET}.3"
                plen, gw = CARRIER_PREFIX, f"{CARRIER_NET}.1"
            open_a = f"{CARRIER_NET}.12" if gw else OPEN_HOST_IPS["a"]
            open_b = f"{CARRIER_NET}.13" if gw else OPEN_HOST_IPS["b"]
            lab._site("a", a, "nat_a", carrier, pub_a, plen, gw, "192.168.1", open_a)
            lab._site("b", b, "nat_b", carrier, pub_b, plen, gw, "192.168.2", open_b)
        return lab

    # ------------------------------------------------------------- accessors
    @property
    def server(self) -> Node:
        return self.hosts["server"]

    @property
    def outside(self) -> Node:
        return self.hosts["outside"]

    @property
    def netns_names(self) -> list[str]:
        return [n.netns for n in self.nodes.values()]

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise LabError(f"no node {name!r}; have {sorted(self.nodes)}") from None

    def agent(self, name: str) -> Agent:
        """The (lazily started) UDP socket agent inside node `name`."""
        if name not in self._agents:
            self._agents[name] = Agent(self.node(name))
        return self._agents[name]

    def describe(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "prefix": self.prefix,
            "hosts": {n: h.describe() for n, h in self.hosts.items()},
            "routers": {n: r.describe() for n, r in self.routers.items()},
        }

    # ------------------------------------------------------- runtime control
    def _router_script(self, router: Router, action: str, **env: str) -> None:
        assert router.spec is not None
        full = {
            **router.spec.router_env(),
            "WAN_IF": router.wan_if,
            "LAN_IF": router.lan_if,
            "WAN_IP": router.public_ip,
            **env,
        }
        router.run(["env", *(f"{k}={v}" for k, v in full.items()), "sh", str(ROUTER_SH), action])

    def flush_conntrack(self, router_name: str) -> None:
        """Forget every mapping on a router: conntrack table and cone state."""
        self._router_script(self.routers[router_name], "flush")

    def set_loss(self, router_name: str, pct: int) -> None:
        """Change a router's random UDP loss at runtime (keeps NAT state)."""
        router = self.routers[router_name]
        assert router.spec is not None
        router.spec = dataclasses.replace(router.spec, loss=pct)
        self._router_script(router, "set-loss")

    # -------------------------------------------------------------- teardown
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for agent in self._agents.values():
            agent.close()
        self._agents.clear()
        for node in reversed(list(self.nodes.values())):
            delete_netns(node.netns)
        log.debug("natlab.down", prefix=self.prefix)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Last-resort cleanup if a lab object is dropped without close().
        if not getattr(self, "_closed", True):
            self.close()

    # -------------------------------------------------------- building blocks
    class _Building:
        def __init__(self, lab: Lab) -> None:
            self.lab = lab

        def __enter__(self) -> None:
            pass

        def __exit__(
            self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
        ) -> None:
            # A half-built lab must not leak namespaces.
            if et is not None:
                self.lab.close()
            else:
                log.debug("natlab.up", prefix=self.lab.prefix, topology=self.lab.topology)

    def _building(self) -> Lab._Building:
        return Lab._Building(self)

    def _add_node(self, node: Node) -> None:
        run(["ip", "netns", "add", node.netns])
        register_netns(node.netns)
        self.nodes[node.name] = node
        node.ip_cmd("link", "set", "lo", "up")

    def _switch(self, name: str) -> Node:
        sw = Node(name, self.prefix + name)
        self._add_node(sw)
        sw.ip_cmd("link", "add", "br0", "type", "bridge")
        sw.ip_cmd("link", "set", "br0", "up")
        # If br_netfilter is loaded on the host it defaults to on in new
        # namespaces; bridged frames must not traverse IP hooks.
        sw.run(
            [
                "sh",
                "-c",
                "for f in /proc/sys/net/bridge/bridge-nf-call-*; do "
                '[ -e "$f" ] && echo 0 > "$f"; done; true',
            ]
        )
        self.switches[name] = sw
        self._ports[name] = 0
        return sw

    def _attach(
        self, node: Node, switch: Node, ifname: str, addrs: list[str], prefixlen: int
    ) -> None:
        port = f"p{self._ports[switch.name]}"
        self._ports[switch.name] += 1
        switch.ip_cmd(
            "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", node.netns
        )
        switch.ip_cmd("link", "set", port, "master", "br0", "up")
        node.run(no_udp_segmentation(ifname))  # (datagrams cross one by one: netns.py)
        for addr in addrs:
            node.ip_cmd("addr", "add", f"{addr}/{prefixlen}", "dev", ifname)
        node.ip_cmd("link", "set", ifname, "up")
        node.ips.extend(addrs)

    def _host(
        self, name: str, switch: Node, addr: str | list[str], prefixlen: int, gateway: str | None
    ) -> Node:
        host = Node(name, self.prefix + name)
        self._add_node(host)
        self._attach(host, switch, "eth0", [addr] if isinstance(addr, str) else addr, prefixlen)
        if gateway:
            host.ip_cmd("route", "add", "default", "via", gateway)
        self.hosts[name] = host
        return host

    def _internet(self) -> Node:
        inet = self._switch("inet")
        self._host("server", inet, list(SERVER_IPS), INTERNET_PREFIX, None)
        self._host("outside", inet, OUTSIDE_IP, INTERNET_PREFIX, None)
        return inet

    def _router(
        self,
        name: str,
        spec: NatSpec,
        wan: Node,
        public_ip: str,
        wan_prefix: int,
        wan_gw: str | None,
        lan_net: str,
        lan_prefix: int = 24,
    ) -> Node:
        """Create router `name` and its LAN switch; returns the LAN switch."""
        lan = self._switch(f"lan_{name}")
        router = Router(
            name, self.prefix + name, spec=spec, public_ip=public_ip, lan_ip=f"{lan_net}.1"
        )
        self._add_node(router)
        self._attach(router, wan, router.wan_if, [public_ip], wan_prefix)
        self._attach(router, lan, router.lan_if, [router.lan_ip], lan_prefix)
        if wan_gw:
            router.ip_cmd("route", "add", "default", "via", wan_gw)
        self.routers[name] = router
        self._router_script(router, "setup")
        return lan

    def _site(
        self,
        host: str,
        spec: NatSpec,
        router: str,
        wan: Node,
        public_ip: str,
        wan_prefix: int,
        wan_gw: str | None,
        lan_net: str,
        open_ip: str,
    ) -> None:
        """Host `host` behind router `router`, or directly on `wan` if kind is open."""
        if spec.kind is NatKind.OPEN:
            self._host(host, wan, open_ip, wan_prefix, wan_gw)
            return
        lan = self._router(router, spec, wan, public_ip, wan_prefix, wan_gw, lan_net)
        self._host(host, lan, f"{lan_net}.2", 24, f"{lan_net}.1")


TOPOLOGIES: dict[str, Callable[..., Lab]] = {
    "two-nats": Lab.two_nats,
    "same-lan": Lab.same_lan,
    "double-nat": Lab.double_nat,
}
