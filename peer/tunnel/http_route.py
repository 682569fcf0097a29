"""HTTP virtual hosts for the publish gateway, sans-I/O: the Host a request names, read
from its head, so that one public HTTP port serves every publisher's site (frp's
``http`` proxies). The bytes go on unchanged: the gateway reads the head only to route it.

A connection is routed by its first request; keep-alive requests after it go to the same
site (browsers keep one connection per host, so they agree).
"""

from __future__ import annotations

import re

MAX_HEAD = 16 * 1024  # a request head larger than this is refused (431)
_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_REASONS = {400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large",
            502: "Bad Gateway"}  # fmt: skip


class HostDecodeError(ValueError):
    """A request head without a usable Host (or one too large)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def site_name(text: str) -> str:
    """A host name a site may be published under: lower case, DNS letters, digits and
    hyphens, dot-separated; raises ValueError with one line otherwise."""
    host = text.strip().lower().rstrip(".")
    if not _HOST.match(host):
        raise ValueError(f"bad host name {text!r}: letters, digits, '-' and '.'")
    return host


def head_end(buffer: bytes) -> int | None:
    """Where the request head ends (after its blank line), None if not yet; raises
    HostDecodeError when the head is too large."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HostDecodeError(431, "request head too large")
        return None
    return end + 4


def request_host(head: bytes) -> str:
    """The host of the request (its Host header, port dropped)."""
    lines = head.split(b"\r\n")
    if (
        not lines
        or len(lines[0].split(b" ")) != 3
        or not lines[0].split(b" ")[2].startswith(b"HTTP/1.")
    ):
        raise HostDecodeError(400, "not an HTTP/1.x request")
    hosts = [line.partition(b":")[2].strip() for line in lines[1:] if line[:5].lower() == b"host:"]
    if len(hosts) != 1:
        raise HostDecodeError(400, "a request needs one Host header")
    try:
        text = hosts[0].decode("ascii")
    except UnicodeDecodeError:
        raise HostDecodeError(400, "Host is not ASCII") from None
    name, _, port = text.rpartition(":") if not text.startswith("[") else (text, "", "")
    host = name if port.isdigit() else text
    try:
        return site_name(host)
    except ValueError as exc:
        raise HostDecodeError(400, str(exc)) from None


def error_response(status: int, reason: str) -> bytes:
    """A short plain-text answer, and the connection closed after it."""
    body = (reason + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
