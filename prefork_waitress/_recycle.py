"""Recycling after max_requests: one slot at a time, the successor serving first.

A worker that has served its ``max_requests`` asks over its Pipe and keeps
serving. The master recycles the slots that asked in turn, never two at
once and never during a rolling reload: it forks the successor on the same
socket, and once the successor reports ready it becomes the slot's worker
and the old one is stopped gracefully (it stops accepting, finishes its
request with ``Connection: close``, closes idle keep-alive connections). The
next slot's turn comes when the old worker has exited. So a slot is never
without a serving worker, and no request fails.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, List, Optional

from ._slots import Slot, WorkerProcess

if TYPE_CHECKING:
    from .master import Master

log = logging.getLogger("prefork_waitress")


class Recycler:
    """Workers waiting for their turn, and the one recycle in progress."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.queue: List[WorkerProcess] = []
        self.old: Optional[WorkerProcess] = None
        self.successor: Optional[WorkerProcess] = None

    @property
    def busy(self) -> bool:
        return self.old is not None or self.successor is not None

    def replacing(self, slot: Slot) -> bool:
        """True while a successor for ``slot`` is starting."""
        return self.successor is not None and self.successor.slot is slot

    def request(self, worker: WorkerProcess, served: int = 0) -> None:
        """``worker`` reached max_requests: recycle it now, or when its turn comes."""
        if worker in self.queue or worker is self.old or not self._serving(worker):
            return
        if served:
            log.info("worker %d (pid %d) served %d requests; recycling it", worker.slot.id, worker.pid, served)
        self.queue.append(worker)
        self.pump()

    def pump(self) -> None:
        """Start the next recycle if none (and no rolling reload) is in progress."""
        master = self.master
        if self.busy or master.state != "running" or master._rolling.active:
            return
        while self.queue:
            worker = self.queue.pop(0)
            if self._serving(worker):  # not replaced meanwhile (reload, crash, scale down)
                self.old = worker
                self.successor = master._spawn(worker.slot)
                return

    def _serving(self, worker: WorkerProcess) -> bool:
        slot = worker.slot
        return (
            slot.current is worker
            and worker.ready
            and not worker.stopping
            and not slot.retiring
            and worker.pid in self.master._processes
        )

    def successor_ready(self, worker: WorkerProcess) -> bool:
        """The successor serves: it takes the slot and the old worker is stopped."""
        if worker is not self.successor:
            return False
        self.successor = None
        slot, master = worker.slot, self.master
        if slot.retiring or master.state != "running":
            master._stop_process(worker, graceful=True)
        else:
            old, slot.current = slot.current, worker
            master.emit("worker_started", worker.info())
            if old is not None:
                master._stop_process(old, graceful=True)
        if self.old is None:  # it already left on its own
            self._finish()
        return True

    def process_exited(self, worker: WorkerProcess, exitcode: Optional[int]) -> bool:
        """Follow the recycle's two processes; True if the master has nothing more to do."""
        if worker is self.successor:
            self.successor = None
            old = self.old
            serving = old is not None and self._serving(old)
            then = f"pid {old.pid} keeps serving" if serving and old is not None else ""
            delay = self.master._crashes.failed(worker.slot, worker, exitcode, then=then)
            if serving and old is not None:
                self.master.call_later(delay, lambda: self.request(old))
            self._finish()
            return True
        if worker is self.old:
            self.old = None
            if self.successor is None:
                self._finish()
        return False

    def abandon(self) -> None:
        """The master is stopping: forget every recycle."""
        self.queue.clear()
        self.old = self.successor = None

    def _finish(self) -> None:
        self.old = None
        self.master._rolling.start_queued()
        self.pump()
