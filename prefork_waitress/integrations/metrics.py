"""Prometheus metrics of a master and its workers, served by the master's own loop.

:func:`collect` builds the families from what the master already knows (its
slots, its counters, the workers' shared request meters, /proc, TCP_INFO):
no message to any worker, so a busy or stuck worker never delays a scrape.
:class:`MetricsServer` answers ``GET /metrics`` on ``metrics_host:metrics_port``
with non-blocking sockets registered as readers of the master loop, bounded
in connections, request size and time; it is never in the app's request path.
``prefork-waitress ctl metrics`` prints the same text through the control socket.
"""

from __future__ import annotations

import functools
import logging
import platform
import socket
import time
from typing import Any, Callable, Dict, List, Optional

from .._child.meter import BUCKETS, RequestCounts
from .._core.counters import RESTART_REASONS
from .._core.handle import MasterHandle
from .._core.slots import bind_socket
from .._os.activation import claim_inherited
from .._os.handoff import predecessor_pid
from .._os.memory import resident_bytes
from . import exposition

__all__ = ["MetricsServer", "collect", "render_metrics"]

log = logging.getLogger("prefork_waitress")

P = "prefork_waitress_"  # every metric name begins with it
MAX_CONNECTIONS = 8
MAX_REQUEST_BYTES = 8192
IDLE_TIMEOUT = 5.0  # a connection must send its request (and take the reply) within this
SEND_RETRY = 0.01
_STARTED = time.time()


@functools.lru_cache(maxsize=None)
def _versions() -> Dict[str, str]:
    """Found once: importlib.metadata scans the installed distributions (about 1.5 ms)."""
    import sys

    import waitress

    package = sys.modules.get(__name__.split(".")[0])  # the top package, already imported
    return {
        "version": str(getattr(package, "__version__", None) or _dist_version("prefork_waitress")),
        "waitress_version": str(getattr(waitress, "__version__", None) or _dist_version("waitress")),
        "python_version": platform.python_version(),
    }


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def collect(master: MasterHandle) -> List[exposition.Family]:
    """Every metric family, read now."""
    status = master.status()
    info = status["master"]
    slots = [({"slot": str(w["id"])}, w["pid"]) for w in status["workers"]]
    by_slot = [({"slot": str(slot_id)}, counts) for slot_id, counts in master.request_counts().items()]
    cluster = sum((counts for _, counts in by_slot), RequestCounts())
    ports = dict(zip((w["id"] for w in status["workers"]), info["ports"]))
    queues = [({"slot": str(i), "port": str(ports[i])}, q) for i, q in master.accept_queues().items() if q]
    counters = master.counters
    gauge, counter, histogram = exposition.gauge, exposition.counter, exposition.histogram
    return [
        gauge(P + "build_info", "Versions of prefork_waitress, waitress and Python (value 1).", [(_versions(), 1)]),
        gauge(P + "up", "1 while the master is running (all slots started).", [({}, int(info["state"] == "running"))]),
        gauge(P + "master_start_time_seconds", "When the master started, Unix time.", [({}, _STARTED)]),
        gauge(P + "master_resident_memory_bytes", "The master's RSS.", _known([({}, resident_bytes())])),
        gauge(P + "workers", "Worker slots.", [({}, len(slots))]),
        gauge(P + "workers_serving", "Slots whose worker process is up.", [({}, sum(p is not None for _, p in slots))]),
        counter(P + "requests_total", "Requests served by the slot.", [(s, n.requests) for s, n in by_slot]),
        counter(P + "cluster_requests_total", "Requests served by every slot.", [({}, cluster.requests)]),
        gauge(P + "requests_in_flight", "Requests running in the slot.", [(s, n.in_flight) for s, n in by_slot]),
        gauge(P + "cluster_requests_in_flight", "Requests running in all slots.", [({}, cluster.in_flight)]),
        histogram(
            P + "request_duration_seconds",
            "Time the app took per request (from its call until the response was handed to waitress).",
            BUCKETS,
            [(s, n.buckets, n.duration_sum) for s, n in by_slot],
        ),
        histogram(
            P + "cluster_request_duration_seconds",
            "Request duration, all slots.",
            BUCKETS,
            [({}, cluster.buckets, cluster.duration_sum)],
        ),
        gauge(
            P + "worker_resident_memory_bytes",
            "RSS of the slot's current worker process.",
            _known([(s, resident_bytes(pid) if pid else None) for s, pid in slots]),
        ),
        counter(
            P + "worker_restarts_total",
            "New worker processes for a slot, by reason: crash, killed, timeout, recycled, reload.",
            [({"reason": reason}, counters.restarts.get(reason, 0)) for reason in RESTART_REASONS],
        ),
        counter(
            P + "reloads_total",
            "Rolling reloads, by result: ok or failed.",
            [({"result": result}, n) for result, n in counters.reloads.items()],
        ),
        gauge(P + "accept_queue_length", "Connections in the slot's listen queue.", [(s, q[0]) for s, q in queues]),
        gauge(P + "accept_queue_limit", "The slot's listen queue limit.", [(s, q[1]) for s, q in queues]),
    ]


