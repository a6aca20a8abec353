"""The worker's waitress server: one pre-bound socket, the loop run here, and a graceful drain.

With ``_waitress`` (the tasks, channels and inline dispatcher it serves with),
the only module that touches waitress internals; see that module's docstring.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from typing import Any, Callable, Optional

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

from . import _waitress
from ._waitress import RequestHooks
from .idle_calls import TICK as IDLE_TICK
from .idle_calls import IdleCalls

# A connection with no request in progress is closed once it has been quiet
# this long during a drain: long enough for a keep-alive client under load to
# send its next request (answered with Connection: close), short enough to
# keep a reload quick.
IDLE_GRACE = 0.25
DRAIN_TICK = 0.05

# How often (at most) the loop looks for connections whose output has not moved for
# channel_timeout (a client that stopped reading).
STALL_SWEEP = 1.0
MIN_SWEEP = 0.01

# A retiring worker (no successor on its socket) keeps accepting until its
# port has had no connection for this long: the frontend has moved on.
QUIET_PORT = 1.0


def _has_pending_bytes(sock: socket.socket) -> bool:
    """True if the peer sent something not read yet (or closed: let waitress see it)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        return exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK)
    return True


def _has_pending_connection(sock: socket.socket) -> bool:
    """A connection waits in the listening socket's accept queue."""
    poller = select.poll()  # not select(): the fd may be above FD_SETSIZE
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


def _is_idle(channel: Any) -> bool:
    """No request queued, none half-received, nothing left to send."""
    return not (
        channel.requests
        or channel.request is not None
        or channel.total_outbufs_len
        or channel.will_close
        or channel.close_when_flushed
    )


