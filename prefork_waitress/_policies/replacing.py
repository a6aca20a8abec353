"""Replacing a slot's worker with no gap: the one mechanism behind rolling reloads and recycling.

One slot at a time (the reconcile pass starts the next): fork the successor
on the slot's own socket, wait until it serves, make it the slot's worker,
stop the old one gracefully, and move on once the old one has stopped
accepting (or exited). Old and new share the socket meanwhile, so no
connection is refused, and never two slots are being replaced at once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, List, Optional

from .._core.pool import Adopted, WorkerPool, spawn_failure
from .._core.slots import Slot, WorkerProcess
from .._core.states import SlotState, WorkerState

log = logging.getLogger("prefork_waitress")

# done(ok, the successor that failed to start or None, its exit code)
Done = Callable[[bool, Optional[WorkerProcess], Optional[int]], None]
# fork(slot, adopted): start a successor elsewhere; adopted(worker, "") once the pool has it, (None, why) if not
Fork = Callable[[Slot, Adopted], None]


@dataclasses.dataclass(eq=False)
class Replacement:
    """One slot to give a new worker, for a purpose ("reload", "recycle", "refork")."""

    slot: Slot
    purpose: str
    done: Done
    only_if: Optional[WorkerProcess] = None  # replace only while this is still the slot's worker
    successor: Optional[WorkerProcess] = None  # forked, not serving yet
    old: Optional[WorkerProcess] = None  # swapped out, stopping
    fork: Optional[Fork] = None  # how the successor comes (default: the pool forks it at once)


class SlotReplacer:
    """The queue of replacements and the one in progress."""

    def __init__(self, pool: WorkerPool, running: Callable[[], bool]) -> None:
        """``running()``: the master is running (not booting, not stopping), so replacements may start."""
        self.pool = pool
        self.running = running
        self.queue: List[Replacement] = []
        self.current: Optional[Replacement] = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    def replacing(self, slot: Slot) -> bool:
        """True while a successor for ``slot`` is starting."""
        job = self.current
        return job is not None and job.slot is slot and job.successor is not None

    def add(
        self, slot: Slot, purpose: str, done: Done, only_if: Optional[WorkerProcess] = None, fork: Optional[Fork] = None
    ) -> None:
        """Queue a replacement of ``slot``'s worker; the reconcile pass starts it (:meth:`pump`)."""
        self.queue.append(Replacement(slot, purpose, done, only_if, fork=fork))

    def drop(self, purpose: str) -> None:
        """Forget the queued replacements of one purpose (an abandoned reload)."""
        self.queue = [job for job in self.queue if job.purpose != purpose]

    def abandon(self) -> None:
        """The master is stopping: forget everything (its workers are all being stopped)."""
        self.queue.clear()
        self.current = None

    def pump(self) -> bool:
        """Start the next replacement if none is in progress (the reconcile pass); True if it did anything."""
        acted = False
        while self.current is None and self.queue and self.running():
            acted = True
            job = self.queue.pop(0)
            if not self._replaceable(job):
                job.done(True, None, None)  # retired, respawning or already replaced: nothing to do
                continue
            self.current = job
            try:
                if job.fork is None:
                    job.successor = self.pool.spawn(job.slot)
                else:
                    job.fork(job.slot, functools.partial(self._adopted, job))
            except OSError as exc:
                fields = {"event": "spawn_failed", "slot": job.slot.id, "port": job.slot.port, "error": str(exc)}
                log.error("%s; the old worker keeps serving", spawn_failure(job.slot, exc), extra=fields)
                self.current = None
                job.done(False, None, None)
        return acted

    def _adopted(self, job: Replacement, worker: Optional[WorkerProcess], why: str) -> None:
        """A successor forked elsewhere is in the pool (or none came, ``why``)."""
        if self.current is not job:
            if worker is not None:  # abandoned meanwhile: nobody wants it
                self.pool.stop_process(worker, graceful=True)
            return
        if worker is None:
            fields = {"event": "spawn_failed", "slot": job.slot.id, "port": job.slot.port, "error": why}
            log.error("no new worker for slot %d (%s); the old worker keeps serving", job.slot.id, why, extra=fields)
            self._end(job, False)
            return
        job.successor = worker

    @staticmethod
    def _replaceable(job: Replacement) -> bool:
        """The slot serves (in the pool, its worker ready and not leaving), with the worker ``only_if`` names."""
        worker = job.slot.current
        serving = job.slot.state is SlotState.SERVING and worker is not None and worker.state is WorkerState.READY
        return serving and (job.only_if is None or worker is job.only_if)

    def successor_ready(self, worker: WorkerProcess) -> bool:
        """The successor serves: it takes the slot and the old worker is stopped."""
        job = self.current
        if job is None or worker is not job.successor:
            return False
        job.successor = None
        pool = self.pool
        if worker.slot.retiring or not self.running():
            pool.stop_process(worker, graceful=True)
            self._end(job, True)
            return True
        old = pool.promote(worker, job.purpose)  # the pool says worker_started
        if old is None or old.pid not in pool.processes:
            self._end(job, True)
            return True
        job.old = old
        pool.stop_process(old, graceful=True)
        return True

    def released(self, worker: WorkerProcess) -> None:
        """An old worker stopped accepting (or exited): its slot now has only the new one."""
        job = self.current
        if job is not None and job.successor is None and worker is job.old:
            self._end(job, True)

    def process_exited(self, worker: WorkerProcess, exitcode: Optional[int]) -> bool:
        """Follow the exits; True if it was a successor that never served (the master need do no more)."""
        self.released(worker)
        job = self.current
        if job is None or worker is not job.successor:
            return False
        self.current = None
        job.done(False, worker, exitcode)
        return True

    def _end(self, job: Replacement, ok: bool) -> None:
        self.current = None
        job.done(ok, None, None)
