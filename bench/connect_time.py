"""Time from ``connect`` to the first delivered message: our peer library versus aioice.

Real-NAT lab part: for each NAT pair, one two-NAT lab with our rendezvous server on its
internet (203.0.113.10:3478, which also answers STUN Binding requests). Each run starts
fresh processes inside the hosts' namespaces (bench/_side_ours.py, bench/_side_aioice.py)
and flushes both NATs first, so that no mapping survives from an earlier run; the two
toolkits alternate which goes first. The figure is the responder's stamp when the first
application message is delivered minus the initiator's stamp right before it calls
connect (both ``time.monotonic()``, one clock for every namespace):

  ours    ``Peer.connect(name)`` -> rendezvous exchange, synchronised punch, Noise IK
          handshake -> ``conn.send`` -> out of ``async for data in conn`` on the other side.
  aioice  candidates gathered and exchanged beforehand (signalling, relayed by this
          script), then ``Connection.connect()`` on both sides -> ``send`` -> ``recv()``.
          The ICE gathering time is shown separately; it is not in the figure.

Simulator part: our agent alone in the in-process simulator (tests/support/sim.py) at
20/100/300 ms round-trip time, from ``agent.connect`` to the responder's MessageReceived,
in virtual time.

Run as root from the repository (needs aioice: pip install aioice):
    python bench/connect_time.py [--runs N] [--pairs prc/prc,fc/fc] [--no-sim] [--no-lab]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iokit.cli_logging import configure_logging
from natlab import Lab, NatKind, NatSpec
from natlab.netns import Node
from natlab.services import JsonLines, rendezvous_process
from peer.events import Connected, MessageReceived
from tests.support.sim import build_world

ROOT = Path(__file__).resolve().parent.parent
SERVER, ALT, PORT = "203.0.113.10", "203.0.113.11", 3478
SHORT = {
    "open": NatKind.OPEN,
    "fc": NatKind.FULL_CONE,
    "rc": NatKind.RESTRICTED_CONE,
    "prc": NatKind.PORT_RESTRICTED_CONE,
    "sym": NatKind.SYMMETRIC,
}
ABBREV = {kind: short for short, kind in SHORT.items()}
DEFAULT_PAIRS = "prc/prc,fc/fc,rc/prc,sym/fc,fc/sym,rc/rc,sym/rc"
SIM_RTTS = (0.02, 0.1, 0.3)
# Who calls aioice's connect() first. ICE's offer/answer puts the answerer (responder)
# first: it starts its checks once it has sent its answer, the offerer once the answer
# arrives, one signalling delay later. With port-restricted NATs the order matters: the
# earlier side's first check is dropped by the other NAT, and aioice then waits for that
# check's retransmission (500 ms) on the side whose check was dropped.
AIOICE_ORDERS = ("answerer-first", "together", "offerer-first")
STEP_TIMEOUT = 15.0  # each wait inside a run; a run that stalls this long has failed


@dataclass
class Sample:
    ok: bool
    ms: float | None = None  # connect -> first delivered message
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""


# ---------------------------------------------------------------------- processes


@contextlib.contextmanager
def side(
    node: Node, script: str, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], JsonLines]]:
    """A side script in ``node``'s namespace, its stdout read as JSON lines. Its stderr goes
    to a file (a pipe nobody reads could fill and stall it) that is shown on failure."""
    with tempfile.TemporaryFile() as log:
        process = node.popen(
            [sys.executable, str(ROOT / "bench" / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        try:
            yield process, JsonLines(process)
        except Exception as exc:
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{script} {' '.join(args)}: {exc}\n--- stderr:\n{tail}") from exc
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Close stdin (the side's cue to exit), then terminate and kill if it lingers."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)
    if process.stdout is not None:
        process.stdout.close()


def say(process: subprocess.Popen[bytes], line: str) -> None:
    stdin: IO[bytes] | None = process.stdin
    assert stdin is not None
    stdin.write(line.encode() + b"\n")
    stdin.flush()


def expect(lines: JsonLines, event: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
    """The side's next ``event`` line; an "error" line from it fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        item = lines.next(timeout=max(0.0, deadline - time.monotonic()))
        if item.get("event") == event:
            return item
        if item.get("event") in ("error", "garbage"):
            raise RuntimeError(f"side failed: {item}")


