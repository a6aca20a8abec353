"""request_timeout: a worker whose request runs too long is replaced.

The clock: each worker process has a :class:`~.._wire.meter.RequestMeter`
(shared memory, written by its task thread) holding ``time.monotonic()`` at
the start of the request it is running, or 0.0 when it is idle.

The wake-up scheme: one timer for all workers. A sweep reads every meter. A
request that started at ``s`` is due at ``s + timeout``; the next sweep is at
the earliest such deadline, or at ``now + timeout`` when nothing is running.
A request that starts after a sweep at ``c`` is due after ``c + timeout``,
and the next sweep is no later than that; so every request is checked at its
exact deadline (plus the loop's scheduling delay), never later. An idle
master wakes once per ``timeout`` in all (not per worker), never on a short
fixed tick; while a request runs it wakes at that request's deadline.

The replacement: the master notes it in the worker output, sends
DUMP_SIGNAL (``faulthandler`` in the worker writes every thread's Python
traceback to its stderr), asks the worker to stop accepting, forks the
successor at once on the same socket, and kills the stuck process if it has
not left KILL_AFTER_DUMP seconds later.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Optional, Set

from .._core.loop import EventLoop, Timer
from .._core.pool import WorkerPool
from .._core.slots import Slot, WorkerProcess, log_fields
from .._os.output import open_output

log = logging.getLogger("prefork_waitress")

DUMP_SIGNAL = signal.SIGUSR2
KILL_AFTER_DUMP = 0.5


class RequestTimeouts:
    """The master's sweep over the meters of its workers."""

    def __init__(
        self,
        timeout: Optional[float],
        loop: EventLoop,
        pool: WorkerPool,
        successor_coming: Callable[[Slot], bool],
        serving: Callable[[], bool],
        output: Any = None,
        heartbeat_timeout: Optional[float] = None,
    ) -> None:
        """``successor_coming(slot)``: a replacement is already forking for it; ``serving()``: the
        master is booting or running; ``output``: the workers' output, for the note."""
        self.timeout = timeout
        self.loop = loop
        self.pool = pool
        self.successor_coming = successor_coming
        self.serving = serving
        self.output = output
        self.heartbeats = HeartbeatWatch(self, heartbeat_timeout)
        self._timer: Optional[Timer] = None
        self.expired: Set[int] = set()  # pids of the workers this policy took out of service

    def watch(self) -> None:
        """A worker was forked: make sure a sweep is due within one timeout."""
        if self.timeout and self._timer is None:
            self._timer = self.loop.call_later(self.timeout, self.sweep)
        self.heartbeats.watch()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.heartbeats.stop()

    def sweep(self) -> None:
        """Replace every worker whose request is past its deadline; sleep until the next one."""
        assert self.timeout is not None
        self._timer = None
        now = time.monotonic()
        next_sweep = now + self.timeout
        self.expired &= set(self.pool.processes)
        for worker in list(self.pool.processes.values()):
            meter = worker.meter
            started = meter.read() if meter is not None and worker.pid not in self.expired else 0.0
            if not started:
                continue
            due = started + self.timeout
            # A second read that agrees rules out a torn read of a concurrent write.
            if due <= now and meter.read() == started:
                self._expire(worker, now - started)
            else:
                next_sweep = min(next_sweep, due)
        if self.pool.processes:
            self._timer = self.loop.call_at(next_sweep, self.sweep)

    def _expire(self, worker: WorkerProcess, elapsed: float) -> None:
        slot = worker.slot
        self.expired.add(worker.pid)
        log.error(
            "worker %d (pid %d, port %d): request running for %.1f s, over request_timeout (%g s); "
            "writing its traceback to the worker output and replacing it",
            slot.id,
            worker.pid,
            slot.port,
            elapsed,
            self.timeout,
            extra=log_fields(worker, "kill", reason="request_timeout", elapsed=round(elapsed, 3)),
        )
        _note_in_output(
            self.output,
            f"prefork_waitress: worker {slot.id} (pid {worker.pid}, port {slot.port}) request running for "
            f"{elapsed:.1f} s, over request_timeout ({self.timeout:g} s); its threads:\n",
        )
        self.dump_and_replace(worker)

    def dump_and_replace(self, worker: WorkerProcess) -> None:
        """Ask the stuck worker for its threads' tracebacks (SIGUSR2), then stop, kill and replace it."""
        try:
            os.kill(worker.pid, DUMP_SIGNAL)
        except ProcessLookupError:
            return
        self._take_out_of_service(worker)

    def _take_out_of_service(self, worker: WorkerProcess) -> None:
        """Stop the stuck worker, kill it after KILL_AFTER_DUMP, fork its successor now."""
        pool, slot = self.pool, worker.slot
        pool.stop_process(worker, graceful=True, timeout=KILL_AFTER_DUMP)
        if not pool.vacate(worker):
            return  # already replaced (a reload or a recycle), or stopping
        if self.serving() and not slot.retiring and not self.successor_coming(slot):
            pool.respawn(slot, "timeout")


class HeartbeatWatch:
    """Replaces a ready worker whose I/O loop or command thread has not beaten for ``timeout`` seconds.

    Request time is request_timeout's business: the I/O loop keeps beating
    while the task thread runs a request, so only a frozen or deadlocked
    process (SIGSTOP, a lock never released) misses its beats. With
    inline_tasks the request runs on the I/O thread, which cannot beat
    meanwhile: while a request is in flight, the I/O loop's silence is
    counted up to that request's start (its length is request_timeout's).
    The command thread beats either way, so a frozen worker is still caught.
    """

    def __init__(self, timeouts: RequestTimeouts, timeout: Optional[float]) -> None:
        self.timeouts = timeouts
        self.timeout = timeout
        self._timer: Optional[Timer] = None

    def watch(self) -> None:
        if self.timeout and self._timer is None:
            self._timer = self.timeouts.loop.call_later(self.timeout / 2, self.sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sweep(self) -> None:
        assert self.timeout is not None
        self._timer = None
        pool = self.timeouts.pool
        now = time.monotonic()
        for worker in list(pool.processes.values()):
            if not worker.ready or worker.stopping or worker.meter is None or worker.ready_at is None:
                continue
            # The start first: an inline worker beats its I/O loop before it clears a finished request's.
            started = worker.meter.read()
            io, commands = (max(beat, worker.ready_at) for beat in worker.meter.beats())
            late = [("I/O loop", (started or now) - io), ("command thread", now - commands)]
            missed = [(name, silent) for name, silent in late if silent > self.timeout]
            if missed:
                self._replace(worker, missed)
        if pool.processes:
            self.watch()

    def _replace(self, worker: WorkerProcess, missed: "list[tuple[str, float]]") -> None:
        slot = worker.slot
        what = " and ".join(f"its {name} silent for {silent:.1f} s" for name, silent in missed)
        log.error(
            "worker %d (pid %d, port %d) missed its heartbeat (%s, over heartbeat_timeout %g s); "
            "dumping its threads if it can, killing and replacing it",
            slot.id,
            worker.pid,
            slot.port,
            what,
            self.timeout,
            extra=log_fields(worker, "kill", reason="heartbeat_timeout", missed=dict(missed)),
        )
        self.timeouts.dump_and_replace(worker)


def _note_in_output(output: Any, text: str) -> None:
    """Append a line to the workers' output (a path, a file object, or the inherited stderr)."""
    data = text.encode("utf-8", "replace")
    try:
        fd = open_output(output) if output is not None else os.dup(2)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        pass
