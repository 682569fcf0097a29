"""A session's data plane: frames (peer.frames) sealed in the encrypted channel
(peer.channel) and made reliable and ordered (peer.reliable).

Until the handshake gives it keys it only queues what the application sends; from then on
it opens what arrives and seals what goes out. Where datagrams go is not its business (the
session's paths decide), nor when a frame is applied (the session moves its path first).
"""

from __future__ import annotations

from collections.abc import Callable

from peer.channel import Channel, ChannelError
from peer.errors import LocalProtocolError
from peer.frames import Frame, FrameError, parse_frame
from peer.noise import TransportKeys
from peer.reliable import ReliabilityConfig, ReliableStream


class SecureStream:
    __slots__ = ("_channel", "seal", "stream")

    def __init__(self, config: ReliabilityConfig) -> None:
        self.stream = ReliableStream(config)
        self._channel: Channel | None = None
        # seal(plaintext) -> datagram: the channel's own once started (no wrapper call on
        # the data path).
        self.seal: Callable[[bytes], bytes] = _not_started

    def start(self, keys: TransportKeys) -> None:
        """The handshake is done: from now on, datagrams can be sealed and opened."""
        self._channel = channel = Channel(keys)
        self.seal = channel.seal

    @property
    def started(self) -> bool:
        return self._channel is not None

    def open(self, datagram: bytes) -> Frame | None:
        """The frame inside, or None: not authentic, replayed, or no channel yet."""
        channel = self._channel
        if channel is None:
            return None
        try:
            return parse_frame(channel.open(datagram))
        except (ChannelError, FrameError):
            return None


def _not_started(plaintext: bytes) -> bytes:
    raise LocalProtocolError("nothing to seal with before the handshake")