def as_float(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


# ---------------------------------------------------------------------- one lab run


def run_ours(lab: Lab, keys: Path, timeout: float) -> Sample:
    a, b = lab.hosts["a"], lab.hosts["b"]
    common = ["--server", SERVER, "--port", str(PORT), "--timeout", str(timeout)]
    with side(
        b,
        "_side_ours.py",
        "--role",
        "responder",
        "--name",
        "bob",
        "--identity",
        str(keys / "bob.pem"),
        *common,
    ) as (_, bob):
        # Bob must be online before alice asks for him.
        expect(bob, "ready")
        with side(
            a,
            "_side_ours.py",
            "--role",
            "initiator",
            "--name",
            "alice",
            "--peer",
            "bob",
            "--identity",
            str(keys / "alice.pem"),
            *common,
        ) as (alice_process, alice):
            expect(alice, "ready")
            say(alice_process, "go")
            sent = expect(alice, "result", timeout * 2)
            got = expect(bob, "result", timeout)
    start = as_float(sent["connect_called"])
    return Sample(
        ok=bool(got["intact"]),
        ms=(as_float(got["first_message"]) - start) * 1000,
        extra={
            "connected_ms": (as_float(sent["connected"]) - start) * 1000,
            "acked_ms": (as_float(sent["acked"]) - start) * 1000,
            "path": sent["path"],
        },
    )


def run_aioice(lab: Lab, timeout: float, order: str) -> Sample:
    a, b = lab.hosts["a"], lab.hosts["b"]
    common = ["--server", SERVER, "--port", str(PORT), "--timeout", str(timeout)]
    with (
        side(b, "_side_aioice.py", "--role", "responder", *common) as (bob_process, bob),
        side(a, "_side_aioice.py", "--role", "initiator", *common) as (alice_process, alice),
    ):
        offers = {"alice": expect(alice, "gathered"), "bob": expect(bob, "gathered")}

        def signal(to: subprocess.Popen[bytes], offer: dict[str, Any]) -> None:
            say(to, json.dumps({k: offer[k] for k in ("ufrag", "pwd", "candidates")}))

        signal(bob_process, offers["alice"])
        signal(alice_process, offers["bob"])
        expect(alice, "armed")
        expect(bob, "armed")
        if order == "together":
            say(bob_process, "go")
            say(alice_process, "go")
        else:
            # One side starts; the other as soon as the first reports that it is connecting
            # (a relay through this script: about a millisecond, like a fast signalling
            # channel in a zero-delay lab).
            first, first_lines, second = (
                (bob_process, bob, alice_process)
                if order == "answerer-first"
                else (alice_process, alice, bob_process)
            )
            say(first, "go")
            expect(first_lines, "connecting")
            say(second, "go")
        sent = expect(alice, "result", timeout * 2)
        got = expect(bob, "result", timeout * 2)
    start = as_float(sent["connect_called"])
    return Sample(
        ok=bool(got["intact"]),
        ms=(as_float(got["first_message"]) - start) * 1000,
        extra={
            "connected_ms": (as_float(sent["connected"]) - start) * 1000,
            "arrival_ms": (as_float(got["first_arrival"]) - start) * 1000
            if got.get("first_arrival") is not None
            else None,
            "gather_ms": max(
                as_float(offers["alice"]["gather_ms"]), as_float(offers["bob"]["gather_ms"])
            ),
            "pair": sent["pair"],
            # Positive: the responder called connect() this long before the initiator.
            "responder_lead_ms": (start - as_float(got["connect_called"])) * 1000,
        },
    )


def lab_pair(
    kind_a: NatKind,
    kind_b: NatKind,
    runs: int,
    timeout: float,
    orders: list[str],
    verbose: bool,
) -> dict[str, list[Sample]]:
    toolkits = ["ours", *(f"aioice {order}" for order in orders)]
    samples: dict[str, list[Sample]] = {toolkit: [] for toolkit in toolkits}
    with (
        Lab.two_nats(a=NatSpec(kind=kind_a), b=NatSpec(kind=kind_b)) as lab,
        rendezvous_process(
            ["--listen", f"{SERVER}:{PORT}", "--alt-ip", ALT], lab.server.exec_prefix
        ),
        tempfile.TemporaryDirectory(prefix="connect-time-keys-") as keys,
    ):
        for index in range(runs):
            # Alternate the order so that neither toolkit always runs on a freshly built lab.
            for toolkit in toolkits if index % 2 == 0 else toolkits[::-1]:
                for router in lab.routers:
                    lab.flush_conntrack(router)
                try:
                    if toolkit == "ours":
                        sample = run_ours(lab, Path(keys), timeout)
                    else:
                        sample = run_aioice(lab, timeout, toolkit.removeprefix("aioice "))
                except (RuntimeError, TimeoutError, AssertionError) as exc:
                    sample = Sample(ok=False, error=str(exc))
                samples[toolkit].append(sample)
                if verbose:
                    shown = f"{sample.ms:.1f} ms {sample.extra}" if sample.ok else sample.error
                    print(
                        f"  {label(kind_a, kind_b)} {toolkit} run {index + 1}: {shown}",
                        file=sys.stderr,
                    )
    return samples


# ---------------------------------------------------------------------- simulator


def sim_once(kind_a: str, kind_b: str, rtt: float, seed: int) -> Sample:
    world = build_world(kind_a, kind_b, rtt=rtt, seed=seed)
    if not world.login():
        return Sample(ok=False, error="login failed")
    start = world.net.now
    world.a.agent.connect("bob", start)
    world.net.wake()
    if not world.net.run_until(lambda: world.a.has(Connected), timeout=10):
        return Sample(ok=False, error="no connection")
    connected = world.net.now
    # As the asyncio adapter does: send the moment connect reports the connection.
    world.a.agent.send("bob", b"first message", connected)
    world.net.wake()
    if not world.net.run_until(lambda: world.b.has(MessageReceived), timeout=10):
        return Sample(ok=False, error="message not delivered")
    return Sample(
        ok=True,
        ms=(world.net.now - start) * 1000,
        extra={"connected_ms": (connected - start) * 1000},
    )


# ---------------------------------------------------------------------- report


def label(kind_a: NatKind | str, kind_b: NatKind | str) -> str:
    return f"{ABBREV[NatKind(kind_a)]}/{ABBREV[NatKind(kind_b)]}"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    # Nearest rank: with 10 runs the p90 is the 9th value, an observed time.
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def summary(samples: list[Sample]) -> tuple[float | None, float | None, int]:
    times = [s.ms for s in samples if s.ok and s.ms is not None]
    if not times:
        return None, None, 0
    return statistics.median(times), quantile(times, 0.9), len(times)


def extra_median(samples: list[Sample], key: str) -> float | None:
    values = [s.extra[key] for s in samples if s.ok and isinstance(s.extra.get(key), int | float)]
    return statistics.median(values) if values else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(rows: list[tuple[str, str, list[Sample], str]]) -> None:
    header = ("scenario", "toolkit", "median ms", "p90 ms", "ok", "connect() ms", "note")
    table = [header]
    for scenario, toolkit, samples, note in rows:
        median, p90, ok = summary(samples)
        table.append(
            (
                scenario,
                toolkit,
                fmt(median),
                fmt(p90),
                f"{ok}/{len(samples)}",
                fmt(extra_median(samples, "connected_ms")),
                note,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for number, row in enumerate(table):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if number == 0:
            print("  ".join("-" * width for width in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="lab runs per pair and toolkit")
    parser.add_argument(
        "--pairs", default=DEFAULT_PAIRS, help=f"a/b NAT pairs ({', '.join(SHORT)})"
    )
    parser.add_argument("--seeds", type=int, default=10, help="simulator runs per RTT and pair")
    parser.add_argument("--timeout", type=float, default=STEP_TIMEOUT)
    parser.add_argument(
        "--aioice-order",
        default="answerer-first,together",
        help=f"who calls aioice's connect() first, a list of: {', '.join(AIOICE_ORDERS)}",
    )
    parser.add_argument("--no-lab", action="store_true")
    parser.add_argument("--no-sim", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="every run on stderr")
    args = parser.parse_args()
    configure_logging()
    pairs = [tuple(SHORT[k] for k in pair.split("/")) for pair in args.pairs.split(",")]
    orders = [order for order in args.aioice_order.split(",") if order]
    if unknown := set(orders) - set(AIOICE_ORDERS):
        parser.error(f"unknown --aioice-order {', '.join(sorted(unknown))}")

    rows: list[tuple[str, str, list[Sample], str]] = []
    ratios: list[tuple[str, float | None]] = []
    failures: list[str] = []
    if not args.no_lab:
        for kind_a, kind_b in pairs:
            scenario = f"lab {label(kind_a, kind_b)}"
            print(f"{scenario}: {args.runs} runs per toolkit...", file=sys.stderr, flush=True)
            samples = lab_pair(kind_a, kind_b, args.runs, args.timeout, orders, args.verbose)
            ours_median, _, _ = summary(samples["ours"])
            rows.append((scenario, "ours", samples["ours"], "incl. rendezvous exchange"))
            for toolkit, runs in samples.items():
                if toolkit == "ours":
                    continue
                gather = extra_median(runs, "gather_ms")
                chosen = sorted({str(s.extra.get("pair")) for s in runs if s.ok})
                note = f"excl. gathering ({fmt(gather)} ms); pair {','.join(chosen) or '-'}"
                rows.append((scenario, toolkit, runs, note))
                theirs_median, _, _ = summary(runs)
                ratio = theirs_median / ours_median if ours_median and theirs_median else None
                ratios.append((f"{scenario} {toolkit}", ratio))
            for toolkit, runs in samples.items():
                failures += [f"{scenario} {toolkit}: {s.error}" for s in runs if not s.ok]
    if not args.no_sim:
        sim_pairs = pairs or [(NatKind.PORT_RESTRICTED_CONE, NatKind.PORT_RESTRICTED_CONE)]
        for rtt in SIM_RTTS:
            for kind_a, kind_b in sim_pairs:
                samples_sim = [
                    sim_once(str(kind_a), str(kind_b), rtt, seed)
                    for seed in range(1, args.seeds + 1)
                ]
                scenario = f"sim rtt={rtt * 1000:.0f}ms {label(kind_a, kind_b)}"
                rows.append((scenario, "ours", samples_sim, "virtual time"))
                failures += [f"{scenario}: {s.error}" for s in samples_sim if not s.ok]

    print()
    print_table(rows)
    if ratios:
        print()
        print("aioice/ours (ratio of medians):")
        for scenario, ratio in ratios:
            print(f"  {scenario}: {'-' if ratio is None else f'{ratio:.1f}x'}")
    if failures:
        print()
        print("failures:")
        for failure in failures:
            print(f"  {failure.splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
