"""A client that stops reading, or resets mid-response, must not hold its worker (issue 22.1, 23.1).

Both request paths run in a real worker under a real master: waitress's task
thread (the default) and the inline path (tasks on the I/O thread).
"""

import socket
import struct
import time

import pytest
from conftest import free_port, get, wait_until
from stream_apps import CHUNK, CHUNKS

CHANNEL_TIMEOUT = 2
# The stalled response is dropped channel_timeout after its last progress (the loop
# wakes up when it is due); the other client's request must not wait longer than this.
SERVED_WITHIN = 12.0

# Windows of channel_timeout +- 0.5 to 2 s: run alone, not beside the parallel pass.
pytestmark = pytest.mark.serial

paths = pytest.mark.parametrize("inline", [False, True], ids=["task-thread", "inline"])


def _start(server, tmp_path, inline, *extra):
    port = free_port()
    sock = tmp_path / "ctl.sock"
    args = ["--workers", "1", "--base-port", str(port), "--control-socket", str(sock)]
    args += [*extra, "stream_apps:stream"]
    # The environment, not --inline-tasks: it also says "off" to a suite run on the inline path.
    master = server(*args, env={"PREFORK_WAITRESS_INLINE_TASKS": "1" if inline else "0"})
    master.status(sock)
    status, body, _ = get(port)
    assert status == 200
    return master, port, int(body.split()[0])


def _stream_request(port, rcvbuf=4096):
    """A connection with a small receive buffer that asked for /stream and read its first 100 bytes."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.settimeout(10)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while len(first) < 100:
        chunk = client.recv(100 - len(first))
        assert chunk, "closed before the response began"
        first += chunk
    assert first.startswith(b"HTTP/1.1 200")
    return client


def _served_by(port, pid, within):
    """Another client's request on the same port is answered, by the same worker, within ``within`` s."""
    started = time.monotonic()
    status, body, _ = get(port, timeout=within)
    took = time.monotonic() - started
    assert status == 200 and int(body.split()[0]) == pid, f"answered by another worker: {body}"
    assert took < within
    return took


@paths
def test_a_client_that_stops_reading_is_dropped_after_channel_timeout(server, tmp_path, inline):
    master, port, pid = _start(server, tmp_path, inline, "--channel-timeout", str(CHANNEL_TIMEOUT))
    stalled = _stream_request(port)
    try:
        took = _served_by(port, pid, SERVED_WITHIN)
        assert took >= CHANNEL_TIMEOUT - 0.5, f"served after {took:.1f} s: was the stalled client ever stalled?"
        assert took < CHANNEL_TIMEOUT + 2, (
            f"served {took:.1f} s later: the stall was dropped long after channel_timeout"
        )
        # What the stalled client gets from now on ends: the response was cut, not completed.
        received = 100
        while True:
            try:
                chunk = stalled.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
        assert received < CHUNKS * len(CHUNK), "the stalled response was completed, not dropped"
    finally:
        stalled.close()
    assert master.proc.poll() is None


@paths
def test_a_request_slower_than_channel_timeout_is_not_taken_for_a_stalled_client(server, tmp_path, inline):
    master, port, pid = _start(server, tmp_path, inline, "--channel-timeout", "1")
    client = _stream_request(port)  # one that stalls, so the sweep has work
    try:
        status, body, _ = get(port, f"/slow?s={CHANNEL_TIMEOUT + 1}", timeout=SERVED_WITHIN)
        assert status == 200 and int(body.split()[0]) == pid
    finally:
        client.close()


@paths
def test_a_client_that_resets_mid_response_frees_the_worker_at_once(server, tmp_path, inline):
    # A reset (SO_LINGER 0) while the response is past outbuf_high_watermark.
    master, port, pid = _start(server, tmp_path, inline, "--outbuf-high-watermark", str(1 << 20))
    client = _stream_request(port)
    wait_until(lambda: _unread(client) > 0, timeout=5, message="the response filling the receive buffer")
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    _served_by(port, pid, 5.0)
    for _ in range(20):
        _served_by(port, pid, 5.0)
    assert master.proc.poll() is None


def _unread(sock):
    import fcntl
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
