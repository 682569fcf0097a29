"""One file over one stream, both sides, in asyncio (the protocol is peer.transfer's; the
command line that drives this is peer.transfer_cli).

The sender reads its file in chunks and waits on ``drain`` after each (the receiver's
pace sets the sender's: never a whole file in memory), while it listens for an early
answer: a receiver that refuses a file says so at once, and the sender stops. The receiver
writes into a hidden, uniquely named ``.NAME.*.part`` beside the final name, and keeps it
only whole and verified: fsync, then a link to a free name (``NAME``, else ``NAME (1)``,
...: an existing file is never overwritten), fsync of the directory, then the answer. On
any failure the part file is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from peer.errors import PeerError
from peer.transfer import (
    FRAME_PREFIX,
    BodyReceived,
    IncomingFile,
    Offer,
    OfferReceived,
    OutgoingFile,
    ResetCode,
    TransferDecodeError,
    Verdict,
    candidate_names,
    final_mode,
    payload_length,
)
from peer.transfer_progress import Progress, ProgressMeter

log = structlog.get_logger()

CHUNK = 256 * 1024  # read from disk and from the stream at most this much at a time
VERDICT_TIMEOUT = 120.0  # from the end of a file to the receiver's answer (it fsyncs first)
CLOSE_TIMEOUT = 10.0  # for the receiver's answer to be acknowledged
DISCARD_TIMEOUT = 30.0  # a receiver that refused a file reads on this long for the sender to stop


class TransferStream(Protocol):
    """What a transfer needs of a stream (peer.adapters.connection.Stream)."""

    @property
    def stream_id(self) -> int: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    def write_eof(self) -> None: ...
    async def close(self) -> None: ...
    def reset(self, code: int = 0) -> None: ...


class FileNotReceived(PeerError):
    """A file did not arrive whole (its part file is gone); ``name`` is None when not even
    its offer did."""

    def __init__(self, name: str | None, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedFile:
    offer: Offer
    path: Path  # where it was saved
    sha256: str
    seconds: float


def failure_reason(exc: BaseException) -> str:
    """One line for the user and for the peer (an OSError's text without local paths)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot save: {exc.strerror}"
    return str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)


