"""Calls another thread hands to a worker's loop thread, run at a turn with no request in flight.

A refork must fork from the loop thread, the process's main thread: on
Python 3.13 a worker forked (by way of an intermediate process) from the
command thread never ran its Python SIGTERM handler when the kernel handed
the signal to one of its other threads (seen with tgkill; 3.11 ran it), so
it stayed deaf to a stop until SIGKILLed. Forking between two turns with no request queued
or running also means no request holds the app's locks at the fork.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Optional

QUEUED, RUNNING, CANCELLED = "queued", "running", "cancelled"
TICK = 0.01  # how long the loop sleeps at most while a call waits for an idle turn
RUN_WAIT = 60.0  # how long a caller waits for a call that has started (it bounds its own waits)


class IdleCall:
    """One call: queued until the loop runs it, or cancelled by its caller if it waited too long."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.state = QUEUED
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        with self.lock:
            if self.state != QUEUED:
                return
            self.state = RUNNING
        try:
            self.result = self.fn()
        except BaseException as exc:  # the caller re-raises it
            self.error = exc
        finally:
            self.done.set()

    def cancel(self) -> bool:
        """True if it will never run; False if it has started already."""
        with self.lock:
            if self.state == QUEUED:
                self.state = CANCELLED
                return True
            return False


class IdleCalls:
    """The loop thread's queue of calls (the loop tests ``queue`` each turn); ``wake()`` makes it take a turn."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.queue: "collections.deque[IdleCall]" = collections.deque()

    def call(self, fn: Callable[[], Any], wait: float) -> Any:
        """From another thread: run ``fn()`` on the loop thread at an idle turn and return its result.

        RuntimeError if no idle turn came within ``wait`` seconds (then it never runs).
        """
        call = IdleCall(fn)
        self.queue.append(call)
        self.wake()
        if not call.done.wait(wait) and call.cancel():
            raise RuntimeError(f"the worker was never idle within {wait:g} s")
        if not call.done.wait(RUN_WAIT):
            raise RuntimeError(f"the call did not finish within {RUN_WAIT:g} s")
        if call.error is not None:
            raise call.error
        return call.result

    def run(self) -> None:
        """On the loop thread, at a turn with no request in flight: run every queued call."""
        while self.queue:
            self.queue.popleft().run()
