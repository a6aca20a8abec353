"""A draining or retiring worker answers an HTTP/1.0 keep-alive request with one true
``Connection: close`` header, not close and Keep-Alive together (issue 22.8)."""

import signal
import socket

import pytest
from conftest import InThread, wait_until

MASTER = """
RecordingMaster("apps:app", workers=2, base_port=0, graceful_timeout=10).start()
emit("exited")
"""


def _http10_keep_alive(port, path, expect_close=True):
    """Send an HTTP/1.0 keep-alive request on a raw socket; return (header lines, body, closed after)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, f"closed before the header ended: {data!r}"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = int(next(line.split(":", 1)[1] for line in lines if line.lower().startswith("content-length:")))
        while len(body) < length:
            chunk = sock.recv(4096)
            assert chunk, "closed before the body ended"
            body += chunk
        closed = expect_close and sock.recv(1) == b""  # the server closes, as the header said
    return lines, body, closed


@pytest.mark.parametrize("how", ["stop", "retire"])
def test_http10_keep_alive_gets_one_connection_close_while_draining(cluster, how):
    c = cluster(MASTER)
    ready = c.ready()
    slot = 0 if how == "stop" else 1
    port = ready["ports"][slot]
    lines, _, _ = _http10_keep_alive(port, "/", expect_close=False)
    assert [line for line in lines if line.lower().startswith("connection:")] == ["Connection: Keep-Alive"]
    request = InThread(lambda: _http10_keep_alive(port, "/slow?s=1.5"))
    wait_until(
        lambda: c.order("command", "stats", worker=slot)["result"][str(slot)]["in_flight"] == 1,
        message="the request in flight",
    )
    if how == "stop":
        c.signal(signal.SIGTERM)
        c.wait_event("stopping")
    else:
        assert c.order("scale", 1).get("error") is None
    lines, body, closed = request.result(10)
    assert lines[0] == "HTTP/1.0 200 OK"
    assert [line for line in lines if line.lower().startswith("connection:")] == ["Connection: close"]
    assert closed