async def settle(*tasks: asyncio.Future[Any]) -> None:
    """Cancel the tasks and wait for them (no exception left unretrieved)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------- send


async def send_file(
    stream: TransferStream, path: Path, offer: Offer, on_progress: Callable[[Progress], None]
) -> tuple[Verdict, str]:
    """Send ``path`` as ``offer`` on a fresh stream: the receiver's verdict, and the SHA-256
    (hex) sent. Raises PeerError (the stream or connection failed) or OSError (reading)."""
    outgoing = OutgoingFile(offer)
    answer = asyncio.ensure_future(_read_verdict(stream))
    sending = asyncio.ensure_future(_send_content(stream, path, outgoing, on_progress))
    try:
        await asyncio.wait({answer, sending}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():  # an answer before the whole file: the receiver gave up
            stream.reset(ResetCode.SENDER_ABORTED)
            verdict = answer.result()
            if verdict.ok:
                raise TransferDecodeError("the receiver said ok before it had the whole file")
            return verdict, outgoing.sha256
        if (failure := sending.exception()) is not None:
            stream.reset(ResetCode.SENDER_ABORTED)
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                return answer.result(), outgoing.sha256  # the receiver's reason says more
            raise failure
        try:
            return await asyncio.wait_for(answer, VERDICT_TIMEOUT), outgoing.sha256
        except TimeoutError:
            raise PeerError(f"no answer from the receiver within {VERDICT_TIMEOUT:g} s") from None
    finally:
        await settle(answer, sending)


async def _send_content(
    stream: TransferStream,
    path: Path,
    outgoing: OutgoingFile,
    on_progress: Callable[[Progress], None],
) -> None:
    loop = asyncio.get_running_loop()
    size = outgoing.offer.size
    meter = ProgressMeter(size, loop.time())
    stream.write(outgoing.header())
    _report(on_progress, meter.advance(0, loop.time()))
    with path.open("rb") as file:
        while (left := size - outgoing.sent) > 0:
            chunk = file.read(min(CHUNK, left))  # never more than offered, if it grew
            if not chunk:
                break  # it shrank: the trailer says so
            stream.write(outgoing.body(chunk))
            await stream.drain()
            _report(on_progress, meter.advance(len(chunk), loop.time()))
    stream.write(outgoing.trailer())
    stream.write_eof()


def _report(on_progress: Callable[[Progress], None], progress: Progress | None) -> None:
    if progress is not None:
        on_progress(progress)


async def _read_verdict(stream: TransferStream) -> Verdict:
    try:
        prefix = await stream.readexactly(FRAME_PREFIX.size)
        payload = await stream.readexactly(payload_length(prefix))
    except asyncio.IncompleteReadError:
        raise TransferDecodeError("the receiver ended the stream without an answer") from None
    return Verdict.parse(payload)


# ---------------------------------------------------------------------------- receive


async def receive_file(
    stream: TransferStream,
    directory: Path,
    umask: int,
    on_progress: Callable[[str, Progress], None],
) -> ReceivedFile:
    """Receive the file a peer sends on ``stream`` into ``directory`` and answer it.
    Raises FileNotReceived (after answering, when the peer can still hear it)."""
    loop = asyncio.get_running_loop()
    incoming = IncomingFile()
    part: _PartFile | None = None
    meter = ProgressMeter(0, loop.time())
    try:
        try:
            while data := await stream.read(CHUNK):
                for event in incoming.receive_data(data):
                    if isinstance(event, OfferReceived):
                        part = _PartFile(directory, event.offer.name)
                        meter = ProgressMeter(event.offer.size, loop.time())
                        count = 0
                    elif isinstance(event, BodyReceived):
                        assert part is not None
                        part.write(event.data)
                        count = len(event.data)
                    else:
                        continue
                    if (progress := meter.advance(count, loop.time())) is not None:
                        on_progress(part.name, progress)
            incoming.receive_eof()
            assert part is not None and incoming.offer is not None
            saved = await part.commit(final_mode(incoming.offer.mode, umask))
            part = None
        except (TransferDecodeError, OSError) as exc:
            if part is not None:  # gone before the sender hears why
                part.discard()
                part = None
            reason = failure_reason(exc)
            await _refuse(stream, Verdict.refused(reason))
            raise _not_received(incoming, reason) from None
        except PeerError as exc:  # reset by the sender, or the connection closed
            raise _not_received(incoming, str(exc)) from None
    finally:
        if part is not None:  # cancelled: never leave a part file behind
            part.discard()
    await _answer(stream, Verdict.accepted(saved.name))
    seconds = loop.time() - meter.started
    return ReceivedFile(offer=incoming.offer, path=saved, sha256=incoming.sha256, seconds=seconds)


def _not_received(incoming: IncomingFile, reason: str) -> FileNotReceived:
    return FileNotReceived(incoming.offer.name if incoming.offer else None, reason)


async def _answer(stream: TransferStream, verdict: Verdict) -> None:
    try:
        stream.write(verdict.encode())
        await asyncio.wait_for(stream.close(), CLOSE_TIMEOUT)
    except (PeerError, TimeoutError) as exc:  # saved anyway; the sender tells its side
        log.debug("transfer answer not delivered", reason=str(exc))


async def _refuse(stream: TransferStream, verdict: Verdict) -> None:
    """Answer at once, then read on to the end (or the sender's reset) so that a sender
    still writing is not blocked before it reads the answer."""
    try:
        stream.write(verdict.encode())
        stream.write_eof()
        async with asyncio.timeout(DISCARD_TIMEOUT):
            while await stream.read(CHUNK):
                pass
    except (PeerError, TimeoutError):
        stream.reset(ResetCode.RECEIVER_GAVE_UP)


class _PartFile:
    """A file being received: a hidden, uniquely named sibling of its final name."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        # (the name cut so that the part file's own name stays within NAME_MAX)
        short = name.encode()[:200].decode(errors="ignore")
        descriptor, path = tempfile.mkstemp(prefix=f".{short}.", suffix=".part", dir=directory)
        self.path = Path(path)
        self._file = os.fdopen(descriptor, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    async def commit(self, mode: int) -> Path:
        self._file.flush()
        await asyncio.to_thread(os.fsync, self._file.fileno())  # seconds, for a big file
        self._file.close()
        os.chmod(self.path, mode)
        final = self._move_to_free_name()
        await asyncio.to_thread(_fsync_directory, self.directory)
        return final

    def _move_to_free_name(self) -> Path:
        for candidate in candidate_names(self.name):
            final = self.directory / candidate
            try:
                os.link(self.path, final)  # atomic, and fails rather than overwrite
            except FileExistsError:
                continue
            except OSError:  # no hard links here: check, then rename (nothing awaits between)
                if final.exists() or final.is_symlink():
                    continue
                os.rename(self.path, final)
                return final
            self.path.unlink()
            return final
        raise FileExistsError(f"{self.name} and all its numbered copies exist")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
