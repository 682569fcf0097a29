"""The natprobe and rendezvous command lines, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from natprobe.cli import main
from tests.support.loopback import free_port_pair
from tests.support.processes import rendezvous_process


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("no-such-host.invalid", "cannot resolve"),
        ("127.0.0.1:99999", "port out of range"),
        ("127.0.0.1:abc", "bad port"),
    ],
)
def test_bad_server_argument_is_one_line_and_nonzero(capsys, argument, message) -> None:  # type: ignore[no-untyped-def]
    assert main([argument]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


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
