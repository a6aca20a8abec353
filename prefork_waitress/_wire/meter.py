"""The shared page a worker counts its requests in, read by the master with no message.

Each worker process gets a :class:`RequestMeter`: one page of anonymous
shared memory (``mmap`` with MAP_SHARED, created by the master before the
fork, no file descriptor; for a worker forked by another worker, a
``memfd`` the master hands over, see :meth:`RequestMeter.in_memfd`).
Each field has one writer thread in the worker:

- offset 0: ``time.monotonic()`` at the start of the running request, 0.0
  when idle (request_timeout's clock; "in flight" is this being non-zero);
- offsets 8 and 16: ``time.monotonic()`` of the last beat of the I/O loop
  and of the command thread (heartbeat_timeout; 0.0 before the first);
- offsets 24 to 63: free;
- offset 64: the sum of the durations of the finished requests (seconds);
- offset 72: one unsigned 64-bit count per duration bucket of
  :data:`BUCKETS` (plus +Inf), not cumulative;
- offset 256: the running request's ``METHOD PATH`` (one length byte, then
  at most :data:`TEXT_MAX` bytes, truncated), written before its start time
  (``ctl top`` shows it).

A request costs two clock reads, one bisect, a short encode and six stores
through the mapping and typed memoryviews: no syscall, no lock, no pipe message. The master reads the page when
it is asked (metrics, status); the number of requests is the sum of the
bucket counts, so a histogram read in the middle of a write is still
consistent with its count.
"""

from __future__ import annotations

import bisect
import dataclasses
import mmap
import os
import struct
import time
from typing import Callable, Optional, Tuple

__all__ = ["BUCKETS", "CurrentRequest", "RequestCounts", "RequestMeter"]

# Upper bounds (seconds) of the request duration histogram; one more bucket is +Inf.
BUCKETS: Tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_START = struct.Struct("d")
_BEATS, _BEATS_AT = struct.Struct("dd"), 8
_IO_BEAT_INDEX, _COMMANDS_BEAT_INDEX = 1, 2
_SUM, _SUM_AT = struct.Struct("d"), 64
_SUM_INDEX = _SUM_AT // 8
_COUNTS, _COUNTS_AT = struct.Struct(f"{len(BUCKETS) + 1}Q"), 72
_TEXT_AT = 256
TEXT_MAX = 127  # bytes of "METHOD PATH" kept in the page (a method, a space and ~100 bytes of path)


@dataclasses.dataclass(frozen=True)
class RequestCounts:
    """What some worker processes have served: per-bucket counts (last is +Inf), duration sum, in flight."""

    buckets: Tuple[int, ...] = (0,) * (len(BUCKETS) + 1)
    duration_sum: float = 0.0
    in_flight: int = 0

    @property
    def requests(self) -> int:
        return sum(self.buckets)

    def __add__(self, other: "RequestCounts") -> "RequestCounts":
        return RequestCounts(
            tuple(a + b for a, b in zip(self.buckets, other.buckets)),
            self.duration_sum + other.duration_sum,
            self.in_flight + other.in_flight,
        )

    def finished(self) -> "RequestCounts":
        """The same counts once the process has exited (nothing in flight any more)."""
        return dataclasses.replace(self, in_flight=0)


@dataclasses.dataclass(frozen=True)
class CurrentRequest:
    """The request a worker is running: its start (monotonic seconds), method and (truncated) path."""

    started: float
    method: str
    path: str


class RequestMeter:
    """One worker's request clock and duration histogram, in memory shared with the master."""

    def __init__(self, fd: int = -1) -> None:
        """A new anonymous page (shared across fork), or the page of memory file ``fd``."""
        self.fd = -1  # the memfd to hand over, while the master holds one
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        # Typed views of the page: an item store is cheaper than a pack_into call.
        self._doubles = memoryview(self._map).cast("d")  # [0] start, [_SUM_AT // 8] duration sum
        self._counts = memoryview(self._map)[_COUNTS_AT:].cast("Q")

    @classmethod
    def in_memfd(cls) -> "RequestMeter":
        """A page in a memory file, for a worker the master does not fork itself: the worker maps ``fd``."""
        fd = os.memfd_create("prefork-waitress-meter", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            meter = cls(fd)
        except BaseException:
            os.close(fd)
            raise
        meter.fd = fd
        return meter

    def close_fd(self) -> None:
        """The worker has mapped the page: the memory file is not needed any more."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # worker side (the task thread) ----------------------------------------
    def started(self, method: str = "", path: str = "", _monotonic: Callable[[], float] = time.monotonic) -> None:
        """A request begins: its method and path (as waitress decoded them, latin-1), then its start."""
        text = f"{method} {path[:TEXT_MAX]}".encode("latin-1", "replace")[:TEXT_MAX]
        page = self._map
        page[_TEXT_AT] = len(text)
        page[_TEXT_AT + 1 : _TEXT_AT + 1 + len(text)] = text
        self._doubles[0] = _monotonic()

    def finished(
        self, _monotonic: Callable[[], float] = time.monotonic, _bucket: Callable[..., int] = bisect.bisect_left
    ) -> float:
        """The request is done: count it in its duration bucket; returns its duration."""
        doubles = self._doubles
        elapsed = _monotonic() - doubles[0]
        doubles[0] = 0.0
        doubles[_SUM_INDEX] += elapsed
        self._counts[_bucket(BUCKETS, elapsed)] += 1
        return elapsed

    def beat_io(self, _monotonic: Callable[[], float] = time.monotonic) -> None:
        """Worker side, I/O loop thread: alive now."""
        self._doubles[_IO_BEAT_INDEX] = _monotonic()

    def beat_commands(self, _monotonic: Callable[[], float] = time.monotonic) -> None:
        """Worker side, command thread: alive now."""
        self._doubles[_COMMANDS_BEAT_INDEX] = _monotonic()

    # master side -------------------------------------------------------------
    def read(self) -> float:
        """The start of the running request (monotonic seconds), or 0.0."""
        value: float = _START.unpack_from(self._map, 0)[0]
        return value

    def current(self) -> Optional[CurrentRequest]:
        """The running request, or None when idle (a request that ends meanwhile reads as None)."""
        page = self._map
        for _ in range(3):
            started = self.read()
            if not started:
                return None
            length = min(page[_TEXT_AT], TEXT_MAX)
            text = page[_TEXT_AT + 1 : _TEXT_AT + 1 + length].decode("latin-1")
            if self.read() == started:  # the text is this request's: it was written before its start
                method, _, path = text.partition(" ")
                return CurrentRequest(started, method, path)
        return None

    def beats(self) -> Tuple[float, float]:
        """The last beat of the I/O loop and of the command thread (0.0: none yet)."""
        io, commands = _BEATS.unpack_from(self._map, _BEATS_AT)
        return io, commands

    def counts(self) -> RequestCounts:
        """A snapshot of what this worker has served so far."""
        in_flight = 1 if self.read() else 0
        duration_sum: float = _SUM.unpack_from(self._map, _SUM_AT)[0]
        return RequestCounts(_COUNTS.unpack_from(self._map, _COUNTS_AT), duration_sum, in_flight)

    def close(self) -> None:
        self.close_fd()
        self._doubles.release()
        self._counts.release()
        self._map.close()
