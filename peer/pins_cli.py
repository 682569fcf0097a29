"""``peer keys`` and ``peer forget``: the pin file, no server and no event loop (peer.cli
parses the arguments)."""

from __future__ import annotations

import argparse
import base64
import json
import sys

from natprobe.reach import os_reason
from peer.identity import fingerprint
from peer.known_peers import KnownPeers, KnownPeersError
from peer.rendezvous_login import parse_server_key
from rvproto.names import InvalidName, canonical_name


def server_key_arg(text: str) -> bytes:
    """argparse type of ``--server-key``."""
    try:
        return parse_server_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def forget_target(text: str) -> str:
    """argparse type of what ``peer forget`` takes: a peer name, or ``@HOST:PORT``."""
    if text.startswith("@"):
        return text
    try:
        return canonical_name(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_pins(args: argparse.Namespace) -> int:
    try:
        known = KnownPeers(args.known_peers)
    except KnownPeersError as exc:
        print(f"peer: --known-peers {exc}", file=sys.stderr)
        return 2
    if args.command == "keys":
        for address, key in known.servers():
            shown = {"server": address, "server_key": base64.b64encode(key).decode("ascii")}
            print(json.dumps(shown) if args.json else f"@{address} {shown['server_key']}")
        for name, key, server in known.items():
            at = "every server" if server is None else fingerprint(server)
            pin = {"name": name, "fingerprint": fingerprint(key), "at": at}
            print(json.dumps(pin) if args.json else f"{name} {pin['fingerprint']} at {at}")
        return 0
    try:
        found = known.forget(args.name)
    except OSError as exc:
        print(f"peer: {args.known_peers}: {os_reason(exc)}", file=sys.stderr)
        return 1
    if not found:
        print(f"peer: no pin for {args.name} in {args.known_peers}", file=sys.stderr)
        return 1
    forgotten = {"event": "forgotten", "name": args.name}
    print(json.dumps(forgotten) if args.json else f"forgot {args.name}")
    return 0
