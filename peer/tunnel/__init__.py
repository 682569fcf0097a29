"""Tunnels over the peer channel, sans-I/O: services a peer exposes, what a forwarder
asks for on each stream (peer.tunnel.wire), who may ask (peer.tunnel.policy), UDP flows
(peer.tunnel.udp_flows), SOCKS5 (peer.tunnel.socks5). The asyncio side is
peer.adapters.tunnel_*."""
