"""Topologies route as described and labs always clean up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from natlab import CGN_PUBLIC_IP, SERVER_IPS, Lab, LabError, NatKind, NatSpec, list_netns
from natlab.probe import PRIMARY_PORT, Reflector
from natlab.pytest_plugin import LabFactory

pytestmark = pytest.mark.lab

S1 = (SERVER_IPS[0], PRIMARY_PORT)
PRC = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)


def test_same_lan(lab_factory: LabFactory) -> None:
    lab = lab_factory("same-lan", nat=PRC)
    a, b = lab.hosts["a"], lab.hosts["b"]
    assert a.netns != b.netns and a.ip != b.ip
    sa, sb = lab.agent("a").bind(), lab.agent("b").bind()
    sb.sendto("direct", (a.ip, sa.port))  # LAN traffic bypasses the NAT
    pkt = sa.recv(1.0)
    assert pkt is not None and pkt.src == (b.ip, sb.port)
    refl = Reflector.open(lab)
    pub = lab.routers["nat"].public_ip
    assert refl.observe(sa, S1)[0] == refl.observe(sb, S1)[0] == pub


def test_double_nat(lab_factory: LabFactory) -> None:
    lab = lab_factory("double-nat", a=PRC, b=PRC, cgn=PRC)
    assert lab.routers["nat_a"].public_ip.startswith("100.64.")
    assert lab.hosts["a"].ip.startswith("192.168.")
    refl = Reflector.open(lab)
    for name in ("a", "b"):
        sock = lab.agent(name).bind()
        mapped = refl.observe(sock, S1)
        assert mapped[0] == CGN_PUBLIC_IP == lab.routers["cgn"].public_ip
        refl.socks[S1].sendto("reply", mapped)
        pkt = sock.recv(1.0)
        assert pkt is not None and pkt.data == "reply"


def _ours(lab: Lab) -> list[str]:
    return [n for n in list_netns() if n.startswith(lab.prefix)]


def test_teardown_leaves_no_namespaces(lab_factory: LabFactory) -> None:
    with Lab.two_nats(PRC, PRC) as lab:
        assert len(_ours(lab)) == len(lab.nodes) >= 7
        assert all(n.startswith(lab.prefix) for n in lab.netns_names)
        lab.agent("a")  # a running process inside a namespace
    assert _ours(lab) == []


def test_teardown_on_exception(lab_factory: LabFactory) -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab.same_lan(PRC) as lab:
        raise RuntimeError("boom")
    assert _ours(lab) == []


def test_failed_build_cleans_up(lab_factory: LabFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[Lab] = []
    orig = Lab._router_script

    def broken(self: Lab, *a: object, **kw: object) -> None:
        created.append(self)
        raise LabError("router.sh exploded")

    monkeypatch.setattr(Lab, "_router_script", broken)
    with pytest.raises(LabError):
        Lab.two_nats(PRC, PRC)
    monkeypatch.setattr(Lab, "_router_script", orig)
    assert created and _ours(created[0]) == []


def test_cli_up_prints_json_and_cleans_up_on_sigint(lab_factory: LabFactory) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "natlab", "up", "--a", "full-cone", "--b", "symmetric", "--compact"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        desc = json.loads(proc.stdout.readline())
        assert desc["routers"]["nat_a"]["nat"]["kind"] == "full-cone"
        assert desc["hosts"]["server"]["ips"] == list(SERVER_IPS)
        prefix = desc["prefix"]
        assert any(n.startswith(prefix) for n in list_netns())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(n.startswith(prefix) for n in list_netns())
