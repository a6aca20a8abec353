"""A tiny HTTP/1.x server in the master's loop, for its own endpoints (/metrics, /healthz, /readyz).

Non-blocking connections of the master loop (``_connection``, shared with the
control socket); one request per connection (``Connection: close``); bounded
in connections, request size and time. It must always answer a new probe, so idle or slow clients cannot hold
it: a connection has HEAD_TIMEOUT to send its request head, and when
MAX_CONNECTIONS are open a new one evicts the oldest that has not sent a
complete head yet. It is never in the app's request path.
"""

from __future__ import annotations

import socket
from typing import Callable, Dict, Optional, Tuple

from .._core.handle import MasterHandle
from .._core.slots import bind_socket
from ._connection import Connection, ConnectionServer

__all__ = ["HttpServer", "Reply", "Route", "response"]

MAX_CONNECTIONS = 16  # open at once; a new one evicts the oldest still sending its head
BACKLOG = 128  # the kernel queues a burst while the loop is busy
MAX_REQUEST_BYTES = 8192
HEAD_TIMEOUT = 2.0  # seconds a connection has to send its whole request head
IDLE_TIMEOUT = 5.0  # seconds a connection may live in all (taking its reply included)

Reply = Tuple[str, bytes, str]  # status line ("200 OK"), body, content type
Route = Callable[[], Reply]
TEXT = "text/plain; charset=utf-8"


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


class HttpServer(ConnectionServer):
    """Serves ``routes`` (path -> function returning a Reply) on host:port from the master loop."""

    max_connections = MAX_CONNECTIONS
    accepts_per_turn = BACKLOG
    read_size = max_buffer = MAX_REQUEST_BYTES
    head_timeout = HEAD_TIMEOUT

    def __init__(self, master: MasterHandle, host: str, port: int, routes: Dict[str, Route]) -> None:
        super().__init__(master)
        self.host = host
        self.port = port
        self.label = f"http {host}:{port}"
        self.routes = {path.encode("ascii"): route for path, route in routes.items()}

    def route(self, path: str, handler: Route) -> None:
        """Serve ``GET path`` with ``handler``."""
        self.routes[path.encode("ascii")] = handler

    def open(self, inherited: Optional[socket.socket] = None, accepting: bool = True) -> int:
        """Bind and listen (a port in use raises StartError), or take ``inherited`` (an upgrade's, with
        its queue); answer now, or from :meth:`accept` on when ``accepting`` is false. Returns the port."""
        sock = inherited if inherited is not None else bind_socket(self.host, self.port, backlog=BACKLOG)
        self.listen_on(sock)
        if accepting:
            self.accept()
        return int(sock.getsockname()[1])

    def accept(self) -> None:
        """Start answering the connections that arrive (once, after an ``open(accepting=False)``)."""
        self.start_accepting()

    def close(self) -> None:
        self.close_connections()
        self.let_go()

    def victim(self) -> Optional[Connection]:
        """The oldest connection that has not sent a complete head (one taking its reply ends soon)."""
        return next((conn for conn in self.connections if not conn.headed), None)

    def opened(self, conn: Connection) -> None:
        conn.call_later(IDLE_TIMEOUT, conn.close)

    def received(self, conn: Connection) -> None:
        head, found, _ = conn.inbuf.replace(b"\r\n", b"\n").partition(b"\n\n")
        if not found and not conn.overflowing:
            return
        if found:
            reply = answer(head, self.routes)
        else:
            reply = response("431 Request Header Fields Too Large", b"request too large\n")
        conn.headed = True
        conn.pause()
        conn.finish(reply)
