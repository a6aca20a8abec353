"""The worker pool: the slots, their processes, and the hands that fork, stop, kill and reap them.

The master holds one ``WorkerPool`` and decides *when*; the pool knows *how*.
It is also the registry of states: the one place that writes ``slot.current``,
``slot.state`` and ``worker.state``, each move checked against the tables of
:mod:`.states` (an illegal one raises), and the one that reports a worker serving
its slot (``on_serving``: the ``worker_started`` hook).
Every message a worker sends goes through one table, :attr:`WorkerPool.handlers`:
messages that only record a fact (``reply``, ``boot_failed``, ``modules``) are
handled as soon as they are read, wherever that is (the loop, or a blocking
``Master.command``); messages that make the master act (``ready``, ``draining``,
``recycle``) are deferred to the loop, so they never run inside a hook.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import socket
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .._child import run as _child
from .._child.meter import RequestCounts, RequestMeter
from .._child.refork import REFORK
from .._child.spec import ChildSpec
from .._os import handoff
from .._os import platform as _platform
from .._os.accept_queue import accept_queue
from .._os.adoption import AdoptedProcess, exit_sentinel, set_child_subreaper
from .._os.limits import is_out_of_fds, out_of_fds_message
from ..options import Settings
from . import scaling
from .commands import CommandChannel
from .counters import ClusterCounters
from .loop import EventLoop
from .outbox import OutboxFull
from .slots import Slot, WorkerProcess, bind_socket, log_fields
from .states import SlotState, WorkerState, move

log = logging.getLogger("prefork_waitress")

BOOTING_STOP_TIMEOUT = 5.0  # seconds a worker not yet serving may take to leave

REFORK_TIMEOUT = 10.0  # seconds a template may take to fork (it waits up to 2 s for an idle moment)

Message = Tuple[Any, ...]
Handler = Callable[[WorkerProcess, Message], None]
Adopted = Callable[[Optional[WorkerProcess], str], None]
# start_process(slot, generation, the child's end of the Pipe) -> a started process (pid, sentinel, exitcode,
# join, close): how a worker comes to be; the default forks one that runs _child.run (tests give fakes).
StartProcess = Callable[[Slot, int, Any], Any]


class WorkerPool:
    """Slots in slot order, live processes by pid, and the message table."""

    def __init__(
        self,
        settings: Settings,
        loop: EventLoop,
        commands: CommandChannel,
        child_options: Callable[[], Dict[str, Any]],
        master_objects: Callable[[], List[Any]],
        start_process: Optional[StartProcess] = None,
        send_signal: Callable[[int, int], None] = os.kill,
    ) -> None:
        """``child_options()`` gives what each fork needs now (app, worker_class, meter, ...);
        ``master_objects()`` the master's other fds a worker must close; ``start_process`` and
        ``send_signal`` replace the fork and ``os.kill`` (tests run the pool on fake processes)."""
        self.settings = settings
        self.loop = loop
        self.commands = commands
        self._child_options = child_options
        self._master_objects = master_objects
        self._start_process = start_process
        self._send_signal = send_signal
        self._context = multiprocessing.get_context("fork")
        self.slots: List[Slot] = []
        self.processes: Dict[int, WorkerProcess] = {}
        self._reforking: List[Any] = []  # a refork's Pipe ends and memfd until the template answers
        self.counters = ClusterCounters()  # restarts by reason, reloads, exited workers' requests
        self.on_spawn: Callable[[WorkerProcess], None] = lambda worker: None
        self.on_serving: Callable[[WorkerProcess], None] = lambda worker: None  # it serves its slot now
        self.retry_delay: Callable[[int], float] = lambda failures: 1.0  # seconds after the n-th failed fork
        self.on_exit: Callable[[WorkerProcess, Optional[int]], None] = lambda worker, exitcode: None
        self.handlers: Dict[str, Tuple[Handler, bool]] = {}  # kind -> (handler, deferred)
        self.handle("reply", lambda worker, message: commands.reply(*message[1:]))
        self.handle("boot_failed", self._boot_failed)

    def handle(self, kind: str, handler: Handler, deferred: bool = False) -> None:
        """Route worker messages of ``kind`` to ``handler(worker, message)`` (deferred: from the loop)."""
        self.handlers[kind] = (handler, deferred)

    # slots ------------------------------------------------------------------
    def plan(self, n: int) -> List[Tuple[int, int]]:
        """(slot id, port) of each slot growing to ``n`` would add; ValueError for a port past 65535."""
        return scaling.plan(self.slots, n, self.settings.base_port)

    def grow(self, n: int) -> List[Slot]:
        """Add slots up to ``n``, all or none (ports checked and sockets opened first; see scaling)."""
        wanted = self.plan(n)
        added = scaling.open_slots(wanted, self.settings.host, list(self.processes.values()))
        for slot in added:
            if slot.state is SlotState.RETIRING:  # taken back: its draining worker finishes alone
                slot.current = None
                self._refresh(slot, back=True)
        self.slots.extend(added)
        return added

    def reinstate(self, slot: Slot) -> None:
        """A slot still waiting for the frontends (scale down) is wanted again: back in the pool, serving on."""
        self.slots.append(slot)
        self._refresh(slot, back=True)

    def add_slot(self, sock: Optional[socket.socket] = None) -> Slot:
        """A new slot after the last one, bound on base_port + id (or an OS-chosen port), or on ``sock``."""
        slot_id = self.slots[-1].id + 1 if self.slots else 0
        base = self.settings.base_port
        slot = Slot(slot_id, sock or bind_socket(self.settings.host, base + slot_id if base else 0))
        slot.passed = sock is not None
        self.slots.append(slot)
        return slot

    def remove_slots(self, keep: int) -> List[Slot]:
        """Take the slots after the first ``keep`` out of the pool (then :meth:`retire` each)."""
        removed, self.slots[keep:] = self.slots[keep:], []
        for slot in removed:
            move(slot, SlotState.RETIRING)
        return removed

    def retire(self, slot: Slot) -> None:
        """A slot out of the pool that no frontend sends to any more: its worker serves what still
        arrives until the port is quiet, then drains; its socket closes when it is gone."""
        if slot.state is not SlotState.CLOSED:
            move(slot, SlotState.RETIRING)
        self.cancel_respawn(slot)
        log.info(
            "retiring worker slot %d (port %d)",
            slot.id,
            slot.port,
            extra={"event": "retire", "slot": slot.id, "port": slot.port},
        )
        if slot.current is None:
            self.close_slot(slot)
        else:
            self.stop_process(slot.current, graceful=True, keep_accepting=True)

    def close_slot(self, slot: Slot) -> None:
        """A retiring slot's worker is gone: close its socket."""
        slot.sock.close()
        if slot.state is not SlotState.CLOSED:
            move(slot, SlotState.CLOSED)

    def _phase(self, slot: Slot) -> SlotState:
        """The in-pool state that ``slot``'s processes and respawn timer give it."""
        current = slot.current
        others = (p for p in self.processes.values() if p.slot is slot and p is not current)
        if any(p.state is WorkerState.BOOTING for p in others):
            return SlotState.REPLACING
        if current is None or current.state is WorkerState.EXITED:
            return SlotState.EMPTY if slot.respawn_timer is None else SlotState.BACKING_OFF
        return SlotState.STARTING if current.state is WorkerState.BOOTING else SlotState.SERVING

    def _move(self, worker: WorkerProcess, state: WorkerState) -> None:
        """Move ``worker`` (see states.WORKER_TRANSITIONS), then its slot to what that makes it."""
        if move(worker, state, slot=worker.slot.id, worker_pid=worker.pid):
            self._refresh(worker.slot)

    def _refresh(self, slot: Slot, back: bool = False) -> None:
        """Move ``slot`` to the state its processes give it (a retiring slot stays so unless taken ``back``)."""
        if back or not slot.retiring:
            move(slot, self._phase(slot), slot=slot.id)

    def all_ready(self) -> bool:
        return all(slot.current is not None and slot.current.ready for slot in self.slots)

    def promote(self, worker: WorkerProcess, purpose: str) -> Optional[WorkerProcess]:
        """``worker`` (a successor that serves) becomes its slot's worker; returns the one it replaces.

        ``purpose`` ("reload", "recycle") is the restart reason counted for the slot."""
        slot = worker.slot
        old, slot.current = slot.current, worker
        if old is not None:
            self.counters.replaced(purpose, slot.id)
        self._refresh(slot)
        self.on_serving(worker)
        return old

    def vacate(self, worker: WorkerProcess) -> bool:
        """``worker`` no longer fills its slot; True if it did."""
        if worker.slot.current is not worker:
            return False
        worker.slot.current = None
        self._refresh(worker.slot)
        return True

    def mark_ready(self, worker: WorkerProcess, started_at: float) -> bool:
        """``worker`` reported ready: it serves (False if it is gone, was asked to leave meanwhile, or said so
        already)."""
        if worker.pid not in self.processes or worker.state is not WorkerState.BOOTING:
            return False
        worker.ready_at = time.monotonic()
        move(worker, WorkerState.READY, slot=worker.slot.id, worker_pid=worker.pid)
        worker.started_at = started_at
        worker.cancel_timers()
        boot_ms = (worker.ready_at - worker.forked_at) * 1000
        log.info(
            "worker %d (pid %d, generation %d) serving on port %d, %.1f ms after fork",
            worker.slot.id,
            worker.pid,
            worker.generation,
            worker.slot.port,
            boot_ms,
            extra=log_fields(worker, "worker_ready", boot_ms=round(boot_ms, 1)),
        )
        self._refresh(worker.slot)
        if worker.slot.current is worker:
            self.on_serving(worker)
        return True

    def respawn(self, slot: Slot, reason: str, delay: float = 0.0) -> None:
        """Count a restart (``reason``: see counters.RESTART_REASONS) of an empty ``slot``; after ``delay``
        (backing off) it is empty again. The reconcile pass forks the worker of an empty slot."""
        slot.restarts += 1
        self.counters.restarted(reason, slot.id)
        if delay:
            self._retry_later(slot, delay)

    def spawn_or_retry(self, slot: Slot) -> Optional[WorkerProcess]:
        """Fork a worker for ``slot``; a failed fork (EMFILE, ENOMEM, EAGAIN) is retried with backoff."""
        try:
            worker = self.spawn(slot)
        except OSError as exc:
            slot.fork_failed = True
            slot.boot_failures += 1
            delay = self.retry_delay(slot.boot_failures)
            fields = {"event": "spawn_failed", "slot": slot.id, "port": slot.port, "error": str(exc), "retry_in": delay}
            log.error("%s; retrying in %.1f s", spawn_failure(slot, exc), delay, extra=fields)
            self._retry_later(slot, delay)
            return None
        slot.fork_failed = False
        return worker

    def _retry_later(self, slot: Slot, delay: float) -> None:
        """Back off: the slot is empty again (and forked by the reconcile pass) after ``delay``."""

        def later() -> None:
            slot.respawn_timer = None
            self._refresh(slot)

        slot.respawn_timer = self.loop.call_later(delay, later)
        self._refresh(slot)

    def request_counts(self) -> Dict[int, RequestCounts]:
        """Per slot id: exited workers' counts plus the live ones' shared meters."""
        live = [(p.slot.id, p.meter.counts()) for p in self.processes.values() if p.meter is not None]
        return self.counters.requests(live)

    def accept_queues(self) -> Dict[int, Optional[Tuple[int, int]]]:
        queues = {}
        for slot in self.slots:
            length, limit = accept_queue(slot.sock)
            queues[slot.id] = None if length is None or limit is None else (length, limit)
        return queues

    def cancel_respawn(self, slot: Slot) -> None:
        if slot.respawn_timer is not None:
            slot.respawn_timer.cancel()
            slot.respawn_timer = None
            self._refresh(slot)

    # processes ----------------------------------------------------------------
    def spawn(self, slot: Slot) -> WorkerProcess:
        """Fork a worker for ``slot``; it becomes the slot's current one if the slot has none.

        Raises OSError (EMFILE, ENOMEM, EAGAIN) with nothing left open when the fork or its setup fails.
        """
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        options: Dict[str, Any] = {}
        try:
            options = self._child_options()
            if self._start_process is not None:
                generation = slot.next_generation()
                process = self._start_process(slot, generation, child_conn)
            else:
                generation, process = self._fork(slot, parent_conn, child_conn, options)
        except BaseException:
            for obj in (parent_conn, child_conn, options.get("meter")):
                if obj is not None:
                    obj.close()
            raise
        child_conn.close()
        worker = WorkerProcess(slot, generation, process, parent_conn, self.loop)
        if self._start_process is None:
            worker.sentinel = exit_sentinel(worker.pid, process.sentinel)
        return self._add(worker, options.get("meter"))

    def _add(self, worker: WorkerProcess, meter: Optional[RequestMeter]) -> WorkerProcess:
        """Watch a new process: its Pipe, its sentinel, its boot deadline; fill its slot if empty."""
        worker.meter = meter
        self.processes[worker.pid] = worker
        self.loop.add_reader(worker.conn, lambda conn: self.receive(worker))
        self.loop.add_reader(worker.sentinel, lambda fd: self._exited(worker))
        boot_timeout = self.settings.boot_timeout
        worker.timers.append(self.loop.call_later(boot_timeout, lambda: self._boot_timed_out(worker)))
        if worker.slot.current is None:
            worker.slot.current = worker
        self._refresh(worker.slot)
        self.on_spawn(worker)
        return worker

    def fork_from(self, template: WorkerProcess, slot: Slot, done: Adopted, refork_generation: int = 1) -> None:
        """Have ``template`` fork a worker for ``slot`` (see _child.refork); ``done(worker, "")`` once the
        master has adopted it, ``done(None, why)`` if there is none. OSError if the Pipe or meter cannot be made.
        The new worker is of ``refork_generation``.

        The master is a child subreaper only while the template forks, so that process becomes its
        child, and the orphans of other workers' own children still go to init."""
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        try:
            meter = RequestMeter.in_memfd()
        except BaseException:
            parent_conn.close()
            child_conn.close()
            raise
        generation = slot.next_generation()
        cpus = _platform.cpus_for(slot.id, self.settings.cpu_affinity)
        order = (slot.id, slot.port, generation, cpus, self._max_requests())

        handed = [parent_conn, child_conn, meter.fd]

        def replied(replies: Dict[int, Any]) -> None:
            set_child_subreaper(False)
            self._reforking = [obj for obj in self._reforking if obj not in handed]
            child_conn.close()
            meter.close_fd()
            reply = replies.get(template.slot.id)
            try:
                if not isinstance(reply, int):
                    raise OSError(str(reply))
                process = AdoptedProcess(reply)
            except OSError as exc:
                parent_conn.close()
                meter.close()
                done(None, str(exc))
                return
            worker = WorkerProcess(slot, generation, process, parent_conn, self.loop, template.pid, refork_generation)
            done(self._add(worker, meter), "")

        self._reforking += handed  # a worker the master forks meanwhile must not keep them
        set_child_subreaper(True)
        fds = [slot.sock.fileno(), child_conn.fileno(), meter.fd]
        self.commands.send([template.slot], REFORK, (order,), REFORK_TIMEOUT, replied, fds=fds)

    def _fork(self, slot: Slot, parent_conn: Any, child_conn: Any, options: Dict[str, Any]) -> Tuple[int, Any]:
        generation = slot.next_generation()
        spec = ChildSpec(
            slot_id=slot.id,
            port=slot.port,
            generation=generation,
            sock=slot.sock,
            conn=child_conn,
            waitress_options=dict(self.settings.waitress),
            output=self.settings.output,
            cpus=_platform.cpus_for(slot.id, self.settings.cpu_affinity),
            graceful_timeout=self.settings.graceful_timeout,
            max_requests=self._max_requests(),
            max_rss=self.settings.max_rss,
            refork_after=self.settings.refork_after,
            freeze=self.settings.gc_freeze,
            master_pid=os.getpid(),
            inherited=self._inherited() + [parent_conn],
            access_log=self.settings.access_log,
            access_log_format=self.settings.access_log_format,
            **options,
        )
        process = self._context.Process(target=_child.run, args=(spec,), name=f"prefork-worker-{slot.id}")
        # A signal for the master arriving during the fork would run the
        # master's handler in the child; a stop sent to the new child before it
        # resets its handlers would be lost. Both stay pending until each side is ready.
        with _platform.signals_blocked(_platform.handled_signals()):
            process.start()
        return generation, process

    def _inherited(self) -> List[Any]:
        objects: List[Any] = [slot.sock for slot in self.slots]
        for process in self.processes.values():
            objects += [process.conn, *{process.sentinel, process.process.sentinel}]
        return objects + self._reforking + self.loop.signal_sockets() + self._master_objects()

    def _max_requests(self) -> int:
        limit: int = self.settings.max_requests
        if limit and self.settings.max_requests_jitter:
            limit += random.randint(0, self.settings.max_requests_jitter)
        return limit

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
        entry = self.handlers.get(message[0])
        if entry is None:
            log.warning("worker %d sent an unknown message %r; ignored", worker.slot.id, message[0])
            return
        handler, deferred = entry
        if deferred:
            self.loop.call_soon(lambda: handler(worker, message))
        else:
            handler(worker, message)

    @staticmethod
    def _boot_failed(worker: WorkerProcess, message: Message) -> None:
        worker.boot_error, worker.boot_traceback = message[1], message[2]

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
        if self.processes.pop(worker.pid, None) is None:
            return worker.process.exitcode
        if leaving:
            move(worker, WorkerState.EXITED)
        else:
            self._move(worker, WorkerState.EXITED)
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
        retire = keep_accepting and worker.state is not WorkerState.STOPPING and self._tell(worker, ("retire",))
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
    def _tell(worker: WorkerProcess, message: Message) -> bool:
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


def spawn_failure(slot: Slot, exc: OSError) -> str:
    """One line saying why no worker could be forked for ``slot`` (naming the fd limit if that was it)."""
    doing = f"cannot fork a worker for slot {slot.id} (port {slot.port})"
    return out_of_fds_message(doing, exc) if is_out_of_fds(exc) else f"{doing}: {exc.strerror or exc}"
