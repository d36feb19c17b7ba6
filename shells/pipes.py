"""Reading a pipe with as few trips through trio's scheduler as possible.

``FdStream.receive_some`` always yields to the scheduler before it reads, so
a reader that handles each chunk and asks for the next pays one extra pass of
the run loop per message, on each pipe a call crosses. :class:`PipeReader`
tries the read first and waits for the pipe only when it is empty; to stay
fair to other tasks it still yields when it returns data it did not wait for.
"""

from __future__ import annotations

import os

import trio

__all__ = ["PipeReader"]


class PipeReader:
    """Read chunks from ``stream``; directly from its fd when it is a :class:`trio.lowlevel.FdStream`.

    Only one task may read, and the stream must stay open while it does (the
    fd is read directly). Raises what ``receive_some`` would: ``b""`` at end
    of stream, :class:`trio.ClosedResourceError` when the stream is closed
    while waiting, :class:`OSError` on a read error.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, chunk: int) -> None:
        self._stream = stream
        self._chunk = chunk
        self._fd = stream.fileno() if isinstance(stream, trio.lowlevel.FdStream) else None

    async def receive_some(self) -> bytes | bytearray:
        """The next chunk, or ``b""`` at end of stream."""
        fd = self._fd
        if fd is None:
            return await self._stream.receive_some(self._chunk)
        waited = False
        while True:
            try:
                data = os.read(fd, self._chunk)
            except BlockingIOError:
                # Parks the task: a checkpoint, and cancellation is seen here.
                await trio.lowlevel.wait_readable(fd)
                waited = True
                continue
            if not waited:
                # Data kept coming without a wait: let the other tasks run.
                await trio.lowlevel.checkpoint()
            return data
