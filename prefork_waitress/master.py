"""The Master: one thread, one event loop, one state machine over the worker slots."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import time
from typing import Any, Callable, Dict, List, Optional

from . import _integrations
from ._autoreload import CodeReloader
from ._backoff import CrashLoops
from ._commands import CommandChannel, targets
from ._counters import ClusterCounters
from ._loading import AppImportError, resolve
from ._loop import EventLoop
from ._meter import RequestCounts
from ._pidfile import PidFile
from ._platform import listen_queue
from ._processes import WorkerProcesses
from ._recycle import Recycler
from ._replacing import SlotReplacer
from ._rolling import RollingReload
from ._slots import Slot, WorkerInfo, WorkerProcess, bind_socket, describe_exit
from ._timeouts import RequestTimeouts
from .errors import BootError
from .options import Settings, make_settings
from .reloading import ReloadError
from .worker import Worker

log = logging.getLogger("prefork_waitress")

NEW, BOOTING, RUNNING, STOPPING, STOPPED = "new", "booting", "running", "stopping", "stopped"


class Master(WorkerProcesses):
    """Runs ``app`` in ``workers`` waitress processes, one port each, and keeps them up."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.settings: Settings = make_settings(**options)
        if not (callable(app) or isinstance(app, str)):
            raise TypeError(f"app: expected a WSGI callable or a 'module:attr' string, got {app!r}")
        if self.settings.reload and not isinstance(app, str):
            raise ValueError("option reload: needs the app as a 'package.module:attr' string, to know its files")
        self.app_spec: Any = app
        self._app: Any = app
        self._code: Optional[CodeReloader] = None
        if isinstance(app, str) and (self.settings.preload or self.settings.reload):
            self._code = CodeReloader(self, app, watch=self.settings.reload)
        self.worker_class = self.settings.worker_class or Worker
        self._context = multiprocessing.get_context("fork")
        self._loop = EventLoop()
        self._slots: List[Slot] = []
        self._processes: Dict[int, WorkerProcess] = {}
        self._commands = CommandChannel()
        self._io_handlers: Dict[Any, Callable[[Any], None]] = {}
        self._listeners: List[Any] = []
        self._owned: List[Any] = []  # other master-only objects a worker must close
        self._pidfile = PidFile(self.settings.pidfile) if self.settings.pidfile else None
        self._state = NEW
        self._boot_error: Optional[str] = None
        self._rolling = RollingReload(self)
        self._crashes = CrashLoops()
        self._timeouts = RequestTimeouts(self, self.settings.request_timeout)
        self._replacer = SlotReplacer(self)
        self._recycler = Recycler(self)
        self._pending_ports: bool = False
        self.counters = ClusterCounters()  # restarts by reason, reloads, exited workers' requests
        self.add_listener(self.counters)
        self._install_default_signals()
        _integrations.attach(self)

    # public state ---------------------------------------------------------
    @property
    def workers(self) -> List[WorkerInfo]:
        """One WorkerInfo per slot, in slot order (pid None while respawning)."""
        return [slot.info() for slot in self._slots]

    @property
    def ports(self) -> List[int]:
        """The ports of the slots, in slot order."""
        return [slot.port for slot in self._slots]

    @property
    def state(self) -> str:
        return self._state

    def status(self) -> Dict[str, Any]:
        """A JSON-able snapshot of the master and its slots (control socket, monitoring)."""
        return {
            "master": {
                "pid": os.getpid(),
                "state": self._state,
                "workers": len(self._slots),
                "host": self.settings.host,
                "ports": self.ports,
                "reloading": self._rolling.active,
            },
            "workers": [dataclasses.asdict(info) for info in self.workers],
        }

    def request_counts(self) -> Dict[int, RequestCounts]:
        """Per slot id: what its workers served since the master started (live ones from shared memory)."""
        live = [(p.slot.id, p.meter.counts()) for p in self._processes.values() if p.meter is not None]
        return self.counters.requests(live)

    def accept_queues(self) -> Dict[int, Any]:
        """Per slot id: (connections waiting in the accept queue, its limit), or None where unknown."""
        return {slot.id: listen_queue(slot.sock) for slot in self._slots}

    # hooks (override in a subclass; all run in the master loop) -----------
    def when_ready(self) -> None:
        """Every slot is serving, once, at start."""

    def worker_started(self, info: WorkerInfo) -> None:
        """A worker reported ready: it serves on ``info.port``."""

    def worker_exited(self, info: WorkerInfo, exitcode: Optional[int]) -> None:
        """The process ``info`` describes has exited (negative exitcode: a signal)."""

    def ports_changed(self, ports: List[int]) -> None:
        """The set of ports changed (scale)."""

    def reloading(self) -> None:
        """A rolling reload begins."""

    def reloaded(self, ok: bool) -> None:
        """A rolling reload finished (True) or was abandoned (False)."""

    def stopping(self) -> None:
        """The master begins to stop."""

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every listener (built-in integrations) then on this master."""
        for listener in self._listeners:
            method = getattr(listener, hook, None)
            if method is not None:
                self._loop._guarded(method, *args)
        self._loop._guarded(getattr(self, hook), *args)

    def add_listener(self, listener: Any) -> None:
        """Attach an object whose hook-named methods run before the master's own hooks.

        Integrations (systemd, control socket, upstream file) use this, so they
        work whether or not a subclass calls ``super()`` in its hooks.
        """
        self._listeners.append(listener)

    # control --------------------------------------------------------------
    def add_io_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Run ``callback(fileobj)`` in the master loop whenever ``fileobj`` is readable."""
        if not (isinstance(fileobj, int) or hasattr(fileobj, "fileno")):
            raise TypeError(f"add_io_handler: {fileobj!r} has no fileno()")
        self._io_handlers[fileobj] = callback
        self._loop.add_reader(fileobj, callback)

    def remove_io_handler(self, fileobj: Any) -> None:
        self._io_handlers.pop(fileobj, None)
        self._loop.remove_reader(fileobj)

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback()`` in the master loop when ``signum`` arrives (replaces the default)."""
        self._loop.add_signal(signum, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        """Run ``callback()`` in the master loop after ``delay`` seconds; returns a cancellable timer."""
        return self._loop.call_later(delay, callback)

    def own(self, obj: Any) -> None:
        """Mark an fd or object as the master's, so every worker closes its copy."""
        self._owned.append(obj)

    def _install_default_signals(self) -> None:
        self._loop.add_signal(signal.SIGTERM, self.stop)
        self._loop.add_signal(signal.SIGINT, self.stop)
        self._loop.add_signal(signal.SIGQUIT, lambda: self.stop(graceful=False))

    # lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Bind, fork the workers, and run the event loop until stopped."""
        if self._state != NEW:
            raise RuntimeError("a Master can be started once")
        self._state = BOOTING
        try:
            self._prepare()
            for slot in self._slots:
                self._spawn(slot)
            while self._state != STOPPED:
                self._loop.run_once()
                if self._state == STOPPING and not self._processes:
                    self._state = STOPPED
        finally:
            self._cleanup()
        if self._boot_error is not None:
            raise BootError(f"the app could not start: {self._boot_error}")

    def _prepare(self) -> None:
        """Everything that can fail before a fork: pid file, sockets, preload."""
        if self._pidfile is not None:
            self._pidfile.create()
        base = self.settings.base_port
        for slot_id in range(self.settings.workers):
            self._add_slot(slot_id, base + slot_id if base else 0)
        if self.settings.preload:
            try:
                self._app = self._code.load_app() if self._code else self.load_app()
            except (AppImportError, ReloadError) as exc:
                raise BootError(f"the app could not start: {exc}") from exc
        self._loop.open_signals()
        if self._code is not None:
            self._code.start_watching()
        self._tell_listeners("starting", guarded=False)

    def _tell_listeners(self, point: str, guarded: bool) -> None:
        """Internal points for integrations only: "starting" (sockets bound, before the
        first fork; raising aborts the start) and "stopped" (after the last worker)."""
        for listener in self._listeners:
            method = getattr(listener, point, None)
            if method is None:
                continue
            if guarded:
                self._loop._guarded(method)
            else:
                method()

    def load_app(self) -> Any:
        """Resolve the app in the master (preload); raises AppImportError with the cause."""
        if not isinstance(self.app_spec, str):
            return self.app_spec
        try:
            return resolve(self.app_spec)
        except AppImportError:
            raise
        except Exception as exc:
            raise AppImportError(f"cannot load {self.app_spec!r}: {type(exc).__name__}: {exc}") from exc

    def reload_code(self) -> None:
        """Before a rolling reload: in preload mode, import the app's code again."""
        if self.settings.preload and self._code is not None:
            self._app = self._code.load_app()

    def _add_slot(self, slot_id: int, port: int) -> Slot:
        slot = Slot(slot_id, bind_socket(self.settings.host, port))
        self._slots.append(slot)
        return slot

    def _cleanup(self) -> None:
        for process in list(self._processes.values()):
            self._kill(process)
            self._reap(process)
            process.slot.sock.close()  # a retiring slot is no longer in _slots
        for slot in self._slots:
            slot.sock.close()
        self._timeouts.stop()
        self._loop.close_signals()
        if self._code is not None:
            self._code.stop_watching()
        if self._pidfile is not None:
            self._pidfile.remove()
        self._tell_listeners("stopped", guarded=True)
        self._state = STOPPED

    def stop(self, graceful: bool = True) -> None:
        """Stop every worker (gracefully: finish in-flight requests) and leave start()."""
        if self._state in (NEW, STOPPED):
            return
        if self._state == STOPPING:
            if not graceful:
                for process in list(self._processes.values()):
                    self._stop_process(process, graceful=False)
            return
        log.info("stopping %s", "gracefully" if graceful else "at once")
        self._state = STOPPING
        self._rolling.abandon("the master is stopping")
        self._recycler.abandon()
        self._replacer.abandon()
        self.emit("stopping")
        for slot in self._slots:
            if slot.respawn_timer is not None:
                slot.respawn_timer.cancel()
        for process in list(self._processes.values()):
            self._stop_process(process, graceful)

    def reload(self) -> None:
        """Rolling restart: each slot gets a new worker, then its old one is stopped."""
        self._rolling.request()

    def scale(self, n: int) -> None:
        """Grow to ``n`` slots on the next ports, or gracefully retire the highest ones."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"scale: expected a whole number of workers >= 1, got {n!r}")
        if self._state not in (BOOTING, RUNNING):
            raise RuntimeError(f"scale: the master is {self._state}")
        while len(self._slots) < n:
            slot_id = self._slots[-1].id + 1 if self._slots else 0
            base = self.settings.base_port
            self._add_slot(slot_id, base + slot_id if base else 0)
            self._pending_ports = True
            self._spawn(self._slots[-1])
        retiring = self._slots[n:]
        if retiring:
            del self._slots[n:]
            self.emit("ports_changed", self.ports)
        for slot in retiring:
            self._retire(slot)
        if self._pending_ports:
            self._maybe_announce_ports()

    def _retire(self, slot: Slot) -> None:
        slot.retiring = True
        if slot.respawn_timer is not None:
            slot.respawn_timer.cancel()
        log.info("retiring worker slot %d (port %d)", slot.id, slot.port)
        if slot.current is None:
            slot.sock.close()
        else:
            self._stop_process(slot.current, graceful=True)

    def command(self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0) -> Dict[int, Any]:
        """Run command ``name`` in every worker (or slot ``worker``); replies by slot id."""
        chosen = targets(self._slots, worker)
        results, pending = self._commands.send(chosen, name, args)
        results.update(self._commands.collect(pending, name, timeout, self._drain_messages))
        return {slot.id: results[slot.id] for slot in chosen}

    # processes ------------------------------------------------------------
    def _ready(self, worker: WorkerProcess, started_at: float) -> None:
        if worker.pid not in self._processes or worker.stopping:
            return
        worker.ready = True
        worker.started_at = started_at
        self._crashes.recovered(worker.slot)
        worker.cancel_timers()
        log.info(
            "worker %d (pid %d, generation %d) serving on port %d, %.1f ms after fork",
            worker.slot.id,
            worker.pid,
            worker.generation,
            worker.slot.port,
            (time.monotonic() - worker.forked_at) * 1000,
        )
        if self._replacer.successor_ready(worker):
            return
        self.emit("worker_started", worker.info())
        self._after_ready()

    def _after_ready(self) -> None:
        if self._state == BOOTING and all(s.current and s.current.ready for s in self._slots):
            self._state = RUNNING
            self._pending_ports = False
            log.info("all %d workers serving on ports %s", len(self._slots), self.ports)
            self.emit("when_ready")
            self._rolling.start_queued()
            self._replacer.pump()
        elif self._pending_ports:
            self._maybe_announce_ports()

    def _maybe_announce_ports(self) -> None:
        if self._state == RUNNING and all(s.current and s.current.ready for s in self._slots):
            self._pending_ports = False
            self.emit("ports_changed", self.ports)

    def _exited(self, worker: WorkerProcess) -> None:
        """A worker's sentinel fired: reap it, tell the hooks, refill its slot."""
        self._drain_messages(worker)  # e.g. its boot error, sent just before it exited
        exitcode = self._reap(worker)
        slot = worker.slot
        was_current = slot.current is worker
        if was_current:
            slot.current = None
        self.emit("worker_exited", worker.info(), exitcode)
        if self._replacer.process_exited(worker, exitcode):
            return
        if not was_current or self._state == STOPPING:
            log.info(
                "worker %d (pid %d, generation %d) exited with %s",
                slot.id,
                worker.pid,
                worker.generation,
                describe_exit(exitcode),
            )
            return
        if slot.retiring:
            slot.sock.close()
            return
        if self._replacer.replacing(slot):
            log.warning(
                "worker %d (pid %d) died with %s; its successor is already starting",
                slot.id,
                worker.pid,
                describe_exit(exitcode),
            )
            return
        self._refill(slot, worker, exitcode)

    def _refill(self, slot: Slot, worker: WorkerProcess, exitcode: Optional[int]) -> None:
        why = describe_exit(exitcode)
        if worker.ready:
            log.warning("worker %d (pid %d) died with %s; respawning on port %d", slot.id, worker.pid, why, slot.port)
            slot.restarts += 1
            self.counters.died(exitcode)
            self._spawn(slot)
            return
        if self._state == BOOTING:
            self._boot_error, details = worker.boot_failure(exitcode)
            log.error("worker %d could not start (%s); stopping%s", slot.id, self._boot_error, details)
            self.stop()
            return
        delay = self._crashes.failed(slot, worker, exitcode)
        slot.restarts += 1
        self.counters.died(exitcode)
        slot.respawn_timer = self._loop.call_later(delay, lambda: self._respawn_after_backoff(slot))

    def _respawn_after_backoff(self, slot: Slot) -> None:
        slot.respawn_timer = None
        if self._state in (BOOTING, RUNNING) and not slot.retiring and slot.current is None:
            self._spawn(slot)
