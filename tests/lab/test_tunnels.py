"""Tunnels behind real NATs: bob runs ``peer expose web=... --allow alice`` behind one NAT,
alice ``peer forward`` behind another; an HTTP download of 50 MB through the forward
arrives whole over the direct path, over the relay (the connected line on each side
says which), and across a direct -> relay -> direct switch in its middle; a UDP service
answers through a UDP forward; carol, not allowed, is refused on both sides."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from natlab import Lab, NatKind, NatSpec
from natlab.bulk_driver import server_args
from natlab.services import JsonLines, rendezvous_process, wait_for_line
from natlab.tunnel_driver import (
    cut_off,
    http_server,
    make_blob,
    restore,
    rx_bytes,
    tell,
    tool,
    tunnel_args,
    tunnel_process,
)

pytestmark = pytest.mark.lab

MEGABYTES = 50
SIZE = MEGABYTES * 1024 * 1024
HTTP_PORT, FORWARD_PORT = 8000, 8080
PORT_RESTRICTED = NatSpec(kind=NatKind.PORT_RESTRICTED_CONE)
SYMMETRIC = NatSpec(kind=NatKind.SYMMETRIC)
# The relay's per-allocation quota lifted (1 MB/s by default): 50 MB in seconds.
SERVER_ARGS = server_args("lab tunnel secret")


@dataclass
class Tunnel:
    lab: Lab
    state: Path
    bob: JsonLines
    alice: JsonLines
    sha256: str  # of the file bob's web server serves as /blob


@contextmanager
def bob_exposes(lab: Lab, state: Path, service: str) -> Iterator[JsonLines]:
    """The rendezvous, and bob exposing ``service`` to alice; bob's JSON lines."""
    with (
        rendezvous_process(SERVER_ARGS, lab.server.exec_prefix),
        tunnel_process(
            lab.hosts["b"], "expose", state, "bob", service, "--allow", "alice", "--no-probe"
        ) as (_, bob),
    ):
        bob.next("exposing", timeout=30)
        yield bob


@contextmanager
def web_tunnel(lab: Lab, state: Path) -> Iterator[Tunnel]:
    """bob's web server with the blob, exposed to alice, and alice forwarding
    127.0.0.1:FORWARD_PORT to it, listening."""
    sha256 = make_blob(state / "blob", MEGABYTES)
    with (
        http_server(lab.hosts["b"], state, HTTP_PORT),
        bob_exposes(lab, state, f"web=127.0.0.1:{HTTP_PORT}") as bob,
        tunnel_process(
            lab.hosts["a"], "forward", state, "alice", str(FORWARD_PORT), "bob:web", "--no-probe"
        ) as (_, alice),
    ):
        listening = alice.next("listening", timeout=30)
        assert listening["listen"] == f"127.0.0.1:{FORWARD_PORT}", listening
        assert listening["protocol"] == "tcp", listening
        yield Tunnel(lab, state, bob, alice, sha256)


def download(tunnel: Tunnel, timeout: float = 60) -> dict[str, object]:
    """GET /blob through the forward, in alice's namespace; the fetch's result."""
    url = f"http://127.0.0.1:{FORWARD_PORT}/blob"
    with tool(tunnel.lab.hosts["a"], "fetch", url, "--timeout", "30") as (_, fetched):
        return fetched.next("result", timeout=timeout)


def first(lines: JsonLines, event: str) -> dict[str, object]:
    """The first ``event`` a process printed (read already)."""
    found = [item for item in lines.seen if item["event"] == event]
    assert found, (event, lines.seen)
    return found[0]


