"""The Master: the public facade of one cluster of waitress workers (hooks, control methods, state).

Subclass it to override the hooks. The works live in a ``Cluster``
(_cluster.py: the wiring of pool, policies and integrations, and the loop;
_boot.py: sockets, preload, gc.freeze; _worker_events.py: what workers
report) that the facade holds under one name-mangled attribute, so a
subclass's own attribute names never collide with the master's internals.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ._cluster import Cluster
from ._core.commands import Callback, Replies
from ._core.counters import ClusterCounters
from ._core.handle import MasterHandle
from ._core.loop import Timer
from ._core.slots import WorkerInfo
from .integrations.upgrade import UpgradeCallback
from .options import Settings, make_settings

__all__ = ["Master", "handle_of"]


class Master:
    """Runs ``app`` in ``workers`` waitress processes, one port each, and keeps them up.

    Its public names are the documented API: the hooks (override them in a
    subclass; they run in the master loop), the control methods and the state.
    Integrations and the programs reach the rest through :func:`handle_of`.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self.settings: Settings = make_settings(**options)
        self.__cluster = Cluster(self, app, self.settings)

    # state ------------------------------------------------------------------
    @property
    def workers(self) -> List[WorkerInfo]:
        """One WorkerInfo per slot, in slot order (pid None while respawning; ``state``: the slot's,
        ``worker_state``: its process's, see _core.states)."""
        return self.__cluster.workers

    @property
    def ports(self) -> List[int]:
        """The ports of the slots, in slot order."""
        return self.__cluster.ports

    @property
    def state(self) -> str:
        """ "new", "booting", "running", "stopping" (shutdown_delay included) or "stopped"."""
        return self.__cluster.state

    def unserved_slots(self) -> List[int]:
        """Ids of the slots that no ready worker serves right now (readiness)."""
        return self.__cluster.unserved_slots()

    def status(self) -> Dict[str, Any]:
        """A JSON-able snapshot of the master and its slots (control socket, monitoring)."""
        return self.__cluster.status()

    @property
    def counters(self) -> ClusterCounters:
        """Restarts by reason, reloads by result, requests of exited workers (monitoring)."""
        return self.__cluster.counters

    def activity(self) -> Dict[int, Dict[str, Any]]:
        """Per slot id: its state and the request its worker is running (from the shared meters)."""
        return self.__cluster.activity()

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

    def upgraded(self, ok: bool) -> None:
        """An upgrade this master started was decided: a new master serves (True; this one now stops)
        or it failed and this one serves on (False)."""

    def stopping(self) -> None:
        """The master begins to stop."""

    # control --------------------------------------------------------------
    def start(self) -> None:
        """Bind, fork the workers, and run the event loop until stopped."""
        self.__cluster.start()

    def stop(self, graceful: bool = True) -> None:
        """Stop every worker (gracefully: finish in-flight requests) and leave start()."""
        self.__cluster.stop(graceful)

    def reload(self) -> None:
        """Rolling restart: each slot gets a new worker, then its old one is stopped."""
        self.__cluster.reload()

    def upgrade(self, callback: Optional[UpgradeCallback] = None) -> None:
        """Start a new master program on these sockets; once it serves every slot, this one drains and
        exits. ``callback(error, result)`` runs in the loop when decided (see integrations.upgrade)."""
        self.__cluster.upgrade(callback)

    def scale(self, n: int) -> None:
        """Grow to ``n`` slots on the next ports, or gracefully retire the highest ones.

        Growing is all-or-nothing: ``n`` above the workers option's bound, a port past
        65535, or a socket that cannot be opened raises before any slot is added.
        """
        self.__cluster.scale(n)

    def command(self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0) -> Replies:
        """Run command ``name`` in every worker (or slot ``worker``); replies by slot id.

        Blocking, for hooks and scripts: until every reply is in or ``timeout``
        passes, it waits only on the chosen workers' Pipes and exit sentinels;
        other messages those workers send meanwhile go through the pool's table
        as always (the ones that make the master act run later, from the loop).
        Nothing else of the loop (timers, signals, other fds) runs meanwhile;
        code in the loop that must not stall should use :meth:`command_async`.
        """
        return self.__cluster.command(name, *args, worker=worker, timeout=timeout)

    def command_async(
        self, name: str, *args: Any, worker: Optional[int] = None, timeout: float = 5.0, callback: Callback
    ) -> None:
        """Send command ``name`` and return at once; ``callback(replies)`` runs in the loop later.

        ``replies`` is the dict slot id -> reply (or CommandError), once every
        chosen worker answered, exited or missed ``timeout``.
        """
        self.__cluster.command_async(name, *args, worker=worker, timeout=timeout, callback=callback)

    def add_io_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Run ``callback(fileobj)`` in the master loop whenever ``fileobj`` is readable (a worker closes
        its copy of ``fileobj`` right after the fork)."""
        self.__cluster.add_io_handler(fileobj, callback)

    def remove_io_handler(self, fileobj: Any) -> None:
        """Stop watching ``fileobj`` (added by :meth:`add_io_handler`)."""
        self.__cluster.remove_io_handler(fileobj)

    def add_write_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Run ``callback(fileobj)`` in the master loop whenever ``fileobj`` is writable; remove it once
        nothing waits to be written, or it runs every turn."""
        self.__cluster.add_write_handler(fileobj, callback)

    def remove_write_handler(self, fileobj: Any) -> None:
        """Stop watching ``fileobj`` for room (added by :meth:`add_write_handler`)."""
        self.__cluster.remove_write_handler(fileobj)

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback()`` in the master loop when ``signum`` arrives (replaces the default)."""
        self.__cluster.add_signal_handler(signum, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` in the master loop after ``delay`` seconds; returns a cancellable timer."""
        return self.__cluster.call_later(delay, callback)


def handle_of(master: Master) -> MasterHandle:
    """The master as integrations and the programs see it (listeners, owned fds, sockets, raw counts):
    the MasterHandle of its Cluster, which no subclass of Master can shadow."""
    cluster: Cluster = master._Master__cluster  # type: ignore[attr-defined]  # the facade's one attribute
    return cluster
