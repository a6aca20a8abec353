"""The non-blocking outbox, against a real socketpair whose far end stops reading."""

import os
import socket
import threading
import time
from multiprocessing.connection import Connection

import pytest
from conftest import InThread

from prefork_waitress._core.loop import EventLoop
from prefork_waitress._core.outbox import Outbox, OutboxFull
from prefork_waitress._os.adoption import receive_fds


def drive(loop, thread):
    """Run the real master loop until ``thread`` (the worker reading) is done; fail loudly if it never is."""
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        loop.run_once()
        thread.join(0.001)
    assert not thread.is_alive(), "the outbox did not deliver within 10 s"


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    master, worker = Connection(ours.detach()), Connection(theirs.detach())
    yield master, worker
    master.close()
    worker.close()


def test_messages_arrive_in_order_as_connection_send_would_write_them(pair):
    master, worker = pair
    outbox = Outbox(master, EventLoop())
    for n in range(3):
        outbox.send(("command", n, "ping", (), {}))
    assert [worker.recv()[1] for _ in range(3)] == [0, 1, 2]


def test_a_reader_that_stops_fills_the_bound_then_each_send_fails_at_once(pair):
    master, worker = pair
    loop = EventLoop()
    outbox = Outbox(master, loop, max_messages=4, max_bytes=1 << 20)
    big = "x" * 60_000
    with pytest.raises(OutboxFull, match="still unread"):
        for n in range(50):
            outbox.send(("command", n, "greet", (big,), {}))
    assert outbox.waiting == 4 and loop.writers() == [master]  # it waits for room in the pipe
    received = []
    reader = threading.Thread(target=lambda: received.extend(worker.recv()[1] for _ in range(n)), daemon=True)
    reader.start()  # the worker reads again: the retries deliver everything queued, in order
    drive(loop, reader)
    assert received == list(range(n)) and outbox.waiting == 0 and loop.writers() == []  # done: not watched


def test_an_unpicklable_message_raises_before_anything_is_sent(pair):
    master, worker = pair
    outbox = Outbox(master, EventLoop())
    with pytest.raises(Exception, match="pickle|lambda"):
        outbox.send(("command", 1, "x", (lambda: None,), {}))
    outbox.send(("command", 2, "ping", (), {}))
    assert worker.recv()[1] == 2


def test_a_message_nobody_waits_for_is_dropped_unless_part_of_it_was_written(pair):
    master, worker = pair
    loop = EventLoop()
    outbox = Outbox(master, loop, max_messages=8, max_bytes=1 << 20)
    big = "x" * 60_000
    queued = [outbox.send(("command", n, "greet", (big,), {})) for n in range(4)]
    assert queued[0] is None and all(q is not None for q in queued[2:])  # the first went (partly) at once
    outbox.discard(queued[2])
    received = []
    reader = threading.Thread(target=lambda: received.extend(worker.recv()[1] for _ in range(3)), daemon=True)
    reader.start()
    drive(loop, reader)
    assert received == [0, 1, 3]


def test_fds_follow_their_message_even_when_the_message_had_to_wait(pair, tmp_path):
    master, worker = pair
    loop = EventLoop()
    outbox = Outbox(master, loop, max_messages=8, max_bytes=1 << 20)
    big = "x" * 60_000
    outbox.send(("command", 1, "greet", (big,), {}))  # fills the socket: what follows waits
    shared = tmp_path / "shared"
    shared.write_bytes(b"")
    fd = os.open(shared, os.O_WRONLY | os.O_APPEND)
    outbox.send(("command", 2, "refork", (), {}), fds=[fd])
    os.close(fd)  # the outbox holds its own duplicate
    outbox.send(("command", 3, "ping", (), {}))
    got = InThread(lambda: [worker.recv()[1], worker.recv()[1], receive_fds(worker.fileno(), 1), worker.recv()[1]])
    drive(loop, got.thread)
    first, second, (passed,), third = got.result()
    assert (first, second, third) == (1, 2, 3)
    os.write(passed, b"through the pipe")
    os.close(passed)
    assert shared.read_bytes() == b"through the pipe" and outbox.waiting == 0


def test_fds_of_a_dropped_message_are_closed_with_it(pair):
    master, worker = pair
    outbox = Outbox(master, EventLoop(), max_messages=8, max_bytes=1 << 20)
    outbox.send(("command", 1, "greet", ("x" * 60_000,), {}))
    read_end, write_end = os.pipe()
    queued = outbox.send(("command", 2, "refork", (), {}), fds=[write_end])
    os.close(write_end)
    assert outbox.waiting == 3  # the rest of the first message, the second, its fds
    outbox.discard(queued)
    assert outbox.waiting == 1
    assert os.read(read_end, 1) == b""  # every write end is closed: the outbox's duplicate too
    os.close(read_end)
