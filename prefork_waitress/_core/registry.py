"""The slot registry: the slots in slot order, the live processes by pid, and every state transition.

The one module that writes ``slot.current``, ``slot.state`` and ``worker.state``
(each move checked against the tables of :mod:`.states`: an illegal one raises),
and the one that reports a worker serving its slot (``on_serving``: the
``worker_started`` hook). The pool's hands (:mod:`.processes`, :mod:`.pool`)
fork, signal and reap processes, and ask this registry for each move.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Dict, List, Optional, Tuple

from .._os.accept_queue import accept_queue
from .._wire.meter import RequestCounts
from ..options import Settings
from . import scaling
from .counters import ClusterCounters
from .loop import EventLoop
from .slots import Slot, WorkerProcess, bind_socket, log_fields
from .states import SlotState, WorkerState, move

log = logging.getLogger("prefork_waitress")


class SlotRegistry:
    """The slots and processes of one master, and the only writer of their states."""

    def __init__(self, settings: Settings, loop: EventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.slots: List[Slot] = []
        self.processes: Dict[int, WorkerProcess] = {}
        self.counters = ClusterCounters()  # restarts by reason, reloads, exited workers' requests
        self.on_serving: Callable[[WorkerProcess], None] = lambda worker: None  # it serves its slot now
        self.retry_delay: Callable[[int], float] = lambda failures: 1.0  # seconds after the n-th failed fork

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

    def close_if_vacant(self, slot: Slot) -> None:
        """A retiring slot's socket closes once none of its processes is left: a worker still draining
        from before a take-back keeps the slot, so a scale-up takes it back again on the same socket."""
        if slot.state is SlotState.RETIRING and not any(p.slot is slot for p in self.processes.values()):
            self.close_slot(slot)

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

    def _retry_later(self, slot: Slot, delay: float) -> None:
        """Back off: the slot is empty again (and forked by the reconcile pass) after ``delay``."""

        def later() -> None:
            slot.respawn_timer = None
            self._refresh(slot)

        slot.respawn_timer = self.loop.call_later(delay, later)
        self._refresh(slot)

    def cancel_respawn(self, slot: Slot) -> None:
        if slot.respawn_timer is not None:
            slot.respawn_timer.cancel()
            slot.respawn_timer = None
            self._refresh(slot)

    def _enter(self, worker: WorkerProcess) -> None:
        """A new process: known by its pid, and its slot's worker if the slot has none."""
        self.processes[worker.pid] = worker
        if worker.slot.current is None:
            worker.slot.current = worker
        self._refresh(worker.slot)

    def _leave(self, worker: WorkerProcess, leaving: bool) -> bool:
        """A process is reaped: forget it and move it to exited (False if it was reaped already).
        ``leaving``: the master is, so its slot's state no longer matters."""
        if self.processes.pop(worker.pid, None) is None:
            return False
        if leaving:
            move(worker, WorkerState.EXITED)
        else:
            self._move(worker, WorkerState.EXITED)
        return True

    def _retiring(self, slot: Slot) -> None:
        """``slot`` leaves the pool (scaled down): its worker, if any, serves on until the port is quiet."""
        if slot.state is not SlotState.CLOSED:
            move(slot, SlotState.RETIRING)

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
