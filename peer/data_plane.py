"""A session's data plane: the encrypted channel (peer.channel) and, inside it, the
transport (peer.transport): streams, messages and datagrams with loss recovery,
congestion and flow control.

Every sealed datagram's plaintext starts with its kind: a transport packet
(``peer.transport.frames.PACKET``), or one of the session's path probes, which prove a
route both ways without touching the transport (peer.session sends them to confirm the
handshake over a route, to re-punch, and to test the relay before failing over to it):

* PATH_CHALLENGE (0x20): answer with a PATH_RESPONSE over the route it came by;
* PATH_RESPONSE (0x21): the route works both ways, now (the channel's replay window makes
  an old answer worthless).

Until the handshake gives it keys the data plane only queues what the application sends.
"""

from __future__ import annotations

from collections.abc import Callable

from noiseproto import TransportKeys
from peer.channel import Channel, ChannelConfig, ChannelError
from peer.errors import LocalProtocolError
from peer.transport.config import TransportConfig
from peer.transport.connection import TransportConnection

PATH_CHALLENGE = 0x20
PATH_RESPONSE = 0x21
CHALLENGE_PACKET = bytes([PATH_CHALLENGE])
RESPONSE_PACKET = bytes([PATH_RESPONSE])


class DataPlane:
    __slots__ = ("_channel_config", "channel", "seal", "transport")

    def __init__(
        self,
        config: TransportConfig,
        *,
        initiator: bool,
        now: float,
        channel: ChannelConfig | None = None,
    ) -> None:
        self.transport = TransportConnection(config=config, initiator=initiator, now=now)
        self._channel_config = channel
        self.channel: Channel | None = None
        # seal(plaintext) -> datagram: the channel's own once started (no wrapper call on
        # the data path).
        self.seal: Callable[[bytes], bytes] = _not_started

    def start(self, keys: TransportKeys, now: float) -> None:
        """The handshake is done: from now on, datagrams can be sealed and opened."""
        self.channel = channel = Channel(keys, config=self._channel_config, now=now)
        self.seal = channel.seal

    def get_timer(self) -> float | None:
        """The channel's: when it forgets the previous receive key."""
        channel = self.channel
        return None if channel is None else channel.get_timer()

    def handle_timer(self, now: float) -> None:
        if self.channel is not None:
            self.channel.handle_timer(now)

    @property
    def started(self) -> bool:
        return self.channel is not None

    def open(self, datagram: bytes) -> bytes | None:
        """The plaintext inside, or None: not authentic, replayed, or no channel yet."""
        channel = self.channel
        if channel is None:
            return None
        try:
            plaintext = channel.open(datagram)
        except ChannelError:
            return None
        return plaintext or None


def _not_started(plaintext: bytes) -> bytes:
    raise LocalProtocolError("nothing to seal with before the handshake")
