"""Capture and replay UDP payloads inside a lab namespace, for attack tests: what an on-path
observer could record and an off-path attacker could send.

    python -m natlab.sniff capture --iface wan0 --port 40000 --count 3 --timeout 10
    python -m natlab.sniff send 203.0.113.2 40000 a3ff00... [--from-port 5000]

``capture`` prints ``{"ready": true}`` once listening, then one JSON object with the hex
payloads of UDP datagrams to that destination port (IPv4, Ethernet framing).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence

_ETH_P_ALL = 0x0003
_ETH_HEADER = 14


def capture(iface: str, port: int, count: int, timeout: float) -> list[bytes]:
    payloads: list[bytes] = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)) as sock:
        sock.bind((iface, 0))
        print(json.dumps({"ready": True}), flush=True)
        deadline = time.monotonic() + timeout
        while len(payloads) < count and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                break
            if address[2] == socket.PACKET_OUTGOING or len(frame) < _ETH_HEADER + 28:
                continue
            if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
                continue  # not IPv4
            ip = frame[_ETH_HEADER:]
            header_length = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_UDP:
                continue
            destination_port = struct.unpack_from("!H", ip, header_length + 2)[0]
            if destination_port == port:
                payloads.append(bytes(ip[header_length + 8 :]))
    return payloads


def send(host: str, port: int, payloads: Sequence[bytes], from_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", from_port))
        for payload in payloads:
            sock.sendto(payload, (host, port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="natlab.sniff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cap = commands.add_parser("capture")
    cap.add_argument("--iface", required=True)
    cap.add_argument("--port", type=int, required=True)
    cap.add_argument("--count", type=int, default=1)
    cap.add_argument("--timeout", type=float, default=10.0)
    snd = commands.add_parser("send")
    snd.add_argument("host")
    snd.add_argument("port", type=int)
    snd.add_argument("payloads", nargs="+", help="hex")
    snd.add_argument("--from-port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "capture":
        found = capture(args.iface, args.port, args.count, args.timeout)
        print(json.dumps({"payloads": [payload.hex() for payload in found]}), flush=True)
    else:
        send(args.host, args.port, [bytes.fromhex(p) for p in args.payloads], args.from_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
