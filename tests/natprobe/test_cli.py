"""The natprobe and rendezvous command lines, run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from natprobe.cli import main
from tests.support.loopback import free_port_pair
from tests.support.processes import rendezvous_process


def test_an_unresolvable_server_is_one_line_and_nonzero(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["no-such-host.invalid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("natprobe: cannot resolve 'no-such-host.invalid'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["127.0.0.1:99999"], "argument server: port out of range (1-65535) in '127.0.0.1:99999'"),
        (["127.0.0.1:0"], "argument server: port out of range (1-65535) in '127.0.0.1:0'"),
        (["127.0.0.1:abc"], "argument server: bad port in '127.0.0.1:abc'"),
        (["127.0.0.1", "--second-server", "x:-1"], "argument --second-server: port out of range"),
        (["127.0.0.1", "--second-server", "[::1]:70000"], "argument --second-server: port out"),
    ],
)
def test_ports_are_checked_by_the_argument_parser(capsys, argv, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"natprobe: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_json_and_table_output_against_the_rendezvous_cli() -> None:
    port = free_port_pair()
    with rendezvous_process(["--listen", f"127.0.0.1:{port}", "--alt-ip", "127.0.0.2"]):
        command = [sys.executable, "-m", "natprobe", f"127.0.0.1:{port}", "--local-ip", "127.0.0.1"]
        result = subprocess.run([*command, "--json"], capture_output=True, timeout=30, check=True)
        table = subprocess.run(command, capture_output=True, timeout=30, check=True)
    report = json.loads(result.stdout)
    expected_keys = {
        "public_address",
        "local_address",
        "mapping",
        "filtering",
        "hairpin",
        "binding_lifetime",
        "nat_type",
    }
    assert expected_keys <= report.keys()
    assert report["nat_type"] == "open-internet"
    assert report["public_address"] == report["local_address"]
    assert report["public_address"].startswith("127.0.0.1:")
    assert b"open-internet" in table.stdout
    assert b"not run: hairpin" in table.stdout


def test_rendezvous_help_documents_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rendezvous", "--help"], capture_output=True, timeout=30, check=True
    )
    for option in ("--listen", "--alt-ip", "--alt-port", "--rate", "--burst", "--software"):
        assert option.encode() in result.stdout


def test_rendezvous_refuses_alt_ip_with_a_wildcard_listen() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rendezvous", "--listen", "0.0.0.0:3478", "--alt-ip", "127.0.0.2"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"concrete --listen IP" in result.stderr


def test_argparse_errors_are_one_line_too(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_info:
        main(["127.0.0.1", "--lifetime", "soon"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("natprobe: argument --lifetime")
    assert err.count("\n") == 1


def test_no_server_at_all_is_an_error_not_a_verdict(capsys) -> None:  # type: ignore[no-untyped-def]
    port = free_port_pair()  # nothing listens there, over UDP or TCP
    assert main([f"127.0.0.1:{port}", "--local-ip", "127.0.0.1", "--rto", "0.01", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no report: there is nothing to report on
    expected = rf"natprobe: no answer from 127\.0\.0\.1:{port} \(UDP: nothing within [0-9.]+ s; "
    assert re.fullmatch(expected + r"TCP: connection refused\)\n", captured.err), captured.err
