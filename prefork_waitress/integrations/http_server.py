"""A tiny HTTP/1.x server in the master's loop, for its own endpoints (/metrics, /healthz, /readyz).

Non-blocking sockets registered as readers of the master loop; one request per
connection (``Connection: close``); bounded in connections, request size and
time. It must always answer a new probe, so idle or slow clients cannot hold
it: a connection has HEAD_TIMEOUT to send its request head, and when
MAX_CONNECTIONS are open a new one evicts the oldest that has not sent a
complete head yet. It is never in the app's request path.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._core.handle import MasterHandle
from .._core.slots import bind_socket
from .._os.platform import receive_some

__all__ = ["HttpServer", "Reply", "Route", "response"]

log = logging.getLogger("prefork_waitress")

MAX_CONNECTIONS = 16  # open at once; a new one evicts the oldest still sending its head
BACKLOG = 128  # the kernel queues a burst while the loop is busy
MAX_REQUEST_BYTES = 8192
HEAD_TIMEOUT = 2.0  # seconds a connection has to send its whole request head
IDLE_TIMEOUT = 5.0  # seconds a connection may live in all (taking its reply included)
SEND_RETRY = 0.01

Reply = Tuple[str, bytes, str]  # status line ("200 OK"), body, content type
Route = Callable[[], Reply]
TEXT = "text/plain; charset=utf-8"


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.deadline: Any = None  # closes it IDLE_TIMEOUT after it was accepted
        self.head_deadline: Any = None  # closes it if its head is not complete by then
        self.retry: Any = None

    @property
    def reading(self) -> bool:
        """Still sending its request head (evictable)."""
        return not self.outbuf


def response(status: str, body: bytes, content_type: str = TEXT, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-store\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def answer(request: bytes, routes: Dict[bytes, Route]) -> bytes:
    """The whole HTTP response to one request head (request line and headers)."""
    line = request.split(b"\n", 1)[0].strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return response("400 Bad Request", b"malformed request line\n")
    method, target = parts[0], parts[1]
    route = routes.get(target.split(b"?", 1)[0])
    if route is None:
        served = ", ".join(path.decode() for path in routes)
        return response("404 Not Found", f"only {served} are served here\n".encode())
    if method not in (b"GET", b"HEAD"):
        return response("405 Method Not Allowed", b"only GET\n", extra="Allow: GET, HEAD\r\n")
    status, body, content_type = route()
    reply = response(status, body, content_type)
    return reply[: len(reply) - len(body)] if method == b"HEAD" else reply


class HttpServer:
    """Serves ``routes`` (path -> function returning a Reply) on host:port from the master loop."""

    def __init__(self, master: MasterHandle, host: str, port: int, routes: Dict[str, Route]) -> None:
        self.master = master
        self.host = host
        self.port = port
        self.routes = {path.encode("ascii"): route for path, route in routes.items()}
        self.sock: Optional[socket.socket] = None
        self.connections: List[_Connection] = []  # oldest first

    def route(self, path: str, handler: Route) -> None:
        """Serve ``GET path`` with ``handler``."""
        self.routes[path.encode("ascii")] = handler

    def open(self, inherited: Optional[socket.socket] = None, accepting: bool = True) -> int:
        """Bind and listen (a port in use raises StartError), or take ``inherited`` (an upgrade's, with
        its queue); answer now, or from :meth:`accept` on when ``accepting`` is false. Returns the port."""
        sock = inherited if inherited is not None else bind_socket(self.host, self.port, backlog=BACKLOG)
        sock.setblocking(False)
        self.sock = sock
        self.master.own(sock)
        if accepting:
            self.accept()
        return int(sock.getsockname()[1])

    def accept(self) -> None:
        """Start answering the connections that arrive (once, after an ``open(accepting=False)``)."""
        if self.sock is not None:
            self.master.add_io_handler(self.sock, self._accept)

    def let_go(self) -> None:
        """Stop answering new connections and close this master's copy of the socket (an upgrade's new
        master has it); the connections already open are answered."""
        if self.sock is not None:
            self.master.remove_io_handler(self.sock)
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        for conn in list(self.connections):
            self._close(conn)
        self.let_go()

    def _accept(self, sock: Any) -> None:
        for _ in range(BACKLOG):  # bounded: the loop has other work
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("http %s:%d: accept failed: %s", self.host, self.port, exc)
                return
            if len(self.connections) >= MAX_CONNECTIONS and not self._evict():
                client.close()  # every one is taking its reply: it ends within IDLE_TIMEOUT
                continue
            self._open(client)

    def _evict(self) -> bool:
        """Close the oldest connection that has not sent a complete head; False if none."""
        for conn in self.connections:
            if conn.reading:
                self._close(conn)
                return True
        return False

    def _open(self, client: socket.socket) -> None:
        client.setblocking(False)
        conn = _Connection(client)
        conn.deadline = self.master.call_later(IDLE_TIMEOUT, lambda: self._close(conn))
        conn.head_deadline = self.master.call_later(HEAD_TIMEOUT, lambda: self._head_timed_out(conn))
        self.connections.append(conn)
        self.master.add_io_handler(client, lambda _sock: self._readable(conn))

    def _head_timed_out(self, conn: _Connection) -> None:
        if conn.reading:
            self._close(conn)

    def _readable(self, conn: _Connection) -> None:
        data = receive_some(conn.sock, MAX_REQUEST_BYTES)
        if data is None:
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        head, found, _ = conn.inbuf.replace(b"\r\n", b"\n").partition(b"\n\n")
        if not found and len(conn.inbuf) <= MAX_REQUEST_BYTES:
            return
        if found:
            reply = answer(head, self.routes)
        else:
            reply = response("431 Request Header Fields Too Large", b"request too large\n")
        self.master.remove_io_handler(conn.sock)
        conn.outbuf = reply
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Send what the socket takes; the rest on a short timer, until the idle deadline closes it."""
        conn.retry = None
        try:
            while conn.outbuf:
                conn.outbuf = conn.outbuf[conn.sock.send(conn.outbuf) :]
        except (BlockingIOError, InterruptedError):
            conn.retry = self.master.call_later(SEND_RETRY, lambda: self._flush(conn))
            return
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.remove(conn)
        for timer in (conn.deadline, conn.head_deadline, conn.retry):
            if timer is not None:
                timer.cancel()
        self.master.remove_io_handler(conn.sock)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.sock.close()
