"""Tiny UDP tool run inside lab namespaces (stdlib only, no natlab imports).

    python -m natlab.udptool agent
        JSON-lines RPC on stdin/stdout driving real UDP sockets in this
        namespace (used by natlab.agent.Agent).
    python -m natlab.udptool echo --port 3478 [--ip 0.0.0.0] [--timeout S]
        Reply to each datagram with JSON {"src": [ip, port]}; log each as JSON.
    python -m natlab.udptool send IP PORT [--bind-port P] [--timeout S]
        Send one datagram, print the echo reply (our observed public address).

All waiting is done with socket timeouts, never sleeps.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF = 4 * 1024 * 1024


def _udp_socket(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        # Bursts (loss measurements) must not be dropped by our own socket
        # buffer, or we would measure the receiver instead of the NAT.
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind((ip, port))
    return s


class Agent:
    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.next_id = 1

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "bind":
            s = _udp_socket(req.get("ip", "0.0.0.0"), int(req.get("port", 0)))
            sid = self.next_id
            self.next_id += 1
            self.socks[sid] = s
            return {"sock": sid, "addr": list(s.getsockname())}
        s = self.socks[int(req["sock"])]
        if op == "send":
            data = req["data"].encode()
            to = (req["to"][0], int(req["to"][1]))
            for _ in range(int(req.get("count", 1))):
                s.sendto(data, to)
            return {}
        if op == "recv":
            # Wait for up to `max` datagrams; the first wait is `timeout`,
            # later ones `idle` (stop once the sender has gone quiet).
            packets: list[dict[str, Any]] = []
            limit = int(req.get("max", 1))
            s.settimeout(float(req["timeout"]))
            while len(packets) < limit:
                try:
                    data, src = s.recvfrom(65535)
                except TimeoutError:
                    break
                packets.append({"data": data.decode(errors="replace"), "src": list(src)})
                s.settimeout(float(req.get("idle", req["timeout"])))
            return {"packets": packets}
        if op == "close":
            self.socks.pop(int(req["sock"])).close()
            return {}
        raise ValueError(f"unknown op {op!r}")


def agent_main() -> int:
    agent = Agent()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            resp = {"ok": True, **agent.handle(json.loads(line))}
        except Exception as exc:  # report to the controller instead of dying
            resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(resp) + "\n")
        sys.stdout.flush()
    return 0


def echo_main(ip: str, port: int, timeout: float | None) -> int:
    s = _udp_socket(ip, port)
    print(json.dumps({"listening": list(s.getsockname())}), flush=True)
    s.settimeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        try:
            data, src = s.recvfrom(65535)
        except TimeoutError:
            break
        s.sendto(json.dumps({"src": list(src)}).encode(), src)
        print(json.dumps({"src": list(src), "len": len(data)}), flush=True)
    return 0


def send_main(ip: str, port: int, bind_port: int, timeout: float) -> int:
    s = _udp_socket("0.0.0.0", bind_port)
    s.settimeout(timeout)
    s.sendto(b"natlab-probe", (ip, port))
    try:
        data, src = s.recvfrom(65535)
    except TimeoutError:
        print(json.dumps({"local": list(s.getsockname()), "reply": None}))
        return 1
    print(
        json.dumps({"local": list(s.getsockname()), "from": list(src), "reply": json.loads(data)})
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="udptool")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("agent")
    e = sub.add_parser("echo")
    e.add_argument("--ip", default="0.0.0.0")
    e.add_argument("--port", type=int, default=3478)
    e.add_argument("--timeout", type=float, default=None)
    s = sub.add_parser("send")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    s.add_argument("--bind-port", type=int, default=0)
    s.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.cmd == "agent":
        return agent_main()
    if args.cmd == "echo":
        return echo_main(args.ip, args.port, args.timeout)
    return send_main(args.ip, args.port, args.bind_port, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
