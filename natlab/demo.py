"""``natlab demo``: a lab with a NAT of every kind, our rendezvous server on the lab's
internet, and natprobe's verdict from behind each NAT, printed as a table; then two peers
behind two NATs chat over the path they punched."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natlab.lab import SERVER_IPS, Lab
from natlab.netns import Node
from natlab.services import chat_args, chat_process, rendezvous_process
from natlab.spec import NatKind, NatSpec

# Every kind once: two hosts per lab, three labs.
PAIRS = (
    (NatKind.OPEN, NatKind.FULL_CONE),
    (NatKind.RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE),
    (NatKind.SYMMETRIC, NatKind.UDP_BLOCKED),
)
# What a correct probe says for each kind: classic type, mapping, filtering.
EXPECTED: dict[NatKind, tuple[str, str | None, str | None]] = {
    NatKind.OPEN: ("open-internet", "endpoint-independent", "endpoint-independent"),
    NatKind.FULL_CONE: ("full-cone", "endpoint-independent", "endpoint-independent"),
    NatKind.RESTRICTED_CONE: ("restricted-cone", "endpoint-independent", "address-dependent"),
    NatKind.PORT_RESTRICTED_CONE: (
        "port-restricted-cone",
        "endpoint-independent",
        "address-and-port-dependent",
    ),
    NatKind.SYMMETRIC: ("symmetric", "address-and-port-dependent", "address-and-port-dependent"),
    NatKind.UDP_BLOCKED: ("udp-blocked", None, None),
}
PORT = 3478


@dataclass(frozen=True, slots=True)
class Row:
    kind: NatKind
    report: dict[str, Any]
    seconds: float

    @property
    def correct(self) -> bool:
        verdict = (self.report["nat_type"], self.report["mapping"], self.report["filtering"])
        return verdict == EXPECTED[self.kind]


def probe_from(host: Node, *extra: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    result = host.run(
        [sys.executable, "-m", "natprobe", f"{SERVER_IPS[0]}:{PORT}", "--json", *extra],
        timeout=120,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report, time.monotonic() - started


def run_pair(a: NatKind, b: NatKind, *, hairpin: bool) -> list[Row]:
    spec_a, spec_b = NatSpec(kind=a, hairpin=hairpin), NatSpec(kind=b, hairpin=hairpin)
    with (
        Lab.two_nats(a=spec_a, b=spec_b) as lab,
        rendezvous_process(
            ["--listen", f"{SERVER_IPS[0]}:{PORT}", "--alt-ip", SERVER_IPS[1]],
            lab.server.exec_prefix,
        ),
        ThreadPoolExecutor(2) as pool,
    ):
        results = list(pool.map(probe_from, (lab.hosts["a"], lab.hosts["b"])))
    return [
        Row(kind, report, seconds) for kind, (report, seconds) in zip((a, b), results, strict=True)
    ]


def format_table(rows: list[Row]) -> str:
    header = (
        "NAT in the lab",
        "natprobe says",
        "mapping",
        "filtering",
        "hairpin",
        "public",
        "time",
        "",
    )
    lines = [header]
    for row in rows:
        report = row.report
        lines.append(
            (
                str(row.kind),
                report["nat_type"],
                report["mapping"] or "-",
                report["filtering"] or "-",
                "-" if report["hairpin"] is None else ("yes" if report["hairpin"] else "no"),
                report["public_address"] or "-",
                f"{row.seconds:.2f}s",
                "ok" if row.correct else "WRONG",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def run_chat(tmp: Path, specs: tuple[NatSpec, NatSpec]) -> list[str]:
    """Two `peer chat` processes behind two NATs (the rendezvous offers its relay): the
    second connects to the first, they exchange a line each way and hang up."""
    lines: list[str] = [f"-- a chat between a {specs[0].kind} and a {specs[1].kind} NAT"]

    def args(name: str, *extra: str) -> list[str]:
        return chat_args(SERVER_IPS[0], tmp, name, *extra)

    with (
        Lab.two_nats(a=specs[0], b=specs[1]) as lab,
        rendezvous_process(
            [
                "--listen",
                f"{SERVER_IPS[0]}:{PORT}",
                "--alt-ip",
                SERVER_IPS[1],
                "--turn-secret",
                "natlab demo secret",
            ],
            lab.server.exec_prefix,
        ),
        chat_process(lab.hosts["b"].exec_prefix, args("bob")) as (bob, bob_out),
    ):
        online = bob_out.next("online", timeout=30)
        lines.append(
            f"bob   ({specs[1].kind}): online as {online['public']}, NAT {online['nat_type']}"
        )
        with chat_process(lab.hosts["a"].exec_prefix, args("alice", "--to", "bob")) as (
            alice,
            alice_out,
        ):
            online = alice_out.next("online", timeout=30)
            lines.append(
                f"alice ({specs[0].kind}): online as {online['public']}, NAT {online['nat_type']}"
            )
            connected = alice_out.next("connected", timeout=30)
            note = f" ({connected['note']})" if connected.get("note") else ""
            lines.append(
                f"alice: connected to bob over the {connected['path']} path "
                f"({connected['remote']}) in {connected['ms']} ms{note}"
            )
            for process, text in ((alice, "hello bob, it's alice"), (bob, "hi alice!")):
                assert process.stdin is not None
                process.stdin.write(text.encode() + b"\n")
                process.stdin.flush()
            lines.append(f"bob   got  alice: {bob_out.next('message', timeout=15)['text']}")
            lines.append(f"alice got  bob: {alice_out.next('message', timeout=15)['text']}")
            assert alice.stdin is not None
            alice.stdin.close()
            alice.wait(timeout=15)
            lines.append(f"bob: {bob_out.next('closed', timeout=15)['reason']}")
    return lines


def run_demo(*, hairpin: bool = True) -> int:
    rows: list[Row] = []
    for a, b in PAIRS:
        print(f"building a lab with {a} and {b} NATs ...", file=sys.stderr, flush=True)
        try:
            rows += run_pair(a, b, hairpin=hairpin)
        except (subprocess.SubprocessError, TimeoutError, OSError) as exc:
            print(f"natlab demo: {exc}", file=sys.stderr)
            return 1
    print(format_table(rows))
    wrong = [row for row in rows if not row.correct]
    print(f"\n{len(rows) - len(wrong)} of {len(rows)} verdicts right\n", flush=True)
    print("building a lab for a chat between two NATs ...", file=sys.stderr, flush=True)
    chat: list[str] = []
    pairs = (
        (NatSpec(kind=NatKind.PORT_RESTRICTED_CONE), NatSpec(kind=NatKind.RESTRICTED_CONE)),
        (NatSpec(kind=NatKind.SYMMETRIC), NatSpec(kind=NatKind.SYMMETRIC)),
    )
    try:
        for specs in pairs:
            with tempfile.TemporaryDirectory(prefix="natlab-demo-") as tmp:
                chat += run_chat(Path(tmp), specs)
    except (subprocess.SubprocessError, TimeoutError, OSError, AssertionError) as exc:
        print(f"natlab demo: chat failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(chat))
    return 1 if wrong else 0
