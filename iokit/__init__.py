"""asyncio plumbing shared by the packages' adapters (never by their sans-I/O cores): a timer
that follows a sans-I/O object's ``get_timer()``, the STUN transaction endpoint, sets of
non-blocking UDP sockets, and the logging set-up of the command-line tools."""
