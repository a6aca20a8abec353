"""Sending to a worker's Pipe without ever blocking the master, with a bounded queue.

``Connection.send`` blocks once the socket buffer is full, that is when a
worker stops reading its commands (frozen, deadlocked command thread). An
:class:`Outbox` writes the same frames (``multiprocessing``'s 4-byte length
and pickle) with ``MSG_DONTWAIT``, keeps what the socket did not take, and
writes it when the master loop sees the pipe writable again; past its bound
it refuses at once. A message
may carry file descriptors: they follow its frame as one byte with
``SCM_RIGHTS`` (the worker reads them right after the message).
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Deque, List, Optional, Protocol, Sequence, Union

from .._os.adoption import send_fds

MAX_MESSAGES = 64
MAX_BYTES = 256 * 1024
_LENGTH = struct.Struct("!i")


class _Fds:
    """File descriptors waiting to be sent (our own duplicates, closed once sent or dropped)."""

    def __init__(self, fds: Sequence[int]) -> None:
        self.fds: List[int] = [os.dup(fd) for fd in fds]

    def __len__(self) -> int:
        return 1  # the carrier byte

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


_Item = Union[memoryview, _Fds]


class Writers(Protocol):
    """What the outbox needs of the loop (EventLoop has it)."""

    def add_writer(self, obj: Any, callback: Callable[[Any], None]) -> None: ...

    def remove_writer(self, obj: Any) -> None: ...


class OutboxFull(Exception):
    """The worker has not read what was sent to it; nothing more is queued."""


class Outbox:
    """Non-blocking, ordered sends to one worker; what waits goes once ``loop`` sees the pipe writable."""

    def __init__(self, conn: Any, loop: Writers, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES) -> None:
        self.conn = conn
        self.loop = loop
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queue: Deque[_Item] = deque()
        self._queued_bytes = 0
        self._watching = False  # registered as a writer of the loop

    @property
    def waiting(self) -> int:
        """Messages (whole or the rest of one) not yet taken by the socket."""
        return len(self._queue)

    def send(self, message: Any, fds: Sequence[int] = ()) -> Optional[memoryview]:
        """Send now what the socket takes, queue the rest; OutboxFull over the bound, OSError if gone.

        ``fds`` go right after the message (duplicated now: the caller may close its own).
        Returns the queued message (for :meth:`discard`) if it had to wait whole, else None.
        """
        data = frame(message)
        if self._queue:
            if len(self._queue) >= self.max_messages or self._queued_bytes + len(data) > self.max_bytes:
                raise OutboxFull(f"{len(self._queue)} earlier messages ({self._queued_bytes} bytes) are still unread")
            whole = memoryview(data)
            self._enqueue(whole)
            if fds:
                self._enqueue(_Fds(fds))
            return whole
        sent = self._write(memoryview(data))
        if sent < len(data):
            self._enqueue(memoryview(data)[sent:])
        if fds and (self._queue or not self._write_fds(fds)):
            self._enqueue(_Fds(fds))
        return None

    def discard(self, queued: Optional[memoryview]) -> None:
        """Drop a message nobody waits for any more, unless some of it was written (the head may be)."""
        if queued is None or not self._queue or queued is self._queue[0]:
            return
        for index, item in enumerate(self._queue):
            if item is queued:
                del self._queue[index]
                self._queued_bytes -= len(item)
                if index < len(self._queue) and isinstance(self._queue[index], _Fds):
                    self._drop(index)  # the descriptors that were to follow it
                return

    def flush(self) -> bool:
        """Write what waits, in order; True once nothing does (OSError: the worker is gone)."""
        while self._queue:
            head = self._queue[0]
            if isinstance(head, _Fds):
                if not self._write_fds(head.fds):
                    return False
                self._drop(0)
                continue
            sent = self._write(head)
            self._queued_bytes -= sent
            if sent < len(head):
                self._queue[0] = head[sent:]
                return False
            self._queue.popleft()
        self._unwatch()
        return True

    def close(self) -> None:
        """The worker is gone: drop what waits, stop watching its pipe."""
        self._unwatch()
        while self._queue:
            self._drop(0)
        self._queued_bytes = 0

    def _drop(self, index: int) -> None:
        item = self._queue[index]
        del self._queue[index]
        self._queued_bytes -= len(item)
        if isinstance(item, _Fds):
            item.close()

    def _enqueue(self, data: _Item) -> None:
        self._queue.append(data)
        self._queued_bytes += len(data)
        if not self._watching:
            self._watching = True
            self.loop.add_writer(self.conn, self._writable)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.loop.remove_writer(self.conn)

    def _writable(self, _conn: Any) -> None:
        try:
            self.flush()
        except OSError:
            self.close()

    def _write(self, data: memoryview) -> int:
        sock = self._socket()
        try:
            return sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        finally:
            sock.detach()

    def _write_fds(self, fds: Sequence[int]) -> bool:
        sock = self._socket()
        try:
            return send_fds(sock, list(fds), socket.MSG_DONTWAIT) == 1
        finally:
            sock.detach()

    def _socket(self) -> socket.socket:
        if self.conn.closed:
            raise OSError("the worker's pipe is closed")
        return socket.socket(fileno=self.conn.fileno())


def frame(message: Any) -> bytes:
    """``message`` as ``Connection.send`` would write it (pickle errors raise here, before anything is sent)."""
    payload = bytes(ForkingPickler.dumps(message))
    if len(payload) > 0x7FFFFFFF:
        raise ValueError(f"a message of {len(payload)} bytes is too large to send to a worker")
    return _LENGTH.pack(len(payload)) + payload
