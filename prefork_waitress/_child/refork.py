"""A warm worker as a template: it forks a new worker for another slot, which the master adopts.

The master sends the template the command :data:`~.._wire.messages.REFORK` with
a :class:`~.._wire.messages.ReforkOrder` (the new slot's facts) and,
as SCM_RIGHTS right behind it, three fds: the slot's listening socket, the
worker's end of a new Pipe and the memory file of its meter. The command
thread hands the fork to the loop thread (see :mod:`.idle_calls` for why),
which, at a turn with no request in flight, forks an intermediate process
that forks the new worker and exits at once, so the new worker is
re-parented to the master (a child subreaper for the duration); the
template replies with the new worker's pid.

With ``gc_freeze`` the template collects and freezes its heap before each
fork, so neither its own collections nor the new workers' ever traverse
(and so copy) what they share. The new worker starts from a copy of the
template's warm heap: it closes the template's sockets, takes the new
slot's, and boots as any worker does (``Worker`` built anew, ``on_start``
run) but without importing the app.
"""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import time
import warnings
from multiprocessing.connection import Connection
from typing import Any, Callable, List, NoReturn

from .._os import platform as _platform
from .._os.adoption import receive_fds
from .._os.loading import read_until_eof
from .._os.memory import freeze_heap
from .._os.output import forget_reopeners
from .._wire.messages import REFORK_FDS, ReforkOrder
from .._wire.meter import RequestMeter
from .._wire.spec import ChildSpec
from ._waitress_server import DrainableServer

IDLE_WAIT = 2.0  # seconds the template waits for a loop turn with no request in flight
REPARENT_WAIT = 5.0  # seconds the new worker waits for its intermediate parent to exit


class Template:
    """The refork command of one worker: what it knows of itself, to fork a stranger from it."""

    def __init__(
        self,
        spec: ChildSpec,
        app: Any,
        server: DrainableServer,
        own: Callable[[], List[Any]],
        boot: Callable[[ChildSpec], NoReturn],
    ) -> None:
        """``own()``: this worker's other open objects (access log); ``boot(spec)``: run a worker
        process (never returns)."""
        self.spec = spec
        self.app = app
        self.server = server
        self.own = own
        self.boot = boot

    def fork(self, order: ReforkOrder) -> int:
        """Receive the fds, fork the new worker from the loop thread once idle; returns its pid."""
        fds = receive_fds(self.spec.conn.fileno(), REFORK_FDS)
        try:
            return int(self.server.call_when_idle(lambda: self._fork(order, fds), IDLE_WAIT))
        finally:
            for fd in fds:
                os.close(fd)

    def _fork(self, order: ReforkOrder, fds: List[int]) -> int:
        """On the loop thread, with no request in flight (none holds the app's locks at the fork)."""
        if self.spec.freeze:
            # Garbage out, then freeze what the reforked workers will share: the template's own
            # collections (before the next fork, too) then traverse, so copy, none of it.
            freeze_heap()
        return self._double_fork(order, fds)

    def _double_fork(self, order: ReforkOrder, fds: List[int]) -> int:
        read_end, write_end = os.pipe()
        # A stop signal the master sends the new worker before it has reset the template's handlers
        # would run the template's stop (the new worker would boot on, deaf to it): hold them pending
        # until the new worker's own dispositions are in place (it unblocks them then, as any worker).
        with warnings.catch_warnings(), _platform.signals_blocked(_platform.handled_signals()):
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            intermediate = os.fork()
            if intermediate == 0:
                os.close(read_end)
                try:
                    pid = os.fork()
                    if pid == 0:
                        os.close(write_end)
                        self._become_worker(order, fds)
                    os.write(write_end, str(pid).encode())
                finally:
                    os._exit(0)
        os.close(write_end)
        try:
            answer = read_until_eof(read_end, time.monotonic() + REPARENT_WAIT)
        finally:
            os.close(read_end)
            os.waitpid(intermediate, 0)
        if not answer:
            raise OSError("the intermediate process could not fork the new worker")
        return int(answer)

    def _become_worker(self, order: ReforkOrder, fds: List[int]) -> NoReturn:
        """In the new worker: wait to be the master's child, drop the template's fds, boot."""
        try:
            master_pid = self.spec.master_pid
            _wait_for_reparenting(master_pid)
            sock_fd, conn_fd, meter_fd = fds
            meter = RequestMeter(meter_fd)
            os.close(meter_fd)
            self.server.abandon()
            forget_reopeners()
            spec = dataclasses.replace(
                self.spec,
                slot_id=order.slot_id,
                port=order.port,
                generation=order.generation,
                sock=socket.socket(fileno=sock_fd),
                conn=Connection(conn_fd),
                app=self.app,
                cpus=order.cpus,
                max_requests=order.max_requests,
                meter=meter,
                inherited=[self.spec.conn, self.spec.sock, *self.own()],
            )
        except BaseException:
            os._exit(4)
        self.boot(spec)


def _wait_for_reparenting(master_pid: int) -> None:
    """Until the intermediate process has exited (its pidfd turns readable after the re-parenting)."""
    parent = os.getppid()
    if parent == master_pid:
        return
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [], REPARENT_WAIT)
    finally:
        os.close(pidfd)
