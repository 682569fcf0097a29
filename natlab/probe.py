"""Probing helpers for lab tests: observe mappings and which senders get through."""

from __future__ import annotations

from dataclasses import dataclass

from natlab.agent import Addr, UdpSocket
from natlab.lab import OUTSIDE_IP, SERVER_IPS, Lab
from natlab.netns import LabError

PRIMARY_PORT = 3478
ALT_PORT = 3479


@dataclass
class Reflector:
    """Server sockets on both server addresses x both ports (RFC 5780 style)."""

    socks: dict[Addr, UdpSocket]

    @classmethod
    def open(cls, lab: Lab) -> Reflector:
        agent = lab.agent("server")
        return cls(
            {
                (ip, port): agent.bind(port, ip)
                for ip in SERVER_IPS
                for port in (PRIMARY_PORT, ALT_PORT)
            }
        )

    def observe(
        self, client: UdpSocket, dest: Addr = (SERVER_IPS[0], PRIMARY_PORT), timeout: float = 2.0
    ) -> Addr:
        """Send from `client` to `dest`; return the source address the server saw."""
        tag = f"observe:{client.port}:{dest}"
        client.sendto(tag, dest)
        pkt = self.socks[dest].recv(timeout)
        if pkt is None or pkt.data != tag:
            raise LabError(f"server {dest} did not receive {tag!r} (got {pkt})")
        return pkt.src


def reachable(
    client: UdpSocket,
    probes: dict[str, tuple[UdpSocket, Addr]],
    control: tuple[UdpSocket, Addr],
    timeout: float = 2.0,
    settle: float = 0.3,
) -> set[str]:
    """Labels of the probes that reached `client`.

    Each probe sender sends its label to its target; then `control` (a sender
    known to be allowed) sends a marker. Once the marker arrives, anything
    still in flight gets `settle` seconds of socket-timeout grace, so
    no sleep is needed and the negative result is not a bare timeout.
    """
    for label, (sock, target) in probes.items():
        sock.sendto(label, target)
    control[0].sendto("__control__", control[1])
    got: set[str] = set()
    pkts = client.recv_many(timeout, idle=settle)
    got.update(p.data for p in pkts)
    if "__control__" not in got:
        raise LabError(f"control packet never arrived (got {sorted(got)})")
    got.discard("__control__")
    return got


def outside_socket(lab: Lab, port: int = 5000) -> UdpSocket:
    return lab.agent("outside").bind(port, OUTSIDE_IP)
