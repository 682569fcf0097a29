"""``peer chat`` (peer.chat) in one process: real peers and the real rendezvous on loopback,
each chat's stdin a pipe and its stdout and stderr recorded, so that a test waits for the
lines it expects (never a sleep)."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from peer.adapters.peer import PeerConfig
from peer.chat import ChatOptions, run_chat
from peer.identity import Identity
from peer.transport.config import MIB
from rendezvous.adapters.server import RendezvousServer
from rendezvous.binding import StunServiceConfig
from stunproto.attributes import Address
from tests.support.loopback import free_port_pair

TIMEOUT = 20.0
CONFIG = PeerConfig(probe_nat=False, keepalive=0)


class Console(io.StringIO):
    """A text stream that keeps its lines and wakes whoever waits for one."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._partial = ""
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        *complete, self._partial = (self._partial + text).split("\n")
        if complete:
            self.lines += complete
            self._changed.set()
        return len(text)

    async def line(self, predicate: Callable[[str], bool], after: int = 0) -> str:
        """The first line from index ``after`` on that satisfies ``predicate``."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                for line in self.lines[after:]:
                    if predicate(line):
                        return line
                self._changed.clear()
                await self._changed.wait()

    async def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The first JSON object of ``kind`` with these fields."""

        def matches(line: str) -> bool:
            item = json.loads(line)
            return bool(
                item.get("event") == kind and all(item.get(k) == v for k, v in fields.items())
            )

        return dict(json.loads(await self.line(matches)))

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [item for line in self.lines if (item := json.loads(line))["event"] == kind]


class Chat:
    """One ``peer chat`` under test: type lines, end input, read what it printed."""

    def __init__(self, server: Address, name: str, *extra: str, config: PeerConfig) -> None:
        self.name = name
        self.out, self.err = Console(), Console()
        read_end, self._stdin = os.pipe()
        self._pipe = open(read_end, "rb", buffering=0)  # noqa: SIM115 (run_chat reads it)
        json_mode = "--json" in extra
        to = extra[extra.index("--to") + 1] if "--to" in extra else None
        options = ChatOptions(
            server=server,
            name=name,
            to=to,
            identity=Identity.generate(),
            known_peers=None,
            json=json_mode,
            peer_config=config,
            connect_timeout=TIMEOUT,
        )
        self.task = asyncio.ensure_future(
            run_chat(options, stdin=self._pipe, stdout=self.out, stderr=self.err)
        )

    async def type(self, data: bytes | str, end: bytes = b"\n") -> None:
        """Write to the chat's stdin (a thread writes: the pipe holds 64 KiB, the chat
        reads it on this loop)."""
        raw = (data.encode() if isinstance(data, str) else data) + end
        await asyncio.wait_for(asyncio.to_thread(_write_all, self._stdin, raw), TIMEOUT)

    def end_input(self) -> None:
        if self._stdin >= 0:
            os.close(self._stdin)
            self._stdin = -1

    async def exit_status(self) -> int:
        return await asyncio.wait_for(asyncio.shield(self.task), TIMEOUT)

    async def close(self) -> None:
        self.end_input()
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self._pipe.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@asynccontextmanager
async def loopback() -> AsyncIterator[Callable[..., Chat]]:
    """A rendezvous on loopback and a factory of chats against it (closed at the end)."""
    address = ("127.0.0.1", free_port_pair())
    chats: list[Chat] = []

    def chat(name: str, *extra: str, config: PeerConfig = CONFIG) -> Chat:
        chats.append(Chat(address, name, *extra, config=config))
        return chats[-1]

    async with RendezvousServer(StunServiceConfig(primary=address)):
        try:
            yield chat
        finally:
            for each in chats:
                await each.close()


async def online(chat: Chat) -> None:
    await chat.err.line(lambda line: line.startswith(f"online as {chat.name}"))


async def test_a_chat_serves_everyone_who_connects() -> None:
    async with loopback() as chat:
        bob = chat("bob")  # no --to: serves whoever connects
        await online(bob)
        alice = chat("alice", "--to", "bob", "--json")
        await alice.out.event("connected", peer="bob")
        carol = chat("carol", "--to", "bob", "--json")
        await carol.out.event("connected", peer="bob")
        await bob.err.line(lambda line: line.startswith("connected to alice over"))
        await bob.err.line(lambda line: line.startswith("connected to carol over"))

        await alice.type("hi from alice")
        await carol.type("hi from carol")
        assert await bob.out.line(lambda line: "alice" in line) == "alice: hi from alice"
        assert await bob.out.line(lambda line: "carol" in line) == "carol: hi from carol"
        assert len(bob.out.lines) == 2

        await bob.type("hello both")  # a line goes to everyone
        for caller in (alice, carol):
            message = await caller.out.event("message", text="hello both")
            assert message["peer"] == "bob" and message["from"] == "bob"

        await bob.type("@carol just you")  # ... or to one
        await bob.type("both again")
        await carol.out.event("message", text="just you")
        await alice.out.event("message", text="both again")
        assert [m["text"] for m in alice.out.events("message")] == ["hello both", "both again"]

        carol.end_input()  # carol leaves: bob says so and goes on with alice
        assert await carol.exit_status() == 0
        assert await bob.err.line(lambda line: "left" in line) == "carol left"
        await bob.type("@carol are you there?")
        assert await bob.err.line(lambda line: "not sent" in line) == (
            "peer: not sent: carol is not in the chat"
        )
        await bob.type("still here")
        await alice.out.event("message", text="still here")

        bob.end_input()  # bob closes what is left, in order, and exits 0
        assert await bob.exit_status() == 0
        assert "closed the chat with alice: end of input" in bob.err.lines
        assert await alice.exit_status() == 0
        closed = await alice.out.event("closed")
        assert closed == {"event": "closed", "peer": "bob", "reason": "closed by bob"}
        # Nothing was lost on the way: bob printed both messages, and only those.
        assert sorted(bob.out.lines) == ["alice: hi from alice", "carol: hi from carol"]


