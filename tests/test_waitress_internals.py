"""What prefork_waitress._child._waitress relies on inside waitress: if a waitress
release changes any of it, these fail before a graceful stop silently breaks."""

import http.client
import inspect
import socket
import threading
import time

import pytest
from conftest import wait_until
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import Task, ThreadedTaskDispatcher, WSGITask

from prefork_waitress._child._waitress import RequestHooks
from prefork_waitress._child._waitress_server import DrainableServer

both_paths = pytest.mark.parametrize("inline", [False, True], ids=["task-thread", "inline"])


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
    # The Keep-Alive header a closing HTTP/1.0 response has taken out again, as waitress writes it.
    header = inspect.getsource(Task.build_response_header)
    assert '("Connection", "Keep-Alive")' in header and '"%s: %s" % hv' in header


def test_what_inline_tasks_and_the_coalesced_header_rely_on():
    # Our dispatcher replaces waitress's (no task thread is started) ...
    assert "_dispatcher" in inspect.signature(create_server).parameters
    assert "self.task_dispatcher.add_task(task)" in inspect.getsource(BaseWSGIServer.add_task)
    # ... which is handed each channel with a complete request while its
    # requests_lock is held (so add_task may only queue), and again from
    # service() for a pipelined request.
    received = inspect.getsource(HTTPChannel.received)
    assert "with self.requests_lock:" in received and "self.server.add_task(self)" in received
    assert "self.server.add_task(self)" in inspect.getsource(HTTPChannel.service)
    # The wake-up after each task, which an inline task does without.
    assert "self.server.pull_trigger()" in inspect.getsource(HTTPChannel.service)
    # The wait for the I/O thread to drain a full buffer, which inline is this thread.
    assert "self.outbuf_lock.wait()" in inspect.getsource(HTTPChannel._flush_outbufs_below_high_watermark)
    assert "self._flush_outbufs_below_high_watermark()" in inspect.getsource(HTTPChannel.write_soon)
    # The Date header is added from a per-second cache: waitress keeps a Date the app
    # (here: our task) set and builds none, from the time Task.start() recorded.
    header = inspect.getsource(Task.build_response_header)
    assert 'if headername == "Date":' in header and "if not date_header:" in header
    assert "build_http_date(self.start_time)" in header
    assert "self.start_time = time.time()" in inspect.getsource(Task.start)
    # Task.write hands the header to write_soon right before the first chunk.
    write = inspect.getsource(Task.write)
    assert write.index("channel.write_soon(rh)") < write.index("channel.write_soon(towrite)")


BIG_CHUNK = b"x" * (1 << 20)
APP_DATE = "Mon, 01 Jan 2001 00:00:00 GMT"


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/thread":
        body = threading.current_thread().name.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/chunks":  # no Content-Length: chunked, several writes
        start_response("200 OK", [])
        return (b"%d;" % i for i in range(5))
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    if path == "/large":  # one chunk larger than what is sent together with the header
        start_response("200 OK", [("Content-Length", str(len(BIG_CHUNK)))])
        return [BIG_CHUNK]
    if path == "/write":  # the write() callable of start_response
        start_response("200 OK", [("Content-Length", "6")])("wr".encode())
        return [b"ite", b"!"]
    if path == "/big":  # past outbuf_high_watermark (16 MiB): the task waits for the loop
        start_response("200 OK", [("Content-Length", str(24 * len(BIG_CHUNK)))])
        return [BIG_CHUNK] * 24
    if path == "/dated":  # the app's own Date (lower case): kept, and the only one
        start_response("200 OK", [("Content-Length", "2"), ("date", APP_DATE)])
        return [b"ok"]
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.5)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


class Counting(RequestHooks):
    def __init__(self):
        self.started = self.finished = 0

    def request_started(self, method, uri):
        self.started += 1
        self.last = (method, uri)
        return False

    def request_finished(self):
        self.finished += 1


def _serve(inline=None, **options):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    hooks = Counting()
    server = DrainableServer(_app, sock, hooks, options, inline=inline)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    return server, hooks, thread, port


@both_paths
def test_drain_finishes_in_flight_request_with_connection_close_and_closes_idle(inline):
    server, hooks, thread, port = _serve(inline)
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/")
    assert idle.getresponse().read() == b"ok"
    busy = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    busy.request("GET", "/slow")
    # the app runs (in_flight alone could still count the first request, just answered)
    wait_until(lambda: hooks.started == 2, timeout=5, message="the slow request running")
    assert server.in_flight == 1
    server.request_stop()
    response = busy.getresponse()
    assert response.read() == b"ok" and response.getheader("Connection") == "close"
    thread.join(5)
    assert not thread.is_alive(), "serve() returned after the drain"
    assert idle.sock.recv(10) == b"", "idle keep-alive connection closed by the drain"
    assert (hooks.started, hooks.finished) == (2, 2)
    assert server.server.task_dispatcher.threads == set()