def check_whole(tunnel: Tunnel, result: dict[str, object]) -> None:
    """The download is the blob, and both sides account for the tunnel's bytes."""
    assert result["status"] == 200 and result["bytes"] == SIZE, result
    assert result["sha256"] == tunnel.sha256, result
    forward_closed = tunnel.alice.next("tunnel_closed", timeout=10)
    expose_closed = tunnel.bob.next("tunnel_closed", timeout=10)
    # (Opened before: read already, while waiting for other events perhaps.)
    forward_open = first(tunnel.alice, "tunnel_open")
    expose_open = first(tunnel.bob, "tunnel_open")
    assert forward_open["side"] == "forward" and forward_open["peer"] == "bob", forward_open
    assert expose_open["side"] == "expose" and expose_open["peer"] == "alice", expose_open
    assert expose_open["client"] == f"127.0.0.1:{HTTP_PORT}", expose_open  # bob's target
    assert forward_open["tunnel"] == forward_closed["tunnel"], (forward_open, forward_closed)
    assert expose_open["tunnel"] == expose_closed["tunnel"], (expose_open, expose_closed)
    request = forward_closed["bytes_sent"]
    assert isinstance(request, int) and 0 < request < 1000, forward_closed  # one GET
    # The response is the file and its HTTP header.
    response = forward_closed["bytes_received"]
    assert isinstance(response, int) and SIZE < response < SIZE + 1000, forward_closed
    assert expose_closed["bytes_sent"] == response, expose_closed
    assert expose_closed["bytes_received"] == request, expose_closed
    assert forward_closed["reason"] == expose_closed["reason"] == "", (
        forward_closed,
        expose_closed,
    )


@pytest.mark.parametrize(
    ("spec", "path"), [(PORT_RESTRICTED, "direct"), (SYMMETRIC, "relay")], ids=["direct", "relay"]
)
def test_50_megabytes_through_a_forward(
    lab_factory: Callable[..., Lab], tmp_path: Path, spec: NatSpec, path: str
) -> None:
    # Symmetric NATs on both sides: punching fails, the peers' connection is relayed.
    lab = lab_factory(Lab.two_nats, a=spec, b=spec)
    with web_tunnel(lab, tmp_path) as tunnel:
        connected = tunnel.alice.next("connected", timeout=30)
        assert connected["peer"] == "bob" and connected["path"] == path, connected
        accepted = tunnel.bob.next("connected", timeout=30)
        assert accepted["peer"] == "alice" and accepted["path"] == path, accepted
        before = rx_bytes(lab.server)
        check_whole(tunnel, download(tunnel))
        through_the_server = rx_bytes(lab.server) - before
    # And where it shows: over the relay every byte of the download reaches the server
    # host; directly, next to nothing does.
    if path == "relay":
        assert through_the_server > SIZE, through_the_server
    else:
        assert through_the_server < SIZE // 10, through_the_server


def next_path(lines: JsonLines, path: str, timeout: float) -> dict[str, object]:
    """The next ``path`` event that says ``path`` (the relay's remote may move first)."""
    event = lines.next("path", timeout=timeout)
    while event["path"] != path:
        event = lines.next("path", timeout=timeout)
    return event


def progress_beyond(fetched: JsonLines, count: int, timeout: float = 20) -> int:
    """Wait until the download has more than ``count`` bytes; how many it has then."""
    while True:
        event = fetched.next(timeout=timeout)
        assert event["event"] == "progress", event
        done = event["bytes"]
        assert isinstance(done, int)
        if done > count:
            return done


