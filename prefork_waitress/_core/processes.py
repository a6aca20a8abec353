"""The hands on the worker processes: read their messages, stop, kill and reap them.

:class:`ProcessHands` extends the registry (:mod:`.registry`) with what acts on
processes already forked; forking them is :mod:`.pool`'s part. Every message a
worker sends goes through one table (:mod:`.dispatch`), keyed by its type
(:mod:`.._wire.messages`): messages that only record a fact (``Reply``,
``BootFailed``, ``Modules``) are handled as soon as they are read, wherever that is
(the loop, or a blocking ``Master.command``); messages that make the master act
(``Ready``, ``Draining``, ``Recycle``, ``Warm``) are deferred to the loop, so they
never run inside a hook.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable, Iterable, Optional, Tuple, Type, TypeVar

from .._os import handoff
from .._os.adoption import set_child_subreaper
from .._wire.messages import BootFailed, Reply, Retire
from ..options import Settings
from .commands import CommandChannel
from .dispatch import MessageTable
from .loop import EventLoop
from .outbox import OutboxFull
from .registry import SlotRegistry
from .slots import Slot, WorkerProcess, log_fields
from .states import WorkerState

log = logging.getLogger("prefork_waitress")

BOOTING_STOP_TIMEOUT = 5.0  # seconds a worker not yet serving may take to leave

M = TypeVar("M", bound=Tuple[Any, ...])  # a message type of _wire.messages (a NamedTuple)


class ProcessHands(SlotRegistry):
    """The registry, plus reading, signalling and reaping its processes."""

    def __init__(
        self,
        settings: Settings,
        loop: EventLoop,
        commands: CommandChannel,
        send_signal: Callable[[int, int], None] = os.kill,
    ) -> None:
        super().__init__(settings, loop)
        self.commands = commands
        self._send_signal = send_signal
        self.messages = MessageTable(loop.call_soon)
        self.on_exit: Callable[[WorkerProcess, Optional[int]], None] = lambda worker, exitcode: None
        self.handle(Reply, lambda worker, reply: commands.reply(reply.seq, reply.ok, reply.result))
        self.handle(BootFailed, self._boot_failed)

    def handle(self, kind: Type[M], handler: Callable[[WorkerProcess, M], None], deferred: bool = False) -> None:
        """Route worker messages of type ``kind`` to ``handler(worker, message)`` (deferred: from the loop)."""
        self.messages.handle(kind, handler, deferred)

    def receive(self, worker: WorkerProcess) -> None:
        """Read one message from a worker's Pipe and dispatch it through the table.

        The poll first: a blocking command run by an earlier callback of the same
        loop turn may already have read what made this Pipe readable.
        """
        try:
            if not worker.conn.poll():
                return
            message = worker.conn.recv()
        except (EOFError, OSError):
            self.loop.remove_reader(worker.conn)
            worker.outbox.close()
            worker.conn.close()
            return
        self.messages.dispatch(worker, message)

    @staticmethod
    def _boot_failed(worker: WorkerProcess, message: BootFailed) -> None:
        worker.boot_error, worker.boot_traceback = message.message, message.traceback

    def _exited(self, worker: WorkerProcess) -> None:
        """A worker's sentinel fired: read what it sent last, reap it, settle its commands, tell the master."""
        try:
            while not worker.conn.closed and worker.conn.poll(0):
                self.receive(worker)
        except (OSError, EOFError):
            pass
        exitcode = self.reap(worker)
        self.commands.worker_exited(worker)
        self.on_exit(worker, exitcode)

    def reap(self, worker: WorkerProcess, leaving: bool = False) -> Optional[int]:
        """Collect an exited worker (``leaving``: the master is, so its slot's state no longer matters)."""
        if not self._leave(worker, leaving):
            return worker.process.exitcode
        worker.cancel_timers()
        worker.outbox.close()
        self.loop.remove_reader(worker.conn)
        self.loop.remove_reader(worker.sentinel)
        worker.process.join()
        exitcode = worker.process.exitcode
        worker.conn.close()
        if worker.sentinel != worker.process.sentinel:
            os.close(worker.sentinel)  # the pidfd (exit_sentinel)
        worker.process.close()
        if worker.meter is not None:
            self.counters.process_exited(worker.slot.id, worker.meter.counts())
            worker.meter.close()
        return exitcode

    def retire(self, slot: Slot) -> None:
        """A slot out of the pool that no frontend sends to any more: its worker serves what still
        arrives until the port is quiet, then drains; its socket closes when it is gone."""
        self._retiring(slot)
        self.cancel_respawn(slot)
        log.info(
            "retiring worker slot %d (port %d)",
            slot.id,
            slot.port,
            extra={"event": "retire", "slot": slot.id, "port": slot.port},
        )
        if slot.current is None:
            self.close_if_vacant(slot)
        else:
            self.stop_process(slot.current, graceful=True, keep_accepting=True)

    def stop_process(
        self, worker: WorkerProcess, graceful: bool, timeout: Optional[float] = None, keep_accepting: bool = False
    ) -> None:
        """Ask a worker to leave (SIGTERM drains; not graceful: SIGKILL); kill it after the timeout.

        A worker still booting has no request to finish (SIGTERM ends it at
        once unless its app traps it), so it gets the short timeout, never
        graceful_timeout. Workers ignore SIGINT and SIGQUIT (the terminal's).
        ``keep_accepting`` (a retiring slot: no successor shares its socket): the
        worker is told over its Pipe to serve on until its port has been quiet.
        """
        if worker.state is WorkerState.EXITED:
            return
        if not graceful:
            self._move(worker, WorkerState.STOPPING)
            self.kill(worker)
            return
        if timeout is None:
            # A retiring worker serves on (graceful_timeout / 2 at most) even if it was still booting.
            timeout = self.settings.graceful_timeout if worker.ready or keep_accepting else BOOTING_STOP_TIMEOUT
        # One already stopping has stopped accepting: it cannot be told to accept on.
        retire = keep_accepting and worker.state is not WorkerState.STOPPING and self._tell(worker, Retire())
        self._move(worker, WorkerState.RETIRING if retire else WorkerState.STOPPING)
        if not retire and not self._terminate(worker):
            return
        worker.timers.append(self.loop.call_later(timeout, lambda: self.kill(worker, timeout)))

    def settle_slot(self, worker: WorkerProcess) -> None:
        """``worker`` serves its slot: a process of the slot still accepting as a retiring one (the slot
        was scaled down and taken back) stops accepting now and drains, so one process serves the port."""
        for other in list(self.processes.values()):
            if other.slot is worker.slot and other is not worker and other.keeps_accepting:
                self._move(other, WorkerState.STOPPING)
                self._terminate(other)  # its kill timer (graceful_timeout) still stands

    def _terminate(self, worker: WorkerProcess) -> bool:
        try:
            self._send_signal(worker.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    @staticmethod
    def _tell(worker: WorkerProcess, message: Any) -> bool:
        """Send ``message`` if the worker's Pipe takes it now; never block on one that does not read."""
        try:
            queued = worker.outbox.send(message)
        except (OSError, EOFError, ValueError, OutboxFull):
            return False
        if queued is not None:  # not reading its Pipe (frozen, or busy with big commands): a signal instead
            worker.outbox.discard(queued)
            return False
        return True

    def stop_all(self, graceful: bool, keep: Iterable[Optional[WorkerProcess]] = ()) -> None:
        """Stop every process but those in ``keep``.

        Gracefully, each slot's serving worker drains as a retiring one does: it serves
        what is queued and still arriving until its port is quiet (the master keeps the
        sockets open until the workers are gone), so a stop resets no queued connection;
        except on a socket passed in, whose queue waits for the next master.
        """
        kept = set(keep)
        for process in list(self.processes.values()):
            if process not in kept:
                self.stop_process(process, graceful, keep_accepting=self.drains_queue(process))

    @staticmethod
    def drains_queue(worker: WorkerProcess) -> bool:
        """On a stop: the ready worker of a slot whose socket (and queue) closes with this master."""
        shared = worker.slot.passed or handoff.sockets_shared()  # systemd or an upgrade's other master keeps it
        return worker.ready and worker.slot.current is worker and not shared

    def kill(self, worker: WorkerProcess, after: Optional[float] = None) -> None:
        if worker.pid not in self.processes:
            return
        if after is not None:
            fields = log_fields(worker, "kill", reason="graceful_timeout")
            log.error(
                "worker %d (pid %d) did not stop within %.1f s; killing it",
                worker.slot.id,
                worker.pid,
                after,
                extra=fields,
            )
        try:
            self._send_signal(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """The master is leaving: kill and reap what is left, close every socket."""
        if self.settings.refork_after:
            set_child_subreaper(False)  # a refork cut short by the stop leaves the process as it found it
        for process in list(self.processes.values()):
            self.kill(process)
            self.reap(process, leaving=True)
            process.slot.sock.close()  # a retiring slot is no longer in self.slots
        for slot in self.slots:
            slot.sock.close()

    def _boot_timed_out(self, worker: WorkerProcess) -> None:
        """A worker took longer than boot_timeout to become ready: kill it."""
        timeout = self.settings.boot_timeout
        fields = log_fields(worker, "kill", reason="boot_timeout")
        log.error(
            "worker %d (pid %d) not ready after %.1f s; killing it", worker.slot.id, worker.pid, timeout, extra=fields
        )
        worker.boot_error = f"not ready within boot_timeout ({timeout:g} s)"
        self.kill(worker)
