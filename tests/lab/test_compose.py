"""compose.yaml describes the same rig as the netns lab (docker is not run here)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from natlab import ROUTER_SH, SERVER_IPS

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _command(svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command")
    return cmd if isinstance(cmd, list) else str(cmd).split()


def test_services_present(compose: dict[str, Any]) -> None:
    assert {"rendezvous", "nat-a", "nat-b", "peer-a", "peer-b"} <= set(compose["services"])


def test_every_service_has_image_or_dockerfile_and_command(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            build = svc["build"]
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert dockerfile.is_file(), f"{name}: missing {dockerfile}"
        assert svc.get("command"), f"{name} has no command"


def test_routers_run_the_lab_router_script(compose: dict[str, Any]) -> None:
    for name in ("nat-a", "nat-b"):
        svc = compose["services"][name]
        assert svc.get("privileged") or "NET_ADMIN" in svc.get("cap_add", [])
        assert "NAT_TYPE" in svc["environment"]
        assert "/natlab/router.sh" in _command(svc), name
        # The container path is the repo's natlab/router.sh -- the exact file
        # natlab.Lab runs -- both bind-mounted and baked into the image.
        mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
        assert (ROOT / mounts["/natlab/router.sh"]).resolve() == ROUTER_SH.resolve()
        dockerfile = ROOT / svc["build"]["dockerfile"]
        assert "COPY natlab/router.sh /natlab/router.sh" in dockerfile.read_text()
        for key in ("internet", f"lan-{name[-1]}"):
            assert key in svc["networks"], name


def test_addresses_match_the_netns_lab(compose: dict[str, Any]) -> None:
    svcs = compose["services"]
    assert svcs["rendezvous"]["networks"]["internet"]["ipv4_address"] == SERVER_IPS[0]
    assert SERVER_IPS[1] in " ".join(_command(svcs["rendezvous"]))
    for peer, gw in (("peer-a", "10.0.1.1"), ("peer-b", "10.0.2.1")):
        cmd = " ".join(_command(svcs[peer]))
        assert f"default via {gw}" in cmd and SERVER_IPS[0] in cmd
    for net in compose["networks"].values():
        assert net.get("internal") is True  # never routed to the real internet


def _exec_argv(svc: dict[str, Any], program: str) -> list[str]:
    """The arguments the service passes to ``exec PROGRAM`` in its shell command."""
    text = " ".join(_command(svc))
    marker = f"exec {program} "
    assert marker in text, text
    return shlex.split(text.split(marker, 1)[1].strip().rstrip('"'))


def test_python_services_run_real_commands_with_valid_arguments(compose: dict[str, Any]) -> None:
    from peer.cli import build_parser as peer_parser
    from rendezvous.cli import build_parser as rendezvous_parser

    svcs = compose["services"]
    args = rendezvous_parser().parse_args(_exec_argv(svcs["rendezvous"], "rendezvous"))
    assert args.listen == (SERVER_IPS[0], 3478)
    assert args.alt_ip == SERVER_IPS[1]
    for peer in ("peer-a", "peer-b"):
        peer_args = peer_parser().parse_args(_exec_argv(svcs[peer], "peer"))
        assert peer_args.command == "nat"
        assert peer_args.server == (SERVER_IPS[0], 3478)
