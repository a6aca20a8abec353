"""What prefork_waitress._child._waitress relies on inside waitress: if a waitress
release changes any of it, these fail before a graceful stop silently breaks."""

import http.client
import inspect
import socket
import threading
import time

from conftest import wait_until
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import Task, ThreadedTaskDispatcher, WSGITask

from prefork_waitress._child._waitress import DrainableServer, RequestHooks


def test_waitress_version_is_the_pinned_range():
    from importlib.metadata import version

    installed = tuple(int(part) for part in version("waitress").split(".")[:3])
    assert (3, 0, 2) <= installed < (4,), "prefork_waitress pins waitress>=3.0.2,<4; re-check _waitress.py first"


def test_the_internal_names_we_use_still_exist():
    from waitress.adjustments import Adjustments

    assert "sockets" in Adjustments._param_map
    for name in ("channel_class", "accepting", "del_channel", "pull_trigger", "maintenance"):
        assert hasattr(BaseWSGIServer, name), name
    for name in (
        "task_class",
        "handle_close",
        "received",
        "service",
        "will_close",
        "close_when_flushed",
        "_flush_some",
        "writable",
    ):
        assert hasattr(HTTPChannel, name), name
    for name in ("service", "build_response_header", "set_close_on_finish", "close_on_finish"):
        assert hasattr(WSGITask, name), name
    assert "timeout" in inspect.signature(ThreadedTaskDispatcher.shutdown).parameters
    assert "count" in inspect.signature(wasyncore.loop).parameters
    assert hasattr(wasyncore, "close_all")
    # A draining worker marks the task before the header is built, and the
    # channel closes after a task whose close_on_finish is set.
    assert "self.build_response_header()" in inspect.getsource(Task)
    assert "task.close_on_finish" in inspect.getsource(HTTPChannel.service)


BIG_CHUNK = b"x" * (1 << 20)


def _app(environ, start_response):
    if environ["PATH_INFO"] == "/big":  # past outbuf_high_watermark (16 MiB): the task waits for the loop
        start_response("200 OK", [("Content-Length", str(24 * len(BIG_CHUNK)))])
        return [BIG_CHUNK] * 24
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.5)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


class Counting(RequestHooks):
    def __init__(self):
        self.started = self.finished = 0

    def request_started(self):
        self.started += 1
        return False

    def request_finished(self):
        self.finished += 1


def _serve():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    hooks = Counting()
    server = DrainableServer(_app, sock, hooks, {})
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return server, hooks, thread, port


def test_drain_finishes_in_flight_request_with_connection_close_and_closes_idle():
    server, hooks, thread, port = _serve()
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/")
    assert idle.getresponse().read() == b"ok"
    busy = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    busy.request("GET", "/slow")
    wait_until(lambda: server.in_flight == 1, timeout=5, message="the slow request in flight")
    server.request_stop()
    response = busy.getresponse()
    assert response.read() == b"ok" and response.getheader("Connection") == "close"
    thread.join(5)
    assert not thread.is_alive(), "serve() returned after the drain"
    assert idle.sock.recv(10) == b"", "idle keep-alive connection closed by the drain"
    assert (hooks.started, hooks.finished) == (2, 2)
    assert server.server.task_dispatcher.threads == set()


def test_request_arriving_during_drain_grace_is_served_with_close():
    server, hooks, thread, port = _serve()
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_until(lambda: server.server.active_channels, timeout=5, message="the connection accepted")
    server.request_stop()  # accepted, but no request bytes yet: in flight, not idle
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"ok"):
        chunk = conn.recv(4096)
        assert chunk, f"connection closed before the response: {data!r}"
        data += chunk
    assert b"Connection: close" in data
    thread.join(5)
    assert not thread.is_alive()
    conn.close()


def test_large_response_streams_while_the_task_thread_sends():
    server, hooks, thread, port = _serve()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        conn.request("GET", "/big")
        assert len(conn.getresponse().read()) == 24 * len(BIG_CHUNK)
    assert server.server.active_channels, "still kept alive"
    server.request_stop()
    thread.join(5)
    assert not thread.is_alive()
