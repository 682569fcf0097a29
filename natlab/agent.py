"""Controller side of `udptool agent`: real UDP sockets inside a namespace."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natlab.netns import LabError, Node

UDPTOOL = Path(__file__).with_name("udptool.py")
# Extra time allowed for the agent to answer beyond any socket timeout.
RPC_SLACK = 10.0

Addr = tuple[str, int]


@dataclass(frozen=True)
class Packet:
    data: str
    src: Addr


class Agent:
    """One long-lived udptool process inside `node`'s namespace."""

    def __init__(self, node: Node) -> None:
        self.node = node
        # Run the file directly: it is stdlib-only, so it works whether or not
        # the package is installed for the interpreter.
        self._proc: subprocess.Popen[str] = node.popen(
            [sys.executable, "-u", str(UDPTOOL), "agent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, wait: float = 0.0, **req: Any) -> dict[str, Any]:
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], wait + RPC_SLACK)
        if not ready:
            raise LabError(f"udptool agent on {self.node.name} did not answer {req}")
        line = proc.stdout.readline()
        if not line:
            raise LabError(f"udptool agent on {self.node.name} exited")
        resp: dict[str, Any] = json.loads(line)
        if not resp.pop("ok"):
            raise LabError(f"udptool agent on {self.node.name}: {resp['error']}")
        return resp

    def bind(self, port: int = 0, ip: str = "0.0.0.0") -> UdpSocket:
        resp = self.call(op="bind", ip=ip, port=port)
        return UdpSocket(self, int(resp["sock"]), (resp["addr"][0], int(resp["addr"][1])))

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            assert proc.stdin is not None
            try:
                proc.stdin.close()  # EOF ends the agent's loop
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class UdpSocket:
    """A UDP socket owned by an agent."""

    def __init__(self, agent: Agent, sid: int, local: Addr) -> None:
        self.agent = agent
        self.sid = sid
        self.local = local

    @property
    def port(self) -> int:
        return self.local[1]

    def sendto(self, data: str, addr: Addr, count: int = 1) -> None:
        self.agent.call(op="send", sock=self.sid, to=list(addr), data=data, count=count)

    def recv_many(
        self, timeout: float, max: int = 1_000_000, idle: float | None = None
    ) -> list[Packet]:
        """Datagrams arriving within `timeout`, then until `idle` s of silence."""
        idle = timeout if idle is None else idle
        resp = self.agent.call(
            # While datagrams keep arriving the agent keeps reading.
            wait=timeout if max == 1 else timeout + 60.0,
            op="recv",
            sock=self.sid,
            timeout=timeout,
            idle=idle,
            max=max,
        )
        return [Packet(p["data"], (p["src"][0], int(p["src"][1]))) for p in resp["packets"]]

    def recv(self, timeout: float = 2.0) -> Packet | None:
        """One datagram, or None after `timeout` seconds (a blocking wait)."""
        pkts = self.recv_many(timeout, max=1)
        return pkts[0] if pkts else None

    def close(self) -> None:
        self.agent.call(op="close", sock=self.sid)
