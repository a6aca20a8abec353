"""Non-blocking connections served from the master loop: accept, buffers, deadlines and close in one place.

The control socket and the metrics/health HTTP server are both a listening
socket whose clients must never block or blind the master: accepts are bounded
per turn and back off on EMFILE, each connection has a head deadline, a full
server evicts a connection the subclass names, replies wait for writability
(``add_write_handler``), and a connection is closed and forgotten in one place.
A server subclasses :class:`ConnectionServer` and says what a request is.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, List, Optional

from .._core.handle import MasterHandle
from .._os.platform import receive_some

log = logging.getLogger("prefork_waitress")

ACCEPT_BACKOFF_START, ACCEPT_BACKOFF_CAP = 0.05, 1.0
ACCEPT_LOG_INTERVAL = 1.0


class Connection:
    """One accepted connection: what it sent, what waits to go to it, and its timers."""

    def __init__(self, server: ConnectionServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.headed = False  # it sent a complete head (request line, HTTP head): its head deadline is over
        self.paused = False  # not read for now
        self.close_when_sent = False
        self.closed = False
        self._timers: List[Any] = []
        self._writing = False  # a write handler is registered for what waits in outbuf
        self._send_deadline: Any = None

    @property
    def overflowing(self) -> bool:
        """More unhandled input than the server's buffer cap."""
        return len(self.inbuf) > self.server.max_buffer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        """A timer of this connection, cancelled when it closes."""
        self._timers = [timer for timer in self._timers if not timer.cancelled]
        timer = self.server.master.call_later(delay, callback)
        self._timers.append(timer)
        return timer

    def pause(self) -> None:
        """Stop reading it (its input waits in the kernel) until :meth:`resume`."""
        if not self.paused and not self.closed:
            self.paused = True
            self.server.master.remove_io_handler(self.sock)

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.server.master.add_io_handler(self.sock, self._readable)

    def send(self, data: bytes) -> None:
        """Send what the socket takes now; the rest once it is writable (closed past the send timeout)."""
        if not self.closed:
            self.outbuf += data
            self._flush()

    def finish(self, data: bytes = b"") -> None:
        """Send ``data`` (and whatever waits), then close."""
        self.close_when_sent = True
        self.send(data)

    def close(self, last_words: bytes = b"") -> None:
        """Close at once (saying ``last_words`` if the socket takes them now) and forget it."""
        if self.closed:
            return
        self.closed = True
        if last_words:
            _say(self.sock, last_words)
        for timer in self._timers + [self._send_deadline]:
            if timer is not None:
                timer.cancel()
        self.server.master.remove_io_handler(self.sock)
        self.server.master.remove_write_handler(self.sock)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.sock.close()
        if self in self.server.connections:
            self.server.connections.remove(self)
        self.server.closed(self)

    def _readable(self, _sock: Any = None) -> None:
        data = receive_some(self.sock, self.server.read_size)
        if data is None:
            return
        if not data:
            self.close()
            return
        self.inbuf += data
        self.server.received(self)

    def _flush(self, _sock: Any = None) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            self.outbuf = self.outbuf[sent:]
        if self.outbuf:
            if not self._writing:
                self._writing = True
                self.server.master.add_write_handler(self.sock, self._flush)
                if self.server.send_timeout is not None:
                    self._send_deadline = self.server.master.call_later(self.server.send_timeout, self._unread)
            return
        if self._writing:
            self._writing = False
            self.server.master.remove_write_handler(self.sock)
            if self._send_deadline is not None:
                self._send_deadline.cancel()
                self._send_deadline = None
        if self.close_when_sent:
            self.close()

    def _unread(self) -> None:
        log.warning(
            "%s: a client did not read its reply within %g s; closing it", self.server.label, self.server.send_timeout
        )
        self.close()


