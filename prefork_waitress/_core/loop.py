"""The master's single-threaded event loop: readable and writable objects, timers, signals.

Everything waits in one :func:`select.poll` call whose timeout is the next
timer deadline, so an idle master sleeps in the kernel.
Signals arrive through :func:`signal.set_wakeup_fd` and their callbacks run
in the loop, never inside the signal handler.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import select
import signal
import socket
import time
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._os.limits import fd_limit_text

log = logging.getLogger("prefork_waitress")

Callback = Callable[[], None]

# What poll() fails with when the fds it watches exceed RLIMIT_NOFILE (EINVAL), or
# the kernel is short of memory or fds: the loop waits and retries instead of dying.
WAIT_FAILURES = (errno.EINVAL, errno.EMFILE, errno.ENFILE, errno.ENOMEM)
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT
_GONE = select.POLLHUP | select.POLLERR  # both sides' callbacks learn it from their recv/send
# The timer heap is rebuilt without its cancelled timers once it holds this many, or twice as many as the
# last rebuild kept: a cancelled timer (a worker's boot or stop deadline) would else stay until its deadline.
COMPACT_AT = 64


def _cancelled_callback() -> None:
    """What a cancelled timer holds instead of its callback, so the objects that one referred to can go."""


def _ignore_signal(signum: int, frame: Optional[FrameType]) -> None:
    """Python-level handler; the real work is done by the wakeup fd."""


class Timer:
    """A callback due at a monotonic deadline; cancel() makes it a no-op."""

    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback: Callback) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _cancelled_callback  # drop the closure (and the worker it holds) now, not at the deadline


class EventLoop:
    """Dispatches readable and writable objects, due timers and received signals."""

    def __init__(self) -> None:
        self._readers: Dict[Any, Callable[[Any], None]] = {}
        self._writers: Dict[Any, Callable[[Any], None]] = {}
        self._timers: List[Tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._compact_at = COMPACT_AT
        self._signal_callbacks: Dict[int, Callback] = {}
        self._previous_handlers: Dict[int, Any] = {}
        self._wakeup_r: Optional[socket.socket] = None
        self._wakeup_w: Optional[socket.socket] = None
        self._previous_wakeup_fd = -1
        self._soon: List[Callback] = []
        self._failing_since: Optional[float] = None  # when wait() began to fail (None: it works)
        self._retry_in = RETRY_FIRST

    # readable objects -------------------------------------------------
    def add_reader(self, obj: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(obj)`` whenever ``obj`` (fd int or has fileno()) is readable."""
        self._readers[obj] = callback

    def remove_reader(self, obj: Any) -> None:
        self._readers.pop(obj, None)

    def readers(self) -> List[Any]:
        return list(self._readers)

    # writable objects -------------------------------------------------
    def add_writer(self, obj: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(obj)`` whenever ``obj`` is writable (a connect done, room in its buffer).

        Level-triggered: remove it once nothing waits to be written, or it runs every turn.
        """
        self._writers[obj] = callback

    def remove_writer(self, obj: Any) -> None:
        self._writers.pop(obj, None)

    def writers(self) -> List[Any]:
        return list(self._writers)

    # timers -------------------------------------------------------------
    def call_at(self, deadline: float, callback: Callback) -> Timer:
        """Run ``callback`` once ``time.monotonic()`` reaches ``deadline``."""
        timer = Timer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._counter), timer))
        if len(self._timers) >= self._compact_at:
            self._compact()
        return timer

    def _compact(self) -> None:
        """Drop the cancelled timers from the heap (amortised: the next rebuild waits for twice as many)."""
        self._timers = [entry for entry in self._timers if not entry[2].cancelled]
        heapq.heapify(self._timers)
        self._compact_at = max(COMPACT_AT, 2 * len(self._timers))

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    def call_soon(self, callback: Callback) -> None:
        """Run ``callback`` on the next turn of the loop (used to defer events)."""
        self._soon.append(callback)

    def _next_timeout(self) -> Optional[float]:
        if self._soon:
            return 0.0
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                self.guarded(timer.callback)

    # signals ------------------------------------------------------------
    def add_signal(self, signum: int, callback: Callback) -> None:
        """Run ``callback()`` in the loop when ``signum`` arrives."""
        self._signal_callbacks[signum] = callback
        if self._wakeup_w is not None:
            self._install_signal(signum)

    def _install_signal(self, signum: int) -> None:
        if signum not in self._previous_handlers:
            self._previous_handlers[signum] = signal.getsignal(signum)
        signal.signal(signum, _ignore_signal)

    def open_signals(self) -> None:
        """Start receiving signals through the wakeup fd (main thread only)."""
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for signum in self._signal_callbacks:
            self._install_signal(signum)
        self.add_reader(self._wakeup_r, self._read_signals)

    def close_signals(self) -> None:
        """Give back the handlers and wakeup fd that were there before."""
        if self._wakeup_r is None or self._wakeup_w is None:
            return
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers.clear()
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self.remove_reader(self._wakeup_r)
        self._wakeup_r.close()
        self._wakeup_w.close()
        self._wakeup_r = self._wakeup_w = None

    def signal_sockets(self) -> List[socket.socket]:
        return [s for s in (self._wakeup_r, self._wakeup_w) if s is not None]

    def _read_signals(self, sock: Any) -> None:
        try:
            data = sock.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            handler = self._signal_callbacks.get(signum)
            if handler is not None:
                self.guarded(handler)

    # running ------------------------------------------------------------
    def run_once(self) -> None:
        """Wait for the next event(s) and dispatch them."""
        timeout = self._next_timeout()
        watched = self._watched()
        try:
            readable, writable = self._poll(watched, timeout) if watched else ([], [])
        except OSError as exc:
            if exc.errno not in WAIT_FAILURES:
                raise
            readable, writable = self._wait_failed(exc, timeout), []
        else:
            if self._failing_since is not None:
                log.info("the loop waits again (after %.1f s)", time.monotonic() - self._failing_since)
                self._failing_since = None
                self._retry_in = RETRY_FIRST
        if not watched and timeout is not None:
            time.sleep(timeout)
        # Signals first: a stop request must win over a respawn of the same turn.
        if self._wakeup_r is not None and self._wakeup_r in readable:
            self._read_signals(self._wakeup_r)
        for ready, callbacks in ((readable, self._readers), (writable, self._writers)):
            for obj in ready:
                callback = callbacks.get(obj)  # looked up now: an earlier callback may have removed it
                if callback is not None and obj is not self._wakeup_r:
                    self.guarded(callback, obj)
        soon, self._soon = self._soon, []
        for deferred in soon:
            self.guarded(deferred)
        self._run_due_timers()

    def _watched(self) -> Dict[int, Tuple[List[Any], List[Any]]]:
        """fd -> (its readers, its writers); an object already closed is dropped with a warning, so it
        can neither stop the poll (fd -1) nor be reported ready every turn."""
        watched: Dict[int, Tuple[List[Any], List[Any]]] = {}
        for index, objects in enumerate((self._readers, self._writers)):
            for obj in list(objects):
                fd = _fileno(obj)
                if fd < 0:
                    self._forget(obj, "closed")
                    continue
                watched.setdefault(fd, ([], []))[index].append(obj)
        return watched

    def _poll(
        self, watched: Dict[int, Tuple[List[Any], List[Any]]], timeout: Optional[float]
    ) -> Tuple[List[Any], List[Any]]:
        poller = select.poll()
        for fd, (readers, writers) in watched.items():
            poller.register(fd, (_READ if readers else 0) | (_WRITE if writers else 0))
        # Rounded up: a timer due in 0.4 ms must not make a 0 ms poll spin until it is due.
        events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        readable: List[Any] = []
        writable: List[Any] = []
        for fd, mask in events:
            readers, writers = watched[fd]
            if mask & select.POLLNVAL:  # closed under us without being removed
                for obj in readers + writers:
                    self._forget(obj, "not open")
                continue
            if mask & (_READ | _GONE):
                readable.extend(readers)
            if mask & (_WRITE | _GONE):
                writable.extend(writers)
        return readable, writable

    def _forget(self, obj: Any, why: str) -> None:
        if self._readers.pop(obj, None) is not None or self._writers.pop(obj, None) is not None:
            self._writers.pop(obj, None)
            log.warning("the loop stops watching %r: its descriptor is %s (closed without being removed)", obj, why)

    def _wait_failed(self, exc: OSError, timeout: Optional[float]) -> List[Any]:
        """poll() refused (an fd limit lowered below the fds watched, memory): log once, back off, retry.

        Timers still run meanwhile and signals are read straight from their
        socket; workers keep serving, and their exits are seen once it works again.
        """
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.error(
                "the loop cannot wait on its %d fds (%s; fd limit %s): retrying with backoff, "
                "the workers keep serving; restore the limit (`prlimit --nofile`) if it was lowered",
                len(self._readers) + len(self._writers),
                exc.strerror or exc,
                fd_limit_text(),
            )
        delay = self._retry_in if timeout is None else min(self._retry_in, timeout)
        self._retry_in = min(self._retry_in * 2, RETRY_MAX)
        time.sleep(delay)
        return [self._wakeup_r] if self._wakeup_r is not None else []

    @staticmethod
    def guarded(callback: Callable[..., None], *args: Any) -> None:
        """Run a callback; an exception is logged, never fatal to the master."""
        try:
            callback(*args)
        except Exception:
            log.exception("error in master callback %r", callback)


def _fileno(obj: Any) -> int:
    """The fd of ``obj`` (an int or anything with fileno()), -1 once it is closed."""
    if isinstance(obj, int):
        return obj
    try:
        return int(obj.fileno())
    except (OSError, ValueError):  # a closed Connection raises, a closed socket says -1
        return -1
