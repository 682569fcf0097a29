"""How a transport connection sizes its packets, windows and buffers: one frozen,
self-checking configuration (loss detection and congestion control have their own, in
peer.transport.recovery)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peer.errors import LocalProtocolError
from peer.transport.recovery import RecoveryConfig

MIB = 1024 * 1024
# The smallest datagram every path must carry (QUIC's floor, RFC 9000 14.1): IPv6's
# 1280-byte minimum MTU less its headers, with room for a relay's framing on top.
MIN_DATAGRAM_SIZE = 1200


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    # The largest plaintext packet the transport builds (the channel adds its 25 bytes):
    # sized so that a sealed datagram fits 1,200 bytes and never needs IP fragmentation.
    max_packet_size: int = MIN_DATAGRAM_SIZE - 25
    # Path MTU probing (RFC 8899, peer.transport.pmtu) may raise packets on a path that
    # carries them up to this: 1,472-byte datagrams once sealed, a 1,500-byte Ethernet
    # frame's worth over IPv4. Equal to max_packet_size: no probing.
    max_probed_packet_size: int = 1500 - 28 - 25
    # Flow control (RFC 9000 section 4): what the peer may send us before we read.
    initial_max_data: int = 16 * MIB  # the whole connection
    initial_max_stream_data: int = 4 * MIB  # each stream
    # Streams the peer may have open toward us at once: a tunnel holds one per forwarded
    # connection (and per UDP flow, for its idle timeout), so a browser or a DNS forward
    # needs hundreds.
    max_streams: int = 1024
    # What one stream's writer may buffer before ``writable`` turns false (backpressure).
    send_buffer_limit: int = 4 * MIB
    # Messages ride a stream, each a 4-byte length and its bytes: at most this long.
    max_message_size: int = 16 * MIB
    # Unreliable datagrams queue at most this many bytes before the oldest is dropped.
    datagram_queue_limit: int = 256 * 1024
    # Acknowledgements (RFC 9000 13.2): at most this late, and at once after this many
    # ack-eliciting packets.
    max_ack_delay: float = 0.025
    ack_eliciting_threshold: int = 2
    max_ack_ranges: int = 32
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self) -> None:
        if not 200 <= self.max_packet_size <= 65_000:
            raise LocalProtocolError("max_packet_size must be between 200 and 65000")
        if not self.max_packet_size <= self.max_probed_packet_size <= 65_000:
            raise LocalProtocolError(
                "max_probed_packet_size must be between max_packet_size and 65000"
            )
        for name in (
            "initial_max_data",
            "initial_max_stream_data",
            "max_streams",
            "send_buffer_limit",
            "max_message_size",
            "datagram_queue_limit",
            "ack_eliciting_threshold",
            "max_ack_ranges",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LocalProtocolError(f"{name} must be a positive integer, not {value!r}")
        if self.max_message_size > 2**32 - 1:
            raise LocalProtocolError("max_message_size must fit in 4 bytes")
        if not 0 <= self.max_ack_delay < 1:
            raise LocalProtocolError("max_ack_delay must be in [0, 1) seconds")
