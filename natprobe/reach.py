"""Whether a server that gives no UDP answer is there at all: a TCP connection to the
same port (STUN servers and our rendezvous serve TCP there too) tells blocked UDP from no
server. The reasons are short lower-case phrases for one-line messages."""

from __future__ import annotations

import asyncio
import contextlib
import os

from stunproto.attributes import Address


def os_reason(exc: BaseException) -> str:
    """``[Errno 111] Connect call failed (...)`` -> ``connection refused``."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno > 0:
        text = os.strerror(exc.errno)  # (asyncio's text is "Connect call failed ...")
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror  # getaddrinfo's errors have negative numbers
    else:
        text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


async def tcp_failure(server: Address, timeout: float) -> str | None:
    """None when ``server`` accepts a TCP connection within ``timeout``; else why not
    ("connection refused", "nothing within 3 s", "no route to host", ...)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*server), timeout)
    except TimeoutError:
        return f"nothing within {timeout:g} s"
    except OSError as exc:
        return os_reason(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
