"""The data plane inside the encrypted channel, sans-I/O, modelled on QUIC's transport:
packet numbers and ACK ranges (peer.transport.frames), loss detection and congestion control
(peer.transport.recovery, peer.transport.congestion, RFC 9002 / RFC 9438), multiplexed byte
streams with flow control (peer.transport.streams, RFC 9000), unreliable datagrams (RFC 9221)
and length-prefixed messages, all driven by ``TransportConnection``
(peer.transport.connection)."""
