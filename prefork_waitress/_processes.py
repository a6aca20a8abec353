"""The master's mechanics for worker processes: fork, read their messages, stop, kill, reap.

``Master`` (master.py) is the state machine that decides *when*; this base
class knows *how*, so each stays readable.
"""

from __future__ import annotations

import logging
import multiprocessing.context
import os
import random
import signal
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import _child, _platform
from ._commands import CommandChannel
from ._loop import EventLoop
from ._meter import RequestMeter
from ._slots import Slot, WorkerProcess

if TYPE_CHECKING:
    from ._autoreload import CodeReloader
    from ._counters import ClusterCounters
    from ._recycle import Recycler
    from ._replacing import SlotReplacer
    from ._timeouts import RequestTimeouts
    from .options import Settings

log = logging.getLogger("prefork_waitress")

IMMEDIATE_STOP_TIMEOUT = 5.0


class WorkerProcesses:
    """Forks, messages, signals and reaping of worker processes (the master's hands)."""

    settings: "Settings"
    worker_class: type
    _app: Any
    _context: multiprocessing.context.ForkContext
    _loop: EventLoop
    _slots: List[Slot]
    _processes: Dict[int, WorkerProcess]
    _commands: CommandChannel
    _io_handlers: Dict[Any, Callable[[Any], None]]
    _owned: List[Any]
    _code: Optional["CodeReloader"]
    _timeouts: "RequestTimeouts"
    _replacer: "SlotReplacer"
    _recycler: "Recycler"
    counters: "ClusterCounters"

    def _ready(self, worker: WorkerProcess, started_at: float) -> None:
        raise NotImplementedError

    def _exited(self, worker: WorkerProcess) -> None:
        raise NotImplementedError

    def _spawn(self, slot: Slot) -> WorkerProcess:
        """Fork a worker for ``slot``; it becomes the slot's current one unless told otherwise."""
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        generation = slot.next_generation()
        meter = RequestMeter()
        spec = _child.ChildSpec(
            slot_id=slot.id,
            port=slot.port,
            generation=generation,
            sock=slot.sock,
            conn=child_conn,
            app=self._app,
            worker_class=self.worker_class,
            waitress_options=dict(self.settings.waitress),
            output=self.settings.output,
            cpus=_platform.cpus_for(slot.id, self.settings.cpu_affinity),
            graceful_timeout=self.settings.graceful_timeout,
            max_requests=self._max_requests(),
            master_pid=os.getpid(),
            report_modules=self.settings.reload and not self.settings.preload,
            inherited=self._inherited() + [parent_conn],
            meter=meter,
            access_log=self.settings.access_log,
        )
        process = self._context.Process(target=_child.run, args=(spec,), name=f"prefork-worker-{slot.id}")
        process.start()
        child_conn.close()
        worker = WorkerProcess(slot, generation, process, parent_conn)
        worker.meter = meter
        self._processes[worker.pid] = worker
        self._timeouts.watch()
        self._loop.add_reader(parent_conn, lambda conn: self._receive(worker))
        self._loop.add_reader(worker.sentinel, lambda fd: self._exited(worker))
        worker.timers.append(self._loop.call_later(self.settings.boot_timeout, lambda: self._boot_timed_out(worker)))
        if slot.current is None:
            slot.current = worker
        return worker

    def _inherited(self) -> List[Any]:
        objects: List[Any] = [slot.sock for slot in self._slots]
        for process in self._processes.values():
            objects += [process.conn, process.sentinel]
        objects += self._loop.signal_sockets()
        objects += list(self._io_handlers)
        return objects + self._owned

    def _max_requests(self) -> int:
        limit = self.settings.max_requests
        if limit and self.settings.max_requests_jitter:
            limit += random.randint(0, self.settings.max_requests_jitter)
        return limit

    def _receive(self, worker: WorkerProcess) -> None:
        """Read one message from a worker's Pipe and act on it."""
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._loop.remove_reader(worker.conn)
            worker.conn.close()
            return
        kind = message[0]
        if kind == "reply":
            self._commands.store_reply(*message[1:])
        elif kind == "ready":
            self._loop.call_soon(lambda: self._ready(worker, message[2]))
        elif kind == "draining":
            self._replacer.released(worker)
        elif kind == "modules" and self._code is not None:
            self._code.adopt(message[1])
        elif kind == "recycle":
            self._loop.call_soon(lambda: self._recycler.request(worker, message[1]))
        elif kind == "boot_failed":
            worker.boot_error, worker.boot_traceback = message[1], message[2]

    def _drain_messages(self, worker: WorkerProcess) -> None:
        """Read what an exited worker sent before its sentinel fired."""
        try:
            while not worker.conn.closed and worker.conn.poll(0):
                self._receive(worker)
        except (OSError, EOFError):
            pass

    def _reap(self, worker: WorkerProcess) -> Optional[int]:
        if self._processes.pop(worker.pid, None) is None:
            return worker.process.exitcode
        worker.cancel_timers()
        self._loop.remove_reader(worker.conn)
        self._loop.remove_reader(worker.sentinel)
        worker.process.join()
        exitcode = worker.process.exitcode
        worker.conn.close()
        worker.process.close()
        if worker.meter is not None:
            self.counters.process_exited(worker.slot.id, worker.meter.counts())
            worker.meter.close()
        return exitcode

    def _stop_process(self, worker: WorkerProcess, graceful: bool, timeout: Optional[float] = None) -> None:
        """Ask a worker to leave (SIGTERM drains, SIGINT leaves now); kill it after the timeout."""
        worker.stopping = True
        if timeout is None:
            timeout = self.settings.graceful_timeout if graceful else IMMEDIATE_STOP_TIMEOUT
        try:
            os.kill(worker.pid, signal.SIGTERM if graceful else signal.SIGINT)
        except ProcessLookupError:
            return
        worker.timers.append(self._loop.call_later(timeout, lambda: self._kill(worker, timeout)))

    def _kill(self, worker: WorkerProcess, after: Optional[float] = None) -> None:
        if worker.pid not in self._processes:
            return
        if after is not None:
            log.error("worker %d (pid %d) did not stop within %.1f s; killing it", worker.slot.id, worker.pid, after)
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _boot_timed_out(self, worker: WorkerProcess) -> None:
        """A worker took longer than boot_timeout to become ready: kill it."""
        log.error(
            "worker %d (pid %d) not ready after %.1f s; killing it",
            worker.slot.id,
            worker.pid,
            self.settings.boot_timeout,
        )
        worker.boot_error = f"not ready within boot_timeout ({self.settings.boot_timeout:g} s)"
        self._kill(worker)
