"""Everything that touches waitress internals (private attributes, the server loop) lives here, and only here.

(``options.py`` reads waitress's documented ``Adjustments`` arguments, nothing private.)

Waitress has no public graceful-stop API, so a worker runs the waitress
loop itself and drains it: stop accepting, let in-flight requests finish
with ``Connection: close``, close idle keep-alive connections, stop the task
thread. ``tests/test_waitress_internals.py`` pins every attribute this
relies on, so a waitress release that changes them fails loudly.

A server can also run each request inline on the I/O thread, between two
turns of the loop (:class:`_InlineDispatcher`): no task thread, so no
hand-off through a queue, no GIL switch and no trigger write per request.
It costs 29 % less CPU per request, but a worker that no longer sleeps twice
per request gets a smaller share of a CPU it shares with other busy
processes, so it is off by default (bench/PROFILE.md has the figures).
"""

from __future__ import annotations

import collections
import errno
import logging
import select
import socket
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import InternalServerError

from .idle_calls import TICK as IDLE_TICK
from .idle_calls import IdleCalls

# A connection with no request in progress is closed once it has been quiet
# this long during a drain: long enough for a keep-alive client under load to
# send its next request (answered with Connection: close), short enough to
# keep a reload quick.
IDLE_GRACE = 0.25
DRAIN_TICK = 0.05
# Run tasks on the I/O thread instead of waitress's task thread (the default
# of DrainableServer(inline=...); bench/throughput.py's "-inline" contenders).
INLINE_TASKS = False
# A first body chunk up to this size is sent in one piece with the header
# (copying more would cost more than the second send it saves).
COALESCE_MAX = 64 * 1024

log = logging.getLogger("prefork_waitress.worker")

# How often (at most) the loop looks for connections whose output has not moved for
# channel_timeout (a client that stopped reading).
STALL_SWEEP = 1.0
MIN_SWEEP = 0.01

# A retiring worker (no successor on its socket) keeps accepting until its
# port has had no connection for this long: the frontend has moved on.
QUIET_PORT = 1.0


class RequestFacts(NamedTuple):
    """What an access log line says about one request, as the client sent it."""

    remote: str
    user: Optional[str]
    method: str
    uri: str
    protocol: str
    status: str  # "200", or "500" when the app raised before its response began
    size: int  # body bytes sent
    referer: Optional[str]
    agent: Optional[str]
    request_id: Optional[str] = None  # the X-Request-ID header (client or frontend)


class RequestHooks:
    """What a worker wants to know about each request (runs on the task thread)."""

    logs_requests = False  # True: request_logged() gets the facts of every request

    def request_started(self, method: str, uri: str) -> bool:
        """Called before the app runs (the request line's method and target); return True to close
        the connection after it."""
        return False

    def request_finished(self) -> None:
        """Called after the response was handed to waitress."""

    def stopped_accepting(self) -> None:
        """Called once a drain has closed this process's listening socket."""

    def request_logged(self, facts: RequestFacts, duration: Optional[float]) -> None:
        """Called when ``logs_requests`` is True: after request_finished() (``duration`` None: the
        meter's), or for a request waitress refused itself (400, 431, ...; ``duration`` 0)."""


def _facts(task: Any, failed: bool) -> RequestFacts:
    request, environ = task.request, getattr(task, "environ", None) or {}
    headers = request.headers
    status = "500" if failed and not task.wrote_header else task.status.split(" ", 1)[0]
    return RequestFacts(
        environ.get("REMOTE_ADDR") or task.channel.addr[0],
        environ.get("REMOTE_USER"),
        getattr(request, "command", None) or "",
        getattr(request, "request_uri", None) or "",
        f"HTTP/{request.version}",
        status,
        task.content_bytes_written,
        headers.get("REFERER"),
        headers.get("USER_AGENT"),
        headers.get("X_REQUEST_ID"),
    )


class _DrainAwareTask(WSGITask):  # type: ignore[misc]
    """A WSGI task that closes its connection when the server is draining."""

    def service(self) -> None:
        server = self.channel.server
        hooks = server.pw_hooks
        request = self.request
        if hooks.request_started(request.command, request.request_uri):
            server.pw_closing = True
        failed = True
        try:
            super().service()
            failed = False
        finally:
            hooks.request_finished()
            if hooks.logs_requests:
                hooks.request_logged(_facts(self, failed), None)

    def build_response_header(self) -> Any:
        if not self.channel.server.pw_closing:
            return super().build_response_header()
        self.set_close_on_finish()
        # waitress adds Keep-Alive for an HTTP/1.0 keep-alive request whatever
        # close_on_finish says: the connection closes, so only close is true.
        header: bytes = super().build_response_header()
        return header.replace(b"\r\nConnection: Keep-Alive\r\n", b"\r\n", 1)

    def write(self, data: bytes) -> None:
        # The header and the first chunk of the body leave in one send, not two.
        if self.wrote_header or not data:
            super().write(data)
            return
        channel = self.channel
        channel.pw_hold_header = True
        try:
            super().write(data)
        finally:
            channel.pw_release_header()


class _LoggedErrorTask(ErrorTask):  # type: ignore[misc]
    """The response to a request waitress refused (malformed, too large): in the access log too."""

    def service(self) -> None:
        super().service()
        hooks = self.channel.server.pw_hooks
        # A 500 is the response waitress makes for an app that raised: that task logged it.
        if hooks.logs_requests and not isinstance(self.request.error, InternalServerError):
            hooks.request_logged(_facts(self, False), 0.0)


