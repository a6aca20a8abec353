"""Rolling reload: slot by slot, start the new worker, wait until it serves, stop the old."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, List, Optional

from ._slots import Slot, WorkerProcess

if TYPE_CHECKING:
    from .master import Master

log = logging.getLogger("prefork_waitress")


class RollingReload:
    """The reload in progress (at most one) and whether another was asked for meanwhile."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.active = False
        self.queued = False
        self.remaining: List[int] = []
        self.successor: Optional[WorkerProcess] = None
        self.predecessor: Optional[WorkerProcess] = None  # stopping; the slot is done once it stops accepting

    def request(self) -> None:
        """Start a reload now, or queue one if a reload (or the first boot) is under way."""
        state = self.master.state
        if state in ("stopping", "stopped"):
            log.info("reload ignored: the master is %s", state)
            return
        busy = self.master._recycler.busy
        if self.active or state != "running" or busy:
            if not self.queued:
                what = "reload" if self.active else "recycling" if busy else "boot"
                log.info("reload queued: it starts when the current %s ends", what)
            self.queued = True
            return
        self._begin()

    def start_queued(self) -> None:
        """Run a reload that was asked for while none could start."""
        if self.queued and not self.active and self.master.state == "running" and not self.master._recycler.busy:
            self.queued = False
            self._begin()

    def _begin(self) -> None:
        log.info("rolling reload of %d workers", len(self.master._slots))
        self.master.emit("reloading")
        try:
            self.master.reload_code()
        except Exception:
            log.exception("reload abandoned: the new code cannot be loaded; the old workers keep serving")
            self._finish(False)
            return
        self.active = True
        self.remaining = [slot.id for slot in self.master._slots]
        self._next()

    def _next(self) -> None:
        while self.remaining:
            slot = self._slot(self.remaining.pop(0))
            if slot is None or slot.retiring or slot.current is None:
                continue  # retired, or respawning (it will start with the new code anyway)
            self.successor = self.master._spawn(slot)
            return
        self._finish(True)

    def _slot(self, slot_id: int) -> Optional[Slot]:
        for slot in self.master._slots:
            if slot.id == slot_id:
                return slot
        return None

    def replacing(self, slot: Slot) -> bool:
        """True while a successor for ``slot`` is starting."""
        return self.successor is not None and self.successor.slot is slot

    def successor_ready(self, worker: WorkerProcess) -> bool:
        """The new worker of a slot serves: make it current and stop the old one."""
        if worker is not self.successor:
            return False
        self.successor = None
        slot = worker.slot
        old, slot.current = slot.current, worker
        self.master.emit("worker_started", worker.info())
        if old is None:
            self._next()
            return True
        self.predecessor = old
        self.master._stop_process(old, graceful=True)
        return True

    def released(self, worker: WorkerProcess) -> None:
        """An old worker stopped accepting (or exited): its slot now serves only new code."""
        if worker is self.predecessor:
            self.predecessor = None
            self._next()

    def process_exited(self, worker: WorkerProcess) -> bool:
        """A successor died before it served: abandon, the old workers keep serving."""
        self.released(worker)
        if worker is not self.successor:
            return False
        self.successor = None
        reason = worker.boot_error or "it exited before it was ready"
        log.error(
            "reload abandoned: the new worker %d could not start (%s); the old workers keep serving%s",
            worker.slot.id,
            reason,
            f"\n{worker.boot_traceback.rstrip()}" if worker.boot_traceback else "",
        )
        self._finish(False)
        return True

    def abandon(self, why: str) -> None:
        """Drop the reload in progress without calling the hook (the master is stopping)."""
        if self.active:
            log.info("reload abandoned: %s", why)
        self.active = self.queued = False
        self.remaining = []
        self.successor = self.predecessor = None

    def _finish(self, ok: bool) -> None:
        self.active = False
        self.remaining = []
        if ok:
            log.info("rolling reload done: %d workers on the new code", len(self.master._slots))
        self.master.emit("reloaded", ok)
        self.start_queued()
        self.master._recycler.pump()
