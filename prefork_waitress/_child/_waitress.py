"""Everything that touches waitress internals (private attributes, the server loop) lives here and in
``_waitress_server`` (the server, its loop and its drain), and only there: here are the request
hooks, the tasks, the channels and the inline dispatcher the server serves with.

(``_waitress_options.py`` reads waitress's documented ``Adjustments`` arguments, nothing private.)

Waitress has no public graceful-stop API, so a worker runs the waitress
loop itself and drains it: stop accepting, let in-flight requests finish
with ``Connection: close``, close idle keep-alive connections, stop the task
thread. ``tests/test_waitress_internals.py`` pins every attribute this
relies on, so a waitress release that changes them fails loudly.

A server can also run each request inline on the I/O thread, between two
turns of the loop (:class:`InlineDispatcher`): no task thread, so no
hand-off through a queue, no GIL switch and no trigger write per request.
It costs 29 % less CPU per request, but a worker that no longer sleeps twice
per request gets a smaller share of a CPU it shares with other busy
processes, so it is an option, off by default (``inline_tasks``;
bench/RESULTS.md has the figures).
"""

from __future__ import annotations

import collections
import logging
import select
import threading
import time
from typing import Any, NamedTuple, Optional

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import InternalServerError, build_http_date

# A first body chunk up to this size is sent in one piece with the header
# (copying more would cost more than the second send it saves).
COALESCE_MAX = 64 * 1024

log = logging.getLogger("prefork_waitress.worker")


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


_date: "tuple[int, str]" = (0, "")


def _http_date(when: float) -> str:
    """The Date header waitress would write for ``when``, formatted once per second, not per response."""
    global _date
    second = int(when)
    cached = _date  # one tuple: the I/O and task threads may both read it
    if cached[0] != second:
        cached = _date = (second, build_http_date(second))
    return cached[1]


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
        # The Date waitress adds when the app sent none, from the per-second cache:
        # waitress keeps a Date the app set and builds none (gmtime + format: a few µs).
        headers = self.response_headers
        for name, _ in headers:
            if len(name) == 4 and name.lower() == "date":
                break
        else:
            headers.append(("Date", _http_date(self.start_time)))
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


class DrainAwareChannel(HTTPChannel):  # type: ignore[misc]
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


class InlineChannel(DrainAwareChannel):
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


class InlineDispatcher:
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