class DrainableServer:
    """A waitress server on one pre-bound socket that can be drained gracefully."""

    def __init__(
        self,
        app: Callable[..., Any],
        sock: socket.socket,
        hooks: RequestHooks,
        options: "dict[str, Any]",
        inline: bool = False,
    ) -> None:
        """``inline``: run each task on this (the I/O) thread between two turns, no task thread."""
        self._inline = _waitress.InlineDispatcher() if inline else None
        self.server: BaseWSGIServer = create_server(app, sockets=[sock], threads=1, _dispatcher=self._inline, **options)
        self.server.channel_class = _waitress.DrainAwareChannel if self._inline is None else _waitress.InlineChannel
        if self._inline is not None:
            self.server.pull_trigger = self._pull_trigger
        self.server.pw_hooks = hooks
        self.server.pw_closing = False
        self.server.pw_loop_thread = threading.get_ident()
        self._map = self.server._map
        self._stop_requested = False
        self._drain_started: Optional[float] = None
        self._accept_until = 0.0
        self._last_busy = 0.0
        self._next_sweep = 0.0
        self._idle_calls = IdleCalls(self._wake)

    @property
    def in_flight(self) -> int:
        """Connections with a request queued or running (0 or 1 with threads=1)."""
        return sum(1 for ch in list(self.server.active_channels.values()) if ch.requests)

    def request_stop(self, keep_accepting_for: float = 0.0) -> None:
        """Ask the loop to drain and return; safe from any thread and from signal handlers.

        ``keep_accepting_for``: go on accepting (answering with ``Connection:
        close``) until the port has been quiet for QUIET_PORT, at most this
        long; a plain stop later ends that at once.
        """
        now = time.monotonic()
        if not keep_accepting_for:
            self._accept_until = 0.0
        elif not self._stop_requested:
            self._accept_until = now + keep_accepting_for
            self._last_busy = now
        self._stop_requested = True
        self.server.pw_closing = True
        self._wake()

    def call_when_idle(self, fn: Callable[[], Any], wait: float) -> Any:
        """From another thread: run ``fn()`` on the loop thread between two turns with no request
        queued or running, and return its result; RuntimeError if none comes within ``wait`` s."""
        return self._idle_calls.call(fn, wait)

    def _wake(self) -> None:
        # No thunk: a thunk takes the trigger's lock, which a signal
        # handler interrupting the loop thread could already hold.
        try:
            self.server.trigger.pull_trigger()
        except OSError:
            pass

    def _pull_trigger(self) -> None:
        # An inline task needs no wake-up: the loop takes its next turn right after it.
        assert self._inline is not None
        if not self._inline.running:
            self.server.trigger.pull_trigger()

    def serve(self, on_turn: Optional[Callable[[], None]] = None) -> None:
        """Run the waitress loop until a requested drain has finished; ``on_turn()`` after every turn (a heartbeat)."""
        adj = self.server.adj
        calls = self._idle_calls.queue  # a deque's truth is C-level: two checks per turn cost nothing
        while True:
            if on_turn is not None:
                on_turn()
            now = time.monotonic()
            if now >= self._next_sweep:
                self._drop_stalled(now)
            timeout = DRAIN_TICK if self._stop_requested else adj.asyncore_loop_timeout
            timeout = min(timeout, self._next_sweep - now)  # wake up when a stall is due
            if calls:
                timeout = min(timeout, IDLE_TICK)  # a request in flight ends without waking the loop
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=adj.asyncore_use_poll, count=1)
            if self._inline is not None and self._inline.queue:
                self._inline.run_pending()
            if calls and not self.in_flight:
                self._idle_calls.run()
            if not self._stop_requested:
                continue
            if self._drain_started is None:
                if self._still_accepting():
                    continue
                self._stop_accepting()
            if self._drain_step():
                break
        self._shutdown()

    def _drop_stalled(self, now: float) -> None:
        """Close every connection whose pending output has not moved for channel_timeout.

        waitress's own sweep skips a connection with a request running, and the
        task thread waits for a stalled client's buffer to drain without a
        deadline: one client that reads nothing would hold the worker for ever.
        Closing it here (on the loop thread, which owns the sockets) wakes that
        wait, and the task's next write raises ClientDisconnected. The next
        sweep is when the oldest pending output would be due, STALL_SWEEP at most.
        """
        limit = self.server.adj.channel_timeout
        wall = time.time()
        due = wall + STALL_SWEEP
        for channel in list(self.server.active_channels.values()):
            if not (channel.total_outbufs_len and channel.connected):
                continue
            if channel.last_activity + limit <= wall:
                channel.handle_close()
            else:
                due = min(due, channel.last_activity + limit)
        self._next_sweep = now + max(due - wall, MIN_SWEEP)

    def _still_accepting(self) -> bool:
        """While retiring: True until the port is quiet (nothing queued, no connection active) or time is up."""
        now = time.monotonic()
        if now >= self._accept_until:
            return False
        if _has_pending_connection(self.server.socket) or any(
            not _is_idle(channel) or time.time() - channel.last_activity < QUIET_PORT
            for channel in list(self.server.active_channels.values())
        ):
            self._last_busy = now
        return now - self._last_busy < QUIET_PORT

    def _stop_accepting(self) -> None:
        self._drain_started = time.monotonic()
        server = self.server
        server.accepting = False
        server.del_channel()
        # Only this process's copy of the listening fd: the master keeps its
        # own, so connections still in the kernel queue go to a successor.
        server.socket.close()
        server.pw_hooks.stopped_accepting()

    def _drain_step(self) -> bool:
        """Close idle connections; True once none is left."""
        now = time.time()
        for channel in list(self.server.active_channels.values()):
            if not _is_idle(channel) or now - channel.last_activity < IDLE_GRACE:
                continue
            if channel.socket is not None and _has_pending_bytes(channel.socket):
                continue
            channel.handle_close()
        return not self.server.active_channels

    def abandon(self) -> None:
        """In a process forked from this one: close its copies of the sockets and trigger, touch nothing else.

        Closing a copy ends nothing for the process that forked: its connections go on.
        """
        wasyncore.close_all(self._map, ignore_all=True)

    def _shutdown(self) -> None:
        self.server.task_dispatcher.shutdown(timeout=1)
        self.server.trigger.close()
        wasyncore.close_all(self._map)