def test_a_download_goes_on_across_direct_relay_direct(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(Lab.two_nats, a=PORT_RESTRICTED, b=PORT_RESTRICTED)
    url = f"http://127.0.0.1:{FORWARD_PORT}/blob"
    with (
        web_tunnel(lab, tmp_path) as tunnel,
        # Paced (1 MB/s) while the paths change, so that it is still going on after both.
        tool(lab.hosts["a"], "fetch", url, "--rate", "1", "--timeout", "30") as (fetch, fetched),
    ):
        assert tunnel.alice.next("connected", timeout=30)["path"] == "direct"
        assert tunnel.bob.next("connected", timeout=30)["path"] == "direct"
        done = progress_beyond(fetched, 2 * 1024 * 1024)
        # The direct path dies (as in tests/lab/test_relay.py): alice's NAT reboots (its
        # mappings gone) and loses its route to bob's NAT for a while.
        cut_off(lab, "nat_a", lab.routers["nat_b"].public_ip)
        lab.flush_conntrack("nat_a")
        assert next_path(tunnel.alice, "relay", timeout=20)["peer"] == "bob"
        assert next_path(tunnel.bob, "relay", timeout=20)["peer"] == "alice"
        done = progress_beyond(fetched, done + 1024 * 1024)  # going on over the relay
        restore(lab, "nat_a")
        assert next_path(tunnel.alice, "direct", timeout=40)["peer"] == "bob"
        assert next_path(tunnel.bob, "direct", timeout=40)["peer"] == "alice"
        done = progress_beyond(fetched, done + 1024 * 1024)  # and over the direct path again
        assert done < SIZE - 5 * 1024 * 1024, "the download ended too soon to tell"
        tell(fetch, "rate 0")  # the rest as fast as it comes
        result = fetched.next("result", timeout=60)
        check_whole(tunnel, result)


def test_a_udp_service_answers_through_a_udp_forward(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(Lab.two_nats, a=PORT_RESTRICTED, b=PORT_RESTRICTED)
    b, a = lab.hosts["b"], lab.hosts["a"]
    with (
        tool(b, "udp-echo", "--ip", "127.0.0.1", "--port", "5300") as (_, echo),
        bob_exposes(lab, tmp_path, "echo=127.0.0.1:5300/udp") as bob,
    ):
        echo.next("ready", timeout=15)
        with tunnel_process(a, "forward", tmp_path, "alice", "5301", "bob:echo", "--no-probe") as (
            _,
            alice,
        ):
            listening = alice.next("listening", timeout=30)
            assert listening["protocol"] == "udp", listening
            # Small datagrams, one near the path's MTU and one larger than a channel
            # datagram (it goes on the flow's stream).
            with tool(a, "udp-ask", "127.0.0.1", "5301", "--sizes", "1,100,1200,3000,20") as (
                _,
                asked,
            ):
                result = asked.next("result", timeout=30)
            assert result["answered"] == 5 and result["intact"] is True, result
            assert result["retries"] == 0, result
            opened = alice.next("tunnel_open", timeout=10)
            assert opened["side"] == "forward" and opened["service"] == "echo", opened
            exposed = bob.next("tunnel_open", timeout=10)
            assert exposed["side"] == "expose" and exposed["peer"] == "alice", exposed


def test_a_peer_not_allowed_is_refused_on_both_sides(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = lab_factory(Lab.two_nats, a=PORT_RESTRICTED, b=PORT_RESTRICTED)
    b, a = lab.hosts["b"], lab.hosts["a"]
    with (
        http_server(b, tmp_path, HTTP_PORT),
        bob_exposes(lab, tmp_path, f"web=127.0.0.1:{HTTP_PORT}") as bob,
    ):
        # carol, with --json: an error event, exit 1.
        with tunnel_process(a, "forward", tmp_path, "carol", "8081", "bob:web", "--no-probe") as (
            carol,
            carol_out,
        ):
            error = carol_out.next("error", timeout=30)
            assert carol.wait(timeout=15) == 1
        reason = str(error["reason"])
        assert "bob" in reason and "\n" not in reason, error
        assert not [item for item in carol_out.seen if item["event"] == "listening"]
        refused = bob.next("refused", timeout=10)
        assert refused["peer"] == "carol" and refused["side"] == "expose", refused
        assert refused["reason"] and str(refused["reason"]) in reason, (refused, reason)
        # And as a person sees it: one line on stderr that says why, nothing on stdout.
        plain = subprocess.run(
            [
                *a.exec_prefix,
                *(sys.executable, "-m", "peer", "forward", "8081", "bob:web", "--no-probe"),
                *tunnel_args(tmp_path, "carol"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert plain.returncode == 1, plain
        assert plain.stdout == "", plain
        lines = plain.stderr.splitlines()
        assert lines[-1] == f"peer: {reason}", lines
        assert not any("Traceback" in line for line in lines), lines
        assert bob.next("refused", timeout=10)["peer"] == "carol"


def test_socks_connections_leave_from_the_exit_peer(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    # bob is alice's exit (expose --exit): her SOCKS5 CONNECTs leave from bob's network.
    lab = lab_factory(Lab.two_nats, a=PORT_RESTRICTED, b=PORT_RESTRICTED)
    sha256 = make_blob(tmp_path / "blob", MEGABYTES)
    a, outside = lab.hosts["a"], lab.outside
    with (
        http_server(outside, tmp_path, HTTP_PORT, ip=outside.ip),
        bob_exposes(lab, tmp_path, "--exit") as bob,
        tunnel_process(a, "socks", tmp_path, "alice", "1080", "--via", "bob", "--no-probe") as (
            _,
            alice,
        ),
    ):
        listening = alice.next("listening", timeout=30)
        assert listening["protocol"] == "socks5" and listening["target"] == "bob", listening
        url = f"http://{outside.ip}:{HTTP_PORT}/blob"
        # curl as users run it, the host sent to the exit unresolved (--socks5-hostname).
        curl = f"curl -sS --fail --max-time 60 --socks5-hostname 127.0.0.1:1080 {url} | sha256sum"
        done = subprocess.run(
            [*a.exec_prefix, "bash", "-c", f"set -o pipefail; {curl}"],
            capture_output=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[0].decode() == sha256
        opened = bob.next("tunnel_open", timeout=10)
        assert opened["service"] == "exit" and opened["client"] == f"{outside.ip}:{HTTP_PORT}"
        closed = bob.next("tunnel_closed", timeout=10)
        assert closed["bytes_sent"] == alice.next("tunnel_closed", timeout=10)["bytes_received"]
        # A private address (bob's router) is not for the exit to reach: refused, and said
        # so on both sides and in the SOCKS reply.
        private = f"http://{lab.routers['nat_b'].lan_ip}:{HTTP_PORT}/"
        with tool(a, "fetch", private, "--socks", "127.0.0.1:1080", "--timeout", "30") as (_, out):
            assert out.next(timeout=30) == {"event": "refused", "reply": "NOT_ALLOWED"}
        assert bob.next("refused", timeout=10)["peer"] == "alice"
        assert alice.next("refused", timeout=10)["peer"] == "bob"


def test_publish_opens_a_public_port_on_the_server(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    # bob, behind his NAT, publishes his web server on the rendezvous's public port 20080:
    # anyone on the internet (the lab's outside host) downloads from it with plain HTTP.
    lab = lab_factory(Lab.two_nats, a=PORT_RESTRICTED, b=PORT_RESTRICTED)
    sha256 = make_blob(tmp_path / "blob", MEGABYTES)
    publishing = ["--publish-ports", "20080-20081", "--publish-allow", "bob"]
    b = lab.hosts["b"]
    with (
        rendezvous_process([*SERVER_ARGS, *publishing], lab.server.exec_prefix) as server,
        http_server(b, tmp_path, HTTP_PORT),
        tunnel_process(
            b, "publish", tmp_path, "bob", f"web=127.0.0.1:{HTTP_PORT}", "--public-port", "20080"
        ) as (bob_process, bob),
    ):
        published = bob.next("published", timeout=30)
        assert published["public"] == f"{SERVER_ARGS[1].split(':')[0]}:20080", published
        url = f"http://{published['public']}/blob"
        with tool(lab.outside, "fetch", url, "--timeout", "30") as (_, out):
            result = out.next("result", timeout=60)
        assert result["bytes"] == SIZE and result["sha256"] == sha256, result
        closed = bob.next("tunnel_closed", timeout=10)
        response = closed["bytes_sent"]
        assert isinstance(response, int) and SIZE < response < SIZE + 1000, closed
        # The owner goes offline: the gateway closes the port (it says so in its log),
        # and the outside host is refused from then on.
        bob_process.send_signal(signal.SIGTERM)
        assert bob.next("stopped", timeout=20)["event"] == "stopped"
        wait_for_line(server, lambda line: '"unpublished"' in line, 20)
        after = subprocess.run(
            [*lab.outside.exec_prefix, "curl", "-sS", "--max-time", "10", url],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert after.returncode == 7, after.stderr  # curl: "Failed to connect", refused
