"""natlab: a real-kernel NAT lab (network namespaces + nftables) for UDP hole punching."""

from natlab.agent import Agent, Packet, UdpSocket
from natlab.lab import (
    CGN_PUBLIC_IP,
    NAT_PUBLIC_IPS,
    OUTSIDE_IP,
    ROUTER_SH,
    SERVER_IPS,
    TOPOLOGIES,
    Lab,
)
from natlab.netns import LabError, Node, Router, list_netns, netns_supported
from natlab.spec import NatKind, NatSpec

__all__ = [
    "CGN_PUBLIC_IP",
    "NAT_PUBLIC_IPS",
    "OUTSIDE_IP",
    "ROUTER_SH",
    "SERVER_IPS",
    "TOPOLOGIES",
    "Agent",
    "Lab",
    "LabError",
    "NatKind",
    "NatSpec",
    "Node",
    "Packet",
    "Router",
    "UdpSocket",
    "list_netns",
    "netns_supported",
]
