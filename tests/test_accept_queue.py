"""Accept-queue reading (a real listening socket) and the stuck-queue warning (a policy with a given clock)."""

import logging
import socket

from prefork_waitress._os.accept_queue import accept_queue
from prefork_waitress.integrations.accept_queue import StuckQueues


def test_accept_queue_counts_connections_waiting_on_a_listening_socket():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(77)
        assert accept_queue(listener) == (0, 77)
        clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(3)]
        try:
            assert accept_queue(listener) == (3, 77)
            listener.accept()[0].close()
            assert accept_queue(listener) == (2, 77)
        finally:
            for client in clients:
                client.close()


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


def test_a_queue_that_never_shrinks_is_warned_about_once_and_a_moving_one_never(caplog):
    clock = Clock()
    stuck = StuckQueues(clock, stuck_after=5.0)
    caplog.set_level(logging.INFO, logger="prefork_waitress")
    for step in range(12):
        clock.now = 100.0 + step
        stuck.sample([(0, 8080, 3), (1, 8081, 5 - step % 5 or 1)])  # slot 1 keeps accepting
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("slot 0 (port 8080): 3 connections"), warnings
    stuck.sample([(0, 8080, 0), (1, 8081, 0)])
    assert "slot 0 (port 8080): its accept queue is empty again" in caplog.text