async def test_json_events_name_the_peer() -> None:
    async with loopback() as chat:
        bob = chat("bob", "--json")
        await bob.out.event("online", name="bob")
        alice = chat("alice", "--to", "bob")
        assert (await bob.out.event("connected"))["peer"] == "alice"
        await alice.type("hello")
        message = await bob.out.event("message")
        assert message == {"event": "message", "peer": "alice", "from": "alice", "text": "hello"}
        await bob.type("nobody asked")
        assert await alice.out.line(lambda line: True) == "bob: nobody asked"
        alice.end_input()
        assert await alice.exit_status() == 0
        assert "closed: end of input" in alice.err.lines
        left = await bob.out.event("closed")
        assert left == {"event": "closed", "peer": "alice", "reason": "closed by alice"}
        await bob.type("anyone?")
        assert (await bob.out.event("skipped"))["reason"] == "nobody is connected"
        assert not bob.task.done()  # still serving


async def test_to_refuses_a_second_caller_who_sees_why() -> None:
    async with loopback() as chat:
        bob = chat("bob")
        await online(bob)
        carol = chat("carol", "--to", "bob")
        await carol.err.line(lambda line: line.startswith("connected to bob"))
        dave = chat("dave", "--to", "carol")
        assert await dave.exit_status() == 1
        assert dave.err.lines[-1] == "peer: carol refused the connection: busy in another chat"
        assert not any(line.startswith("connected") for line in dave.err.lines)
        refused = await carol.err.line(lambda line: line.startswith("refused"))
        assert refused == "refused a call from dave: busy in another chat"
        # carol's chat with bob goes on.
        await carol.type("still with you")
        assert await bob.out.line(lambda line: True) == "carol: still with you"
        assert not carol.task.done()


async def test_a_caller_in_json_gets_the_refusal_as_an_error_event() -> None:
    async with loopback() as chat:
        bob = chat("bob")
        await online(bob)
        carol = chat("carol", "--to", "bob", "--json")
        await carol.out.event("connected", peer="bob")
        dave = chat("dave", "--to", "carol", "--json")
        assert await dave.exit_status() == 1
        error = await dave.out.event("error")
        assert error["reason"] == "carol refused the connection: busy in another chat"
        refused = await carol.out.event("refused")
        assert refused == {"event": "refused", "peer": "dave", "reason": "busy in another chat"}


async def test_a_megabyte_line_goes_and_a_line_over_the_message_limit_is_skipped() -> None:
    async with loopback() as chat:
        bob = chat("bob")
        await online(bob)
        alice = chat("alice", "--to", "bob")
        await alice.err.line(lambda line: line.startswith("connected to bob"))
        megabyte = "m" * 1_000_000
        await alice.type(megabyte)
        assert await bob.out.line(lambda line: True) == f"alice: {megabyte}"
        await alice.type(b"x" * (16 * MIB + 1))  # one byte more than a message may have
        error = await alice.err.line(lambda line: "not sent" in line)
        assert error == "peer: not sent: the line is longer than the largest message (16 MiB)"
        await alice.type("after")  # the chat goes on, and nothing of the long line went
        assert await bob.out.line(lambda line: "after" in line) == "alice: after"
        assert len(bob.out.lines) == 2
        assert not alice.task.done()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "eof"])
async def test_the_line_limit_follows_the_configured_message_size(ending: bytes) -> None:
    limit = 64 * 1024
    small = replace(
        CONFIG,
        session=replace(
            CONFIG.session, transport=replace(CONFIG.session.transport, max_message_size=limit)
        ),
    )
    async with loopback() as chat:
        bob = chat("bob")
        await online(bob)
        alice = chat("alice", "--to", "bob", config=small)
        await alice.err.line(lambda line: line.startswith("connected to bob"))
        await alice.type(b"a" * limit, end=b"\r\n")  # exactly the limit, "\r\n" aside
        await alice.type(b"b" * (limit + 1), end=ending)
        if not ending:
            alice.end_input()  # the long line is the last, without its "\n"
        error = await alice.err.line(lambda line: "not sent" in line)
        assert error == "peer: not sent: the line is longer than the largest message (65536 bytes)"
        assert await bob.out.line(lambda line: True) == "alice: " + "a" * limit
        if ending:
            await alice.type("more")
            assert await bob.out.line(lambda line: "more" in line) == "alice: more"
        else:
            assert await alice.exit_status() == 0
        assert not any(line.startswith("alice: b") for line in bob.out.lines)
