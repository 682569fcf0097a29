"""NAT behaviour discovery: mapping, filtering, hairpinning, binding lifetime, classic type."""

from natprobe.probe import ProbeConfig, probe
from natprobe.report import Behaviour, NatReport, NatType

__all__ = ["Behaviour", "NatReport", "NatType", "ProbeConfig", "probe"]
