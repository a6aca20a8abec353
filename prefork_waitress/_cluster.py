"""The master's works behind the Master facade: the wiring of pool, policies and integrations, the loop.

One thread, one event loop; the pool owns the slots' states, the reconcile
pass acts on them. ``Master`` (master.py) holds one Cluster and forwards its
documented control methods here; integrations see the Cluster through the
MasterHandle Protocol. A subclass of Master cannot shadow anything here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from . import integrations as _integrations
from ._boot import load_app, open_slots, preload
from ._child.run import run as run_worker
from ._core.activity import slot_activity
from ._core.commands import Callback, CommandChannel, Replies, targets
from ._core.counters import ClusterCounters
from ._core.events import Events
from ._core.lifecycle import State
from ._core.loop import EventLoop
from ._core.pool import WorkerPool
from ._core.scaling import check_count
from ._core.slots import Slot, WorkerInfo, WorkerProcess
from ._core.states import SlotState
from ._loop_handlers import LoopHandlers
from ._os.handoff import sockets_shared
from ._os.limits import (
    StopRequested,
    TimeLimitExceeded,
    is_out_of_fds,
    out_of_fds_message,
    raise_fd_limit,
    stop_on_sigterm,
)
from ._os.loading import AppImportError
from ._os.pidfile import PidFile
from ._policies.backoff import CrashLoops, backoff_delay
from ._policies.reconcile import Reconciler
from ._policies.recycling import Recycler
from ._policies.reforking import Reforker
from ._policies.replacing import SlotReplacer
from ._policies.retiring import Retirements
from ._policies.rolling import RollingReload
from ._policies.shutdown import ShutdownDelay
from ._policies.timeouts import RequestTimeouts
from ._wire.messages import Draining, Modules, Ready, Recycle, Warm
from ._wire.meter import RequestCounts, RequestMeter
from ._worker_events import WorkerEvents
from .errors import BootError, StartError
from .integrations.autoreload import CodeReloader
from .integrations.upgrade import UpgradeCallback
from .options import Settings
from .reloading import ReloadError
from .worker import Worker

log = logging.getLogger("prefork_waitress")


class Cluster(WorkerEvents, LoopHandlers):
    """Everything of one master but its hooks: ``owner`` (the Master) gets the hooks' calls."""

    def __init__(self, owner: Any, app: Any, settings: Settings) -> None:
        self.settings = settings
        if not (callable(app) or isinstance(app, str)):
            raise TypeError(f"app: expected a WSGI callable or a 'module:attr' string, got {app!r}")
        if self.settings.reload and not isinstance(app, str):
            raise ValueError("option reload: needs the app as a 'package.module:attr' string, to know its files")
        self._app_spec: Any = app
        self._app: Any = app
        self._worker_class = self.settings.worker_class or Worker
        self._loop = EventLoop()
        self._commands = CommandChannel(self._loop)
        self._init_handlers()
        self._events = Events(owner, self._loop.guarded)
        self._state = State.NEW
        self._boot_error: Optional[str] = None
        self._announced: Optional[List[int]] = None  # the ports the frontends were last told (ports_changed)
        self._pidfile = PidFile(self.settings.pidfile) if self.settings.pidfile else None
        self._code: Optional[CodeReloader] = None
        if isinstance(app, str) and (self.settings.preload or self.settings.reload):
            self._code = CodeReloader(self, app, self.settings.reload, self.settings.reload_extra_file)
        self._pool = self._make_pool()
        self._crashes = CrashLoops()
        self._replacer = SlotReplacer(self._pool, lambda: self._state is State.RUNNING)
        self._rolling = RollingReload(
            self._pool, self._replacer, self._events, lambda: self._state, self._reload_code, self._crashes.last_error
        )
        self._timeouts = RequestTimeouts(
            self.settings.request_timeout,
            self._loop,
            self._pool,
            successor_coming=self._replacer.replacing,
            serving=lambda: self._state.serving,
            output=self.settings.output,
            heartbeat_timeout=self.settings.heartbeat_timeout,
        )
        self._reconciler = Reconciler(
            self._pool,
            self._replacer,
            self._rolling,
            serving=lambda: self._state.serving,
            steps=[self._become_running, self._announce_ports],
        )
        self._recycler = Recycler(self._replacer, self._crashes, self.call_later)
        self._reforker = Reforker(self.settings.refork_after, self._pool, self._replacer)
        self._retirements = Retirements(self.call_later, self._frontends, self._pool.retire)
        self._shutdown = ShutdownDelay(self.settings.shutdown_delay, self.call_later)
        self.add_listener(self._pool.counters)  # counts reloads
        self._upgrader = _integrations.attach(self)

    def _make_pool(self) -> WorkerPool:
        pool = WorkerPool(
            self.settings,
            self._loop,
            self._commands,
            self._child_options,
            self._master_objects,
            child_main=run_worker,  # _core knows no _child: the master says what a forked worker runs
        )
        pool.on_spawn = lambda worker: self._timeouts.watch()
        pool.retry_delay = backoff_delay
        pool.on_exit = self._exited
        pool.on_serving = lambda worker: self.emit("worker_started", worker.info())
        pool.handle(Ready, lambda worker, ready: self._ready(worker, ready.started_at), deferred=True)
        pool.handle(Draining, lambda worker, draining: self._replacer.released(worker), deferred=True)
        pool.handle(Recycle, lambda worker, recycle: self._recycler.request(worker, recycle.why), deferred=True)
        pool.handle(Warm, lambda worker, warm: self._reforker.warm(worker, warm.served), deferred=True)
        pool.handle(Modules, self._adopt_modules)
        return pool

    def _child_options(self) -> Dict[str, Any]:
        return {
            "app": self._app,
            "worker_class": self._worker_class,
            "meter": RequestMeter(),  # request_timeout's clock and the metrics' counts
            "report_modules": self.settings.reload,
        }

    def _adopt_modules(self, worker: WorkerProcess, message: Modules) -> None:
        if self._code is not None:
            self._code.adopt(message.fresh, message.data_files)

    # public state ---------------------------------------------------------
    @property
    def workers(self) -> List[WorkerInfo]:
        """One WorkerInfo per slot, in slot order (see Master.workers)."""
        return [slot.info() for slot in self._pool.slots]

    @property
    def ports(self) -> List[int]:
        """The ports of the slots, in slot order."""
        return [slot.port for slot in self._pool.slots]

    @property
    def state(self) -> str:
        """ "new", "booting", "running", "stopping" (shutdown_delay included) or "stopped"."""
        delaying = self._shutdown.pending and self._state is State.RUNNING
        return State.STOPPING.value if delaying else self._state.value

    def unserved_slots(self) -> List[int]:
        """Ids of the slots that no ready worker serves right now (readiness)."""
        return [slot.id for slot in self._pool.slots if slot.current is None or not slot.current.ready]

    def status(self) -> Dict[str, Any]:
        """A JSON-able snapshot of the master and its slots (control socket, monitoring)."""
        queues = self._pool.accept_queues()
        return {
            "master": {
                "pid": os.getpid(),
                "state": self.state,
                "workers": len(self._pool.slots),
                "host": self.settings.host,
                "ports": self.ports,
                "reloading": self._rolling.active,
            },
            "workers": [
                _with_accept_queue(dataclasses.asdict(slot.info()), queues[slot.id]) for slot in self._pool.slots
            ],
        }

    @property
    def counters(self) -> ClusterCounters:
        """Restarts by reason, reloads by result, requests of exited workers (monitoring)."""
        return self._pool.counters

    def request_counts(self) -> Dict[int, RequestCounts]:
        """Per slot id: what its workers served since the master started (live ones from shared memory)."""
        return self._pool.request_counts()

    def accept_queues(self) -> Dict[int, Optional[Tuple[int, int]]]:
        """Per slot id: (connections waiting in the accept queue, its limit), or None where unknown."""
        return self._pool.accept_queues()

    def activity(self) -> Dict[int, Dict[str, Any]]:
        """Per slot id: its state and the request its worker is running (from the shared meters)."""
        return slot_activity(self._pool.slots)

    def emit(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every listener (built-in integrations) then on the Master (its subclass's)."""
        self._events.emit(hook, *args)

    def add_listener(self, listener: Any) -> None:
        """Attach an object whose hook-named methods run before the master's own hooks (integrations
        work whether or not a subclass calls ``super()``; see ``_core.events.Listener``)."""
        self._events.add(listener)

    # control --------------------------------------------------------------
    def command(self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0) -> Replies:
        """Run command ``name`` in the chosen workers and wait for their replies (see Master.command)."""
        request = self._commands.send(targets(self._pool.slots, worker), name, args, timeout, None)
        return self._commands.wait(request, self._pool.receive)

    def command_async(
        self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0, callback: Callback
    ) -> None:
        """Send command ``name``; ``callback(replies)`` runs in the loop later (see Master.command_async)."""
        self._commands.send(targets(self._pool.slots, worker), name, args, timeout, callback)

    # lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Bind, fork the workers, and run the event loop until stopped."""
        if self._state is not State.NEW:
            raise RuntimeError("a Master can be started once")
        self._state = State.BOOTING
        raise_fd_limit()  # workers get the original soft limit back (restore_fd_limit)
        try:
            try:
                self._prepare()
                for slot in self._pool.slots:
                    self._pool.spawn(slot)
            except StopRequested:
                log.info("SIGTERM before the workers were started; stopping")
                self._state = State.STOPPED
            except OSError as exc:
                if not is_out_of_fds(exc):
                    raise
                raise StartError(out_of_fds_message("cannot start", exc)) from None
            while self._state is not State.STOPPED:
                self._loop.run_once()
                self._reconciler.run()
                if self._state is State.STOPPING and not self._pool.processes:
                    self._state = State.STOPPED
        finally:
            self._cleanup()
        if self._boot_error is not None:
            raise BootError(f"the app could not start: {self._boot_error}")

    def _prepare(self) -> None:
        """Everything that can fail before a fork: pid file, sockets, preload (bounded by boot_timeout).

        Until the loop takes signals, SIGTERM raises StopRequested so the pid file is removed.
        """
        with stop_on_sigterm():
            if self._pidfile is not None:
                self._pidfile.create()
            open_slots(self._pool, self.settings.workers)
            if self.settings.preload:
                try:
                    self._app = preload(self.settings, self._app_spec, self._load)
                except (AppImportError, ReloadError, TimeLimitExceeded) as exc:
                    raise BootError(f"the app could not start: {exc}") from exc
        self._loop.open_signals()
        if self._code is not None:
            self._code.start_watching()
        self._events.tell("starting", guarded=False)

    def _load(self) -> Any:
        return self._code.load_app() if self._code is not None else load_app(self._app_spec)

    def _reload_code(self) -> None:
        """Before a rolling reload: in preload mode, import the app's code again."""
        if self.settings.preload and self._code is not None:
            self._app = preload(self.settings, self._app_spec, self._code.load_app)

    def _cleanup(self) -> None:
        self._retirements.abandon()
        self._pool.close()
        self._timeouts.stop()
        self._loop.close_signals()
        if self._code is not None:
            self._code.stop_watching()
        if self._pidfile is not None:
            self._pidfile.remove()
        self._events.tell("stopped", guarded=True)
        self._state = State.STOPPED

    def stop(self, graceful: bool = True) -> None:
        """Stop every worker (gracefully: finish in-flight requests) and leave start()."""
        if self._state in (State.NEW, State.STOPPED):
            return
        if self._state is State.STOPPING:
            if not graceful:
                self._pool.stop_all(graceful=False)
            return
        if graceful and self._state is State.RUNNING and not sockets_shared() and self._shutdown.defer(self.stop):
            return
        log.info("stopping %s", "gracefully" if graceful else "at once", extra={"event": "stop", "graceful": graceful})
        self._state = State.STOPPING
        self._rolling.abandon("the master is stopping")
        self._recycler.abandon()
        self._reforker.abandon()
        self._replacer.abandon()
        self.emit("stopping")
        for slot in self._pool.slots:
            self._pool.cancel_respawn(slot)
        self._retirements.abandon()  # a scale-down in progress: those slots retire now
        # A graceful stop first lets the frontends move off every port, as a scale-down does.
        held = [slot for slot in self._pool.slots if slot.current] if graceful and self._frontends() else []
        self._pool.stop_all(graceful, keep=[slot.current for slot in held])
        self._retirements.begin(held, self._stop_current)

    def _stop_current(self, slot: Slot) -> None:
        """Stop the worker of a slot the frontends have let go of (the master is stopping)."""
        if slot.current is not None and slot.current.pid in self._pool.processes:
            self._pool.stop_process(slot.current, graceful=True, keep_accepting=self._pool.drains_queue(slot.current))

    def _frontends(self) -> List[Any]:
        """Listeners that send traffic to the ports and must let go of one before it retires."""
        return [listener for listener in self._events.listeners if hasattr(listener, "release_ports")]

    def reload(self) -> None:
        """Rolling restart: each slot gets a new worker, then its old one is stopped."""
        self._rolling.request()

    def upgrade(self, callback: Optional[UpgradeCallback] = None) -> None:
        """Start a new master program on these sockets; once it serves every slot, this one drains and
        exits. ``callback(error, result)`` runs in the loop when decided (see integrations.upgrade)."""
        self._upgrader.request(callback)

    def listening_sockets(self) -> List[socket.socket]:
        """The slots' listening sockets, in slot order (what an upgrade passes on)."""
        return [slot.sock for slot in self._pool.slots]

    def scale(self, n: int) -> None:
        """Grow to ``n`` slots on the next ports, or gracefully retire the highest ones.

        Growing is all-or-nothing: ``n`` above the workers option's bound, a port past
        65535, or a socket that cannot be opened raises before any slot is added.
        """
        n = check_count(n)
        if not self._state.serving:
            raise RuntimeError(f"scale: the master is {self._state.value}")
        self._pool.plan(n)  # refuses a port past 65535 before anything changes
        before = len(self._pool.slots)
        if n != before:
            log.info(
                "scaling from %d to %d workers", before, n, extra={"event": "scale", "workers": n, "before": before}
            )
        while len(self._pool.slots) < n and self._reinstate():
            pass
        self._pool.grow(n)  # empty slots: the reconcile pass forks their workers, then says ports_changed
        retiring = self._pool.remove_slots(n)
        if retiring:
            self._announced = self.ports
            self.emit("ports_changed", self.ports)
            self._retirements.begin(retiring)  # each retires once the frontends let go of it

    def _reinstate(self) -> bool:
        """Scaling up before a retiring slot was stopped: the next slot is that one, serving on."""
        slot_id = self._pool.slots[-1].id + 1 if self._pool.slots else 0
        slot = self._retirements.reclaim(slot_id)
        if slot is None:
            return False
        if slot.state is SlotState.CLOSED:  # its worker died meanwhile and the socket was closed
            return False
        self._pool.reinstate(slot)  # empty if its worker is gone: the reconcile pass forks one
        return True


def _with_accept_queue(worker: Dict[str, Any], queue: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    """A status entry plus the slot's accept queue: connections waiting, and the limit (None off Linux)."""
    worker["accept_queue"], worker["accept_queue_limit"] = queue if queue is not None else (None, None)
    return worker
