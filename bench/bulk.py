"""Bulk transfer: how fast our transport moves bytes, beside aioquic.

in-memory   our transport pair (with the Noise channel's ChaCha20-Poly1305 sealing every
            packet) and an aioquic client/server pair (TLS 1.3, AES-128-GCM), both ends
            on one core, datagrams handed across in memory: the same bytes over one
            stream, CPU-seconds per GB and MB per CPU-second, side by side.
link        our transport pair in netsim, in virtual time, through its bottleneck link
            (netsim.link.BottleneckLink; default 100 Mbit/s, 50 ms RTT, a drop-tail queue
            of one bandwidth-delay product) with 0, 1, 5 and 10 % random loss each way:
            goodput against the link rate; then two flows sharing it, and their ratio.
lab         (root) a file between two NATed peers on real Linux NATs over the direct path
            and over the relay, beside plain TCP, lossless and at 1, 5 and 10% UDP loss
            (bench/_bulk_lab.py); not part of "all".

python bench/bulk.py                       # both, 200 MB in memory
python bench/bulk.py in-memory --mb 1000
python bench/bulk.py link --mb 50 --rate-mbit 100 --rtt-ms 50
sudo python bench/bulk.py lab --mb 256
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from noiseproto import TransportKeys
from peer.channel import Channel
from peer.transport.connection import TransportConnection
from tests.peer.transport.netsim_flows import bottleneck_world

CHUNK = 1024 * 1024
STEADY_RTTS = 20  # goodput "after slow start" counts from this many round trips on


_shown: dict[str, int] = {}


def _progress(label: str, done: int, total: int) -> None:
    percent = done * 100 // total
    if _shown.get(label) != percent:  # (only when it moves: stderr may be a file)
        _shown[label] = percent
        print(f"\r  {label}: {percent:3d}%", end="", file=sys.stderr, flush=True)


def ours_in_memory(total: int) -> float:
    """CPU-seconds to move ``total`` bytes between two of our transports (sealed)."""
    k1, k2 = os.urandom(32), os.urandom(32)
    seal_a = Channel(TransportKeys(send=k1, receive=k2, handshake_hash=bytes(32)))
    seal_b = Channel(TransportKeys(send=k2, receive=k1, handshake_hash=bytes(32)))
    a = TransportConnection(initiator=True, now=0.0)
    b = TransportConnection(initiator=False, now=0.0)
    stream = a.open_stream()
    chunk = bytes(CHUNK)
    written = received = 0
    started = time.process_time()
    while received < total:
        while written < total and a.writable(stream):
            a.write(stream, chunk)
            written += len(chunk)
        now = time.monotonic()
        for conn in (a, b):
            at = conn.get_timer()
            if at is not None and at <= now:
                conn.handle_timer(now)
        for packet in a.packets_to_send(now):
            b.receive_packet(seal_b.open(seal_a.seal(packet)), now)
        if stream in b._recv:
            while b.readable(stream):
                received += len(b.read(stream))
        for packet in b.packets_to_send(now):
            a.receive_packet(seal_a.open(seal_b.seal(packet)), now)
        while a.next_event() or b.next_event():
            pass
        _progress("ours", received, total)
    print(file=sys.stderr)
    return time.process_time() - started


def aioquic_in_memory(total: int) -> float | None:
    """The same with aioquic (None if it is not installed: pip install -e '.[bench]')."""
    try:
        from aioquic.quic import events
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection
    except ImportError:
        return None
    certificate, key = _self_signed()
    server_config = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    server_config.certificate, server_config.private_key = certificate, key
    client_config = QuicConfiguration(is_client=True, alpn_protocols=["bench"], verify_mode=0)
    client = QuicConnection(configuration=client_config)
    server = QuicConnection(
        configuration=server_config,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    client_addr, server_addr = ("10.0.0.1", 1), ("10.0.0.2", 2)
    client.connect(server_addr, now=time.monotonic())

    def exchange(now: float) -> int:
        got = 0
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, client_addr, now)
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, server_addr, now)
        for conn in (client, server):
            timer = conn.get_timer()
            if timer is not None and timer <= now:
                conn.handle_timer(now)
        while (event := server.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                got += len(event.data)
        while client.next_event() is not None:
            pass
        return got

    for _ in range(20):  # the handshake
        exchange(time.monotonic())
    stream = client.get_next_available_stream_id()
    chunk = bytes(CHUNK)
    written = received = 0
    started = time.process_time()
    while received < total:
        stream_state = client._streams.get(stream)
        buffered = (
            0
            if stream_state is None
            else stream_state.sender._buffer_stop - stream_state.sender._buffer_start
        )
        while written < total and buffered < 4 * CHUNK:
            client.send_stream_data(stream, chunk)
            written += len(chunk)
            buffered += len(chunk)
        received += exchange(time.monotonic())
        _progress("aioquic", received, total)
    print(file=sys.stderr)
    return time.process_time() - started


def _self_signed() -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def in_memory(megabytes: int) -> None:
    total = megabytes * 1024 * 1024
    print(f"in memory, {megabytes} MB over one stream, both ends on one core:")
    rows = [("ours (transport + ChaCha20-Poly1305 channel)", ours_in_memory(total))]
    theirs = aioquic_in_memory(total)
    if theirs is not None:
        rows.append(("aioquic (QUIC, AES-128-GCM)", theirs))
    for label, cpu in rows:
        print(
            f"  {label:46} {cpu / (total / 1e9):6.2f} CPU-s/GB"
            f"  {total / cpu / 1e6:7.1f} MB per CPU-s"
        )
    if theirs is not None:
        print(f"  ours / aioquic: {theirs / rows[0][1]:.2f}x per CPU-second")


def over_link(
    megabytes: int, rate_mbit: float, rtt_ms: float, loss: float, *, flows: int = 1, seed: int = 7
) -> tuple[list[float], list[float]]:
    """Each flow's goodput (bits per second of virtual time) through netsim's bottleneck,
    over the time every flow is active and over the part of it after slow start: (whole,
    after). ``loss`` in percent, each way."""
    rtt = rtt_ms / 1000
    world = bottleneck_world(
        sizes=[megabytes * 1024 * 1024] * flows, rate_mbit=rate_mbit, rtt=rtt, loss=loss, seed=seed
    )
    label = f"{loss:g}% loss" if flows == 1 else f"{flows} flows"
    world.run(3600.0, progress=lambda done, total: _progress(label, done, total))
    print(file=sys.stderr)
    ends = [receiver.finished for receiver in world.receivers]
    if None in ends:
        raise SystemExit(f"{label}: not done after an hour of virtual time")
    end = min(t for t in ends if t is not None)
    after = min(STEADY_RTTS * rtt, end / 2)  # slow start and its overshoot are over
    return (
        [receiver.goodput(0.0, end) * 8 for receiver in world.receivers],
        [receiver.goodput(after, end) * 8 for receiver in world.receivers],
    )


def link(megabytes: int, rate_mbit: float, rtt_ms: float) -> None:
    rate = rate_mbit * 1e6
    bdp_kb = rate / 8 * rtt_ms / 1000 / 1000
    print(
        f"netsim bottleneck {rate_mbit:g} Mbit/s, {rtt_ms:g} ms RTT, drop-tail queue of one BDP"
        f" ({bdp_kb:.0f} kB), CUBIC, {megabytes} MB per flow; goodput (payload), whole transfer"
        f" and after slow start ({STEADY_RTTS} RTTs on):"
    )
    for loss in (0.0, 1.0, 5.0, 10.0):
        (whole,), (after,) = over_link(megabytes, rate_mbit, rtt_ms, loss)
        print(
            f"  {loss:3g}% loss: {whole / 1e6:6.1f} Mbit/s, {whole / rate:6.1%} of the link;"
            f" after slow start {after / 1e6:6.1f} Mbit/s, {after / rate:6.1%}"
        )
    wholes, afters = over_link(megabytes, rate_mbit, rtt_ms, 0.0, flows=2)
    print(
        f"  two flows sharing the link (while both run): {wholes[0] / 1e6:.1f} and"
        f" {wholes[1] / 1e6:.1f} Mbit/s, ratio {min(wholes) / max(wholes):.2f},"
        f" {sum(wholes) / rate:.1%} of the link together;"
        f" after slow start {afters[0] / 1e6:.1f} and {afters[1] / 1e6:.1f},"
        f" ratio {min(afters) / max(afters):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what", nargs="?", choices=("in-memory", "link", "lab", "all"), default="all"
    )
    parser.add_argument("--mb", type=int, default=None, help="megabytes to move")
    parser.add_argument("--rate-mbit", type=float, default=100.0)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    if args.what in ("in-memory", "all"):
        in_memory(args.mb or 200)
    if args.what in ("link", "all"):
        link(args.mb or 50, args.rate_mbit, args.rtt_ms)
    if args.what == "lab":
        from _bulk_lab import lab  # needs root and the lab's tools

        lab(args.mb or 256, losses=(0, 1, 5, 10))
    return 0


if __name__ == "__main__":
    sys.exit(main())