@both_paths
def test_request_arriving_during_drain_grace_is_served_with_close(inline):
    server, hooks, thread, port = _serve(inline)
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


@both_paths
def test_large_response_streams_while_the_task_thread_sends(inline):
    server, hooks, thread, port = _serve(inline)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        conn.request("GET", "/big")
        assert len(conn.getresponse().read()) == 24 * len(BIG_CHUNK)
    assert server.server.active_channels, "still kept alive"
    server.request_stop()
    thread.join(5)
    assert not thread.is_alive()


def _stop(server, thread):
    server.request_stop()
    thread.join(5)
    assert not thread.is_alive(), "serve() returned after the drain"


def test_inline_requests_run_on_the_loop_thread_and_waitress_starts_no_task_thread():
    threads_before = {t.name for t in threading.enumerate()}
    server, hooks, thread, port = _serve(inline=True)
    thread.name = "the-loop"
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/thread")
            assert conn.getresponse().read() == b"the-loop"
        new = {t.name for t in threading.enumerate()} - threads_before
        assert new == {"the-loop"}, f"threads started by the server: {new}"
        conn.close()
    finally:
        _stop(server, thread)


@both_paths
def test_response_shapes_are_intact_with_the_header_sent_with_the_first_chunk(inline):
    server, hooks, thread, port = _serve(inline)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        expected = {"/": b"ok", "/chunks": b"0;1;2;3;4;", "/empty": b"", "/large": BIG_CHUNK, "/write": b"write!"}
        for path, body in expected.items():
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.read() == body, path
        conn.request("HEAD", "/")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == "2" and response.read() == b""
        conn.close()
    finally:
        _stop(server, thread)


@both_paths
def test_every_response_has_one_date_header_the_current_one_unless_the_app_set_its_own(inline):
    from email.utils import parsedate_to_datetime

    server, hooks, thread, port = _serve(inline)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for method, path, headers in [
            ("GET", "/", {}),
            ("GET", "/chunks", {}),
            ("HEAD", "/", {}),
            ("GET", "/empty", {}),
            ("GET", "/", {"Connection": "close"}),
        ]:
            before = time.time()
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            response.read()
            dates = response.msg.get_all("Date")
            assert dates is not None and len(dates) == 1, (path, dates)
            sent = parsedate_to_datetime(dates[0]).timestamp()
            assert int(before) <= sent <= time.time(), (path, dates[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/dated")
        response = conn.getresponse()
        assert response.read() == b"ok" and response.msg.get_all("Date") == [APP_DATE]
        conn.close()
    finally:
        _stop(server, thread)


@both_paths
def test_pipelined_requests_are_answered_in_order(inline):
    server, hooks, thread, port = _serve(inline)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /write HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            data = b""
            while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"ok"):
                chunk = conn.recv(4096)
                assert chunk, f"closed early: {data!r}"
                data += chunk
        assert data.index(b"write!") < data.index(b"ok") and data.count(b"ok") == 2
        assert hooks.started == 3
    finally:
        _stop(server, thread)


def test_inline_a_client_that_stops_reading_is_dropped_after_channel_timeout_and_others_are_served():
    # The inline task fills the buffers past the high watermark; nobody else
    # can flush them, so it waits for the socket itself, channel_timeout at most.
    server, hooks, thread, port = _serve(inline=True, outbuf_high_watermark=1 << 20, channel_timeout=1)
    try:
        stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        stalled.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        assert _get_ok(port, timeout=10), "the next client is served"
        assert time.monotonic() - started < 8
        received = 0
        while True:
            chunk = stalled.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
        assert received < 24 * len(BIG_CHUNK), "the stalled response was cut off, not completed"
        stalled.close()
    finally:
        _stop(server, thread)


def _get_ok(port, timeout):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read() == b"ok"
    finally:
        conn.close()


@both_paths
def test_a_fast_response_is_sent_before_a_slow_request_queued_behind_it_runs(inline):
    # Two requests read in the same loop turn, a fast one then a slow one: the fast answer goes out
    # while the slow request runs, not after it (on the inline path the loop is busy with it, and
    # only write_soon()'s own send, send_bytes=1, gets the answer out).
    server, hooks, thread, port = _serve(inline)
    try:
        first, second, blocker = (http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(3))
        for conn in (first, second):  # both accepted, and kept alive, before the race below
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"
        blocker.request("GET", "/slow")
        wait_until(lambda: hooks.started == 3, timeout=5, message="the blocking request running")
        first.request("GET", "/")  # both wait on the busy worker, then are read in one turn
        second.request("GET", "/slow")
        assert first.getresponse().read() == b"ok"
        # (the task thread may not have begun the slow one yet: only its end would be wrong)
        assert hooks.finished < 5, f"the fast answer came after the slow request ({hooks.started}, {hooks.finished})"
        assert second.getresponse().read() == b"ok" and blocker.getresponse().read() == b"ok"
    finally:
        _stop(server, thread)