class _DrainAwareChannel(HTTPChannel):  # type: ignore[misc]
    """A channel that also keeps the I/O loop from spinning while the task thread sends."""

    task_class = _DrainAwareTask
    error_task_class = _LoggedErrorTask
    pw_task_sending = False
    pw_hold_header = False
    pw_held: Optional[bytes] = None

    def write_soon(self, data: Any) -> Any:
        # Output handed over is activity: the stall sweep (DrainableServer._drop_stalled)
        # must not take a response that was slow to start for one that stopped moving.
        self.last_activity = time.time()
        if self.pw_hold_header:  # the response header: keep it for the first body chunk
            self.pw_hold_header = False
            self.pw_held = data
            return len(data)
        held = self.pw_held
        if held is not None:
            self.pw_held = None
            if type(data) is bytes and len(data) <= COALESCE_MAX:
                data = held + data
            else:
                super().write_soon(held)
        return super().write_soon(data)

    def pw_release_header(self) -> None:
        """Send a header still held (the body was empty, or the write failed)."""
        self.pw_hold_header = False
        held = self.pw_held
        if held is not None:
            self.pw_held = None
            super().write_soon(held)

    def _flush_some(self, do_close: bool = True) -> Any:
        # With send_bytes=1 the task thread sends its own output while holding
        # outbuf_lock; meanwhile the channel looks writable, so the loop would
        # spin on a lock it cannot take, fighting the sender for the GIL.
        if threading.get_ident() == self.server.pw_loop_thread:
            return super()._flush_some(do_close)
        self.pw_task_sending = True
        try:
            return super()._flush_some(do_close)
        finally:
            self.pw_task_sending = False

    def writable(self) -> Any:
        if self.pw_task_sending and not (self.will_close or self.close_when_flushed):
            return False
        return super().writable()


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


class _InlineChannel(_DrainAwareChannel):
    """A channel whose tasks run on the I/O thread: nobody else will flush its output."""

    # No task thread sends, so the loop never spins on a busy outbuf_lock.
    _flush_some = HTTPChannel._flush_some
    writable = HTTPChannel.writable

    def _flush_outbufs_below_high_watermark(self) -> None:
        # waitress's version waits for the I/O thread to drain the buffers,
        # which is this thread: send here instead, waiting for the socket to
        # take more, at most channel_timeout without progress.
        high = self.adj.outbuf_high_watermark
        if self.total_outbufs_len <= high:
            return
        # On this thread closing is safe: a reset or a broken pipe (which
        # waitress's send() turns into 0 bytes sent) closes the channel at once;
        # a socket poll() reports as failed does too, or the loop would spin.
        poller = select.poll()
        poller.register(self.socket.fileno(), select.POLLOUT)
        while self.connected and self.total_outbufs_len > high:
            flushed, failed = self._flush_exception(self._flush_some, do_close=True)
            if not self.connected:  # reset: send() closed it
                return
            if failed or not flushed and not _writable_again(poller, self.adj.channel_timeout):
                self.handle_close()  # the task's next write raises ClientDisconnected
                return


def _writable_again(poller: "select.poll", timeout: float) -> bool:
    """The socket takes more within ``timeout`` seconds (False: it timed out, or failed)."""
    events = poller.poll(timeout * 1000)
    return bool(events) and not any(flags & _POLL_FAILED for _, flags in events)


_POLL_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _InlineDispatcher:
    """waitress's task dispatcher for threads=1, minus the thread: tasks run between loop turns.

    ``add_task`` is called with the channel's ``requests_lock`` held (from
    ``received`` and from ``service`` for a pipelined request), so it only
    queues; :meth:`run_pending` runs the queue on the I/O thread.
    """

    def __init__(self) -> None:
        self.queue: "collections.deque[Any]" = collections.deque()
        self.threads: "set[int]" = set()
        self.running = False

    def set_thread_count(self, count: int) -> None:
        """No threads to start or stop."""

    def add_task(self, task: Any) -> None:
        self.queue.append(task)

    def run_pending(self) -> None:
        queue = self.queue
        self.running = True
        try:
            while queue:
                task = queue.popleft()
                try:
                    task.service()
                except BaseException:  # as waitress's task thread does: log, keep serving
                    log.exception("Exception when servicing %r", task)
        finally:
            self.running = False

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        while cancel_pending and self.queue:
            self.queue.popleft().cancel()
        return True


class DrainableServer:
    """A waitress server on one pre-bound socket that can be drained gracefully."""

    def __init__(
        self,
        app: Callable[..., Any],
        sock: socket.socket,
        hooks: RequestHooks,
        options: "dict[str, Any]",
        inline: Optional[bool] = None,
    ) -> None:
        self._inline = _InlineDispatcher() if (INLINE_TASKS if inline is None else inline) else None
        self.server: BaseWSGIServer = create_server(app, sockets=[sock], threads=1, _dispatcher=self._inline, **options)
        self.server.channel_class = _DrainAwareChannel if self._inline is None else _InlineChannel
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
        while True:
            if on_turn is not None:
                on_turn()
            now = time.monotonic()
            if now >= self._next_sweep:
                self._drop_stalled(now)
            timeout = DRAIN_TICK if self._stop_requested else adj.asyncore_loop_timeout
            timeout = min(timeout, self._next_sweep - now)  # wake up when a stall is due
            if self._idle_calls:
                timeout = min(timeout, IDLE_TICK)  # a request in flight ends without waking the loop
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=adj.asyncore_use_poll, count=1)
            if self._inline is not None and self._inline.queue:
                self._inline.run_pending()
            if self._idle_calls and not self.in_flight:
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
