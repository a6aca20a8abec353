"""EventLoop.add_writer / remove_writer on the real loop, with real sockets and pipes."""

import errno
import logging
import os
import socket

import pytest

from prefork_waitress._core.loop import EventLoop


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield ours, theirs
    ours.close()
    theirs.close()


def fill(sock):
    """Write until the kernel takes no more."""
    while True:
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            return


def test_a_writer_runs_when_there_is_room_and_stops_once_removed(pair):
    ours, _ = pair
    loop = EventLoop()
    calls = []
    loop.add_writer(ours, calls.append)
    loop.run_once()
    assert calls == [ours]
    loop.remove_writer(ours)
    loop.call_later(0.05, lambda: None)  # something to wake the loop: the writer must not run
    loop.run_once()
    assert calls == [ours] and loop.writers() == []


def test_a_writer_waits_for_the_peer_to_read_then_runs(pair):
    ours, theirs = pair
    fill(ours)
    loop = EventLoop()
    calls, woke = [], []
    loop.add_writer(ours, calls.append)
    loop.call_later(0.2, lambda: woke.append(True))
    while not woke:  # a full buffer only drains when the peer reads: no turn may run the writer
        loop.run_once()
    assert calls == []
    theirs.setblocking(False)
    while True:  # the peer reads all: room again
        try:
            theirs.recv(1 << 20)
        except BlockingIOError:
            break
    loop.run_once()
    assert calls == [ours]


def test_a_reader_and_a_writer_share_one_fd(pair):
    ours, theirs = pair
    theirs.send(b"hello")
    loop = EventLoop()
    seen = []
    loop.add_reader(ours, lambda s: seen.append(("read", s.recv(10))))
    loop.add_writer(ours, lambda s: seen.append(("write", s.send(b"hi"))))
    loop.run_once()
    assert sorted(seen) == [("read", b"hello"), ("write", 2)]
    assert theirs.recv(10) == b"hi"


def test_a_writer_removed_by_an_earlier_callback_of_the_same_turn_does_not_run(pair):
    ours, theirs = pair
    theirs.send(b"x")
    loop = EventLoop()
    calls = []
    loop.add_reader(ours, lambda s: loop.remove_writer(ours))  # readers are dispatched before writers
    loop.add_writer(ours, calls.append)
    loop.run_once()
    assert calls == [] and loop.writers() == []


def test_a_writer_that_raises_is_logged_and_the_loop_goes_on(pair, caplog):
    ours, _ = pair
    loop = EventLoop()

    def broken(sock):
        loop.remove_writer(sock)
        raise RuntimeError("writer broke")

    later = []
    loop.add_writer(ours, broken)
    loop.call_soon(lambda: later.append(True))
    with caplog.at_level(logging.ERROR, logger="prefork_waitress"):
        loop.run_once()
    assert "writer broke" in caplog.text and later == [True]


def test_a_socket_closed_under_the_loop_is_dropped_with_a_warning_not_polled_forever(caplog):
    ours, theirs = socket.socketpair()
    loop = EventLoop()
    calls = []
    loop.add_writer(ours, calls.append)
    loop.add_reader(ours, calls.append)
    ours.close()  # without remove_writer/remove_reader
    theirs.close()
    loop.call_later(0.01, lambda: None)
    with caplog.at_level(logging.WARNING, logger="prefork_waitress"):
        loop.run_once()
    assert calls == [] and loop.writers() == [] and loop.readers() == []
    assert "closed without being removed" in caplog.text


def test_an_fd_number_closed_under_the_loop_does_not_make_it_spin(caplog):
    read_end, write_end = os.pipe()
    loop = EventLoop()
    calls = []
    loop.add_writer(write_end, calls.append)
    os.close(write_end)  # the poll reports POLLNVAL for it
    os.close(read_end)
    with caplog.at_level(logging.WARNING, logger="prefork_waitress"):
        loop.run_once()
    assert calls == [] and loop.writers() == []
    assert "not open" in caplog.text


def test_a_non_blocking_connect_completes_as_writable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket()
    client.setblocking(False)
    try:
        code = client.connect_ex(server.getsockname())
        assert code in (0, errno.EINPROGRESS)
        loop = EventLoop()
        done = []
        loop.add_writer(client, lambda s: done.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
        loop.call_later(10, lambda: done.append("timed out"))
        loop.run_once()
        assert done == [0]
    finally:
        client.close()
        server.close()


def test_a_refused_connect_is_reported_to_the_writer():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()  # bound, never listening: a connect is refused
    client = socket.socket()
    client.setblocking(False)
    try:
        client.connect_ex(address)
        loop = EventLoop()
        done = []
        loop.add_writer(client, lambda s: done.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
        loop.call_later(10, lambda: done.append("timed out"))
        loop.run_once()
        assert done == [errno.ECONNREFUSED]
    finally:
        client.close()
        probe.close()
