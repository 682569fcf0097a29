"""asyncio adapters around the sans-I/O rendezvous core: sockets, connections, timers."""