def _known(series: List[Any]) -> List[Any]:
    return [(labels, value) for labels, value in series if value is not None]


def render_metrics(master: MasterHandle) -> str:
    """The exposition text (format 0.0.4) of ``master``'s metrics."""
    return exposition.render(collect(master))


# -- the HTTP endpoint --------------------------------------------------------------------


class _Connection:
    def __init__(self, sock: socket.socket, deadline: Any) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""
        self.deadline = deadline  # the idle timer
        self.retry: Any = None


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


def answer(request: bytes, metrics: Callable[[], str]) -> bytes:
    """The whole HTTP response to one request head (request line and headers)."""
    line = request.split(b"\n", 1)[0].strip()
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", b"malformed request line\n")
    method, target = parts[0], parts[1]
    if target.split(b"?", 1)[0] != b"/metrics":
        return _response("404 Not Found", b"only /metrics is served here\n")
    if method != b"GET":
        return _response("405 Method Not Allowed", b"only GET\n", extra="Allow: GET\r\n")
    return _response("200 OK", metrics().encode("utf-8"), exposition.CONTENT_TYPE)


class MetricsServer:
    """Master listener: the /metrics endpoint in the master loop."""

    def __init__(self, master: MasterHandle, host: str, port: int) -> None:
        self.master = master
        self.host = host
        self.port = port
        self.sock: Optional[socket.socket] = None
        self.connections: List[_Connection] = []
        self._deferred = False

    def starting(self) -> None:
        """Bind with the worker ports, before the first fork (a port in use fails the start)."""
        sock = claim_inherited("metrics")  # an upgrade: the old master's, with its queue
        if sock is not None and sock.getsockname()[1] != self.port:
            sock.close()
            sock = None
        if sock is None:
            sock = bind_socket(self.host, self.port, backlog=MAX_CONNECTIONS)
        sock.setblocking(False)
        self.sock = sock
        self.master.own(sock)
        self._deferred = predecessor_pid() is not None  # an upgrade's new master: the old one answers for now
        if not self._deferred:
            self.master.add_io_handler(sock, self._accept)
        log.info("metrics on http://%s:%d/metrics", self.host, sock.getsockname()[1])

    def when_ready(self) -> None:
        """A new master (upgrade) answers on the old master's port once it has taken over."""
        if self._deferred and self.sock is not None:
            self._deferred = False
            self.master.add_io_handler(self.sock, self._accept)

    def upgraded(self, ok: bool) -> None:
        """A new master took over the (shared) port: new scrapes and probes are its own from now on."""
        if ok and self.sock is not None:
            self.master.remove_io_handler(self.sock)
            self.sock.close()
            self.sock = None

    def stopped(self) -> None:
        for conn in list(self.connections):
            self._close(conn)
        if self.sock is not None:
            self.master.remove_io_handler(self.sock)
            self.sock.close()
            self.sock = None

    def _accept(self, sock: Any) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("metrics: accept failed: %s", exc)
                return
            if len(self.connections) >= MAX_CONNECTIONS:
                client.close()  # the scraper retries; the master keeps its bounds
                continue
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        client.setblocking(False)
        conn = _Connection(client, None)
        conn.deadline = self.master.call_later(IDLE_TIMEOUT, lambda: self._close(conn))
        self.connections.append(conn)
        self.master.add_io_handler(client, lambda _sock: self._readable(conn))

    def _readable(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.outbuf:
            return  # already answering; ignore what else it sends
        conn.inbuf += data
        head, found, _ = conn.inbuf.replace(b"\r\n", b"\n").partition(b"\n\n")
        if not found and len(conn.inbuf) <= MAX_REQUEST_BYTES:
            return
        if found:
            reply = answer(head, lambda: render_metrics(self.master))
        else:
            reply = _response("431 Request Header Fields Too Large", b"request too large\n")
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
        for timer in (conn.deadline, conn.retry):
            if timer is not None:
                timer.cancel()
        self.master.remove_io_handler(conn.sock)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.sock.close()