class ConnectionServer:
    """A listening socket served from the master loop; subclasses say what to do with what arrives."""

    label = "server"  # names it in the log
    max_connections = 16  # open at once; one more evicts :meth:`victim` or is refused
    accepts_per_turn = 16  # bounded: the loop has other work
    read_size = 65536  # bytes read per turn from one connection
    max_buffer = 65536  # unhandled input a connection may hold (see Connection.overflowing)
    head_timeout = 5.0  # seconds a new connection has to send its first head
    send_timeout: Optional[float] = None  # seconds a reply may wait for its reader, else it is closed
    refusal = b""  # said to a connection refused because every one open is busy
    eviction = b""  # said to the connection evicted for a new one

    def __init__(self, master: MasterHandle) -> None:
        self.master = master
        self.sock: Optional[socket.socket] = None
        self.connections: List[Connection] = []  # oldest first
        self._backoff = 0.0
        self._logged_at = float("-inf")
        self._unlogged = 0

    # what subclasses say ----------------------------------------------------
    def connection(self, sock: socket.socket) -> Connection:
        """A new connection object (a subclass may keep more state in its own type)."""
        return Connection(self, sock)

    def opened(self, conn: Connection) -> None:
        """A connection was accepted (e.g. arm its idle timer)."""

    def received(self, conn: Connection) -> None:
        """New input is in ``conn.inbuf``."""

    def head_timed_out(self, conn: Connection) -> None:
        """No complete head within :attr:`head_timeout`."""
        conn.close()

    def victim(self) -> Optional[Connection]:
        """The connection to close for a new one when full; None refuses the new one."""
        return None

    def closed(self, conn: Connection) -> None:
        """``conn`` was closed and forgotten."""

    # the listener -----------------------------------------------------------
    def listen_on(self, sock: socket.socket) -> None:
        """Take ``sock`` (bound and listening); nothing is accepted before :meth:`start_accepting`."""
        sock.setblocking(False)
        self.sock = sock
        self.master.own(sock)

    def start_accepting(self) -> None:
        if self.sock is not None:
            self.master.add_io_handler(self.sock, self._accept)

    def let_go(self) -> None:
        """Stop accepting and close this master's copy of the listening socket (open connections stay)."""
        if self.sock is not None:
            self.master.remove_io_handler(self.sock)
            self.sock.close()
            self.sock = None

    def close_connections(self) -> None:
        for conn in list(self.connections):
            conn.close()

    def _accept(self, sock: Any) -> None:
        for _ in range(self.accepts_per_turn):
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._backoff = 0.0
            client.setblocking(False)
            if len(self.connections) >= self.max_connections:
                victim = self.victim()
                if victim is None:
                    _say(client, self.refusal)
                    client.close()
                    continue
                victim.close(self.eviction)
            conn = self.connection(client)
            self.connections.append(conn)
            self.master.add_io_handler(client, conn._readable)
            self._arm_head_deadline(conn)
            self.opened(conn)

    def _arm_head_deadline(self, conn: Connection) -> None:
        def over() -> None:
            if not conn.headed and not conn.closed:
                self.head_timed_out(conn)

        conn.call_later(self.head_timeout, over)

    def _accept_failed(self, exc: OSError) -> None:
        """EMFILE and the like: stop watching the socket for a growing while, log at most once a second."""
        self._backoff = min(ACCEPT_BACKOFF_CAP, max(ACCEPT_BACKOFF_START, self._backoff * 2))
        now = time.monotonic()
        if now - self._logged_at >= ACCEPT_LOG_INTERVAL:
            also = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
            log.warning("%s: accept failed: %s%s; retrying in %.2f s", self.label, exc, also, self._backoff)
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
        if self.sock is not None:
            self.master.remove_io_handler(self.sock)
            self.master.call_later(self._backoff, self.start_accepting)


def _say(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` if the socket takes it now; a client that cannot take it misses it."""
    if data:
        try:
            sock.send(data)
        except OSError:
            pass
