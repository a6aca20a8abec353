"""The worker pool: the slots, their processes, and the hands that fork, stop, kill and reap them.

The master holds one ``WorkerPool`` and decides *when*; the pool knows *how*.
It is built in three layers, one module each:

- :mod:`.registry` (``SlotRegistry``): the slots and processes, and every state
  transition: the one module that writes ``slot.current``, ``slot.state`` and
  ``worker.state``, and reports a worker serving its slot (``on_serving``);
- :mod:`.processes` (``ProcessHands``): the message table (:mod:`.dispatch`, keyed by
  the types of :mod:`.._wire.messages`), stopping, killing and reaping;
- this module (``WorkerPool``): how a worker comes to be, forked by the master
  (running the entry point the master injects, ``child_main``) or by a template
  worker and adopted (refork).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
from typing import Any, Callable, Dict, List, Optional, Tuple

from .._os import platform as _platform
from .._os.adoption import AdoptedProcess, exit_sentinel, set_child_subreaper
from .._os.limits import is_out_of_fds, out_of_fds_message
from .._wire.messages import REFORK, ReforkOrder
from .._wire.meter import RequestMeter
from .._wire.spec import ChildSpec
from ..options import Settings
from .commands import CommandChannel
from .loop import EventLoop
from .processes import ProcessHands
from .slots import Slot, WorkerProcess

log = logging.getLogger("prefork_waitress")

REFORK_TIMEOUT = 10.0  # seconds a template may take to fork (it waits up to 2 s for an idle moment)

Adopted = Callable[[Optional[WorkerProcess], str], None]
# start_process(slot, generation, the child's end of the Pipe) -> a started process (pid, sentinel, exitcode,
# join, close): how a worker comes to be; the default forks one that runs child_main (tests give fakes).
StartProcess = Callable[[Slot, int, Any], Any]
ChildMain = Callable[[ChildSpec], Any]  # a worker process's entry point (the master gives _child.run.run)


class WorkerPool(ProcessHands):
    """Slots in slot order, live processes by pid, the message table, and the forks."""

    def __init__(
        self,
        settings: Settings,
        loop: EventLoop,
        commands: CommandChannel,
        child_options: Callable[[], Dict[str, Any]],
        master_objects: Callable[[], List[Any]],
        start_process: Optional[StartProcess] = None,
        send_signal: Callable[[int, int], None] = os.kill,
        child_main: Optional[ChildMain] = None,
    ) -> None:
        """``child_options()`` gives what each fork needs now (app, worker_class, meter, ...);
        ``master_objects()`` the master's other fds a worker must close; ``child_main(spec)`` is what a
        forked worker runs; ``start_process`` and ``send_signal`` replace the fork and ``os.kill`` (tests
        run the pool on fake processes)."""
        if child_main is None and start_process is None:
            raise TypeError("WorkerPool needs child_main (a worker's entry point) or start_process")
        super().__init__(settings, loop, commands, send_signal)
        self._child_options = child_options
        self._master_objects = master_objects
        self._start_process = start_process
        self._child_main = child_main
        self._context = multiprocessing.get_context("fork")
        self._reforking: List[Any] = []  # a refork's Pipe ends and memfd until the template answers
        self.on_spawn: Callable[[WorkerProcess], None] = lambda worker: None

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
        self._enter(worker)
        self.loop.add_reader(worker.conn, lambda conn: self.receive(worker))
        self.loop.add_reader(worker.sentinel, lambda fd: self._exited(worker))
        boot_timeout = self.settings.boot_timeout
        worker.timers.append(self.loop.call_later(boot_timeout, lambda: self._boot_timed_out(worker)))
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
        order = ReforkOrder(slot.id, slot.port, generation, cpus, self._max_requests())

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
            inline_tasks=self.settings.inline_tasks,
            master_pid=os.getpid(),
            inherited=self._inherited() + [parent_conn],
            access_log=self.settings.access_log,
            access_log_format=self.settings.access_log_format,
            **options,
        )
        process = self._context.Process(target=self._child_main, args=(spec,), name=f"prefork-worker-{slot.id}")
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


def spawn_failure(slot: Slot, exc: OSError) -> str:
    """One line saying why no worker could be forked for ``slot`` (naming the fd limit if that was it)."""
    doing = f"cannot fork a worker for slot {slot.id} (port {slot.port})"
    return out_of_fds_message(doing, exc) if is_out_of_fds(exc) else f"{doing}: {exc.strerror or exc}"
