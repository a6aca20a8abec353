"""What the master does when its workers report or exit: part of the Cluster (its base class).

Ready marks a worker serving and, once every slot serves, the master running
(when_ready) or the new ports told (ports_changed); an exit is logged, told
(worker_exited) and counted toward its slot's backoff; the reconcile pass
forks what is missing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, List, Optional

from ._core.counters import exit_reason
from ._core.lifecycle import State
from ._core.pool import WorkerPool
from ._core.slots import Slot, WorkerProcess, describe_exit, exit_fields, log_fields
from ._policies.backoff import CrashLoops
from ._policies.replacing import SlotReplacer

log = logging.getLogger("prefork_waitress")


class WorkerEvents:
    """The Cluster's handlers of its workers' news (the pool calls them; the reconcile pass runs the steps)."""

    _pool: WorkerPool
    _crashes: CrashLoops
    _replacer: SlotReplacer
    _state: State
    _boot_error: Optional[str]
    _announced: Optional[List[int]]

    if TYPE_CHECKING:  # the Cluster's

        @property
        def ports(self) -> List[int]: ...

        def emit(self, hook: str, *args: object) -> None: ...

        def stop(self, graceful: bool = True) -> None: ...

    def _ready(self, worker: WorkerProcess, started_at: float) -> None:
        """A worker reported ready: the pool marks it (and says ``worker_started`` once it serves its slot)."""
        if not self._pool.mark_ready(worker, started_at):
            return
        self._crashes.recovered(worker.slot)
        self._replacer.successor_ready(worker)
        if worker.slot.current is worker:
            self._pool.settle_slot(worker)

    def _become_running(self) -> bool:
        """Reconcile step: booting, and every slot serves: running (when_ready)."""
        if self._state is not State.BOOTING or not self._pool.all_ready():
            return False
        self._state = State.RUNNING
        self._announced = self.ports
        log.info(
            "all %d workers serving on ports %s",
            len(self._pool.slots),
            self.ports,
            extra={"event": "running", "workers": len(self._pool.slots), "ports": self.ports},
        )
        self.emit("when_ready")
        return True

    def _announce_ports(self) -> bool:
        """Reconcile step: running, every slot serves, and the ports differ from the last told: ports_changed."""
        if self._state is not State.RUNNING or self._announced == self.ports or not self._pool.all_ready():
            return False
        self._announced = self.ports
        self.emit("ports_changed", self.ports)
        return True

    def _exited(self, worker: WorkerProcess, exitcode: Optional[int]) -> None:
        """A worker was reaped: tell the hooks, refill its slot."""
        slot = worker.slot
        was_current = self._pool.vacate(worker)
        self.emit("worker_exited", worker.info(), exitcode)
        if self._replacer.process_exited(worker, exitcode):
            return
        stopping = self._state is State.STOPPING
        if not was_current or stopping or slot.retiring:
            reason = "stopped" if stopping else "replaced" if not was_current else "retired"
            fields = log_fields(worker, "worker_exit", reason=reason, **exit_fields(exitcode))
            why = describe_exit(exitcode)
            log.info(
                "worker %d (pid %d, generation %d) exited with %s",
                slot.id,
                worker.pid,
                worker.generation,
                why,
                extra=fields,
            )
            if slot.retiring:
                self._pool.close_if_vacant(slot)
            return
        if self._replacer.replacing(slot):
            log.warning(
                "worker %d (pid %d) died with %s; its successor is already starting",
                slot.id,
                worker.pid,
                describe_exit(exitcode),
                extra=log_fields(worker, "worker_exit", reason="died_while_replaced", **exit_fields(exitcode)),
            )
            return
        self._count_death(slot, worker, exitcode)

    def _count_death(self, slot: Slot, worker: WorkerProcess, exitcode: Optional[int]) -> None:
        """A slot's worker died: count the restart and its backoff (the reconcile pass forks the next one)."""
        if worker.ready:  # at once, unless it keeps crashing soon after it became ready
            delay = self._crashes.died_after_ready(slot, worker, exitcode)
            self._pool.respawn(slot, exit_reason(exitcode), delay)
            return
        if self._state is State.BOOTING:
            self._boot_error, details = worker.boot_failure(exitcode)
            fields = log_fields(worker, "boot_failed", error=self._boot_error, **exit_fields(exitcode))
            log.error("worker %d could not start (%s); stopping%s", slot.id, self._boot_error, details, extra=fields)
            self.stop()
            return
        delay = self._crashes.failed(slot, worker, exitcode)
        self._pool.respawn(slot, exit_reason(exitcode), delay)
