"""Rolling reload: every slot gets a new worker through the SlotReplacer, one at a time."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from .._core.events import Events
from .._core.lifecycle import State
from .._core.pool import WorkerPool
from .._core.slots import WorkerProcess
from ..reloading import ReloadError
from .replacing import SlotReplacer

log = logging.getLogger("prefork_waitress")


class RollingReload:
    """The reload in progress (at most one) and whether another was asked for meanwhile."""

    def __init__(
        self,
        pool: WorkerPool,
        replacer: SlotReplacer,
        events: Events,
        state: Callable[[], State],
        reload_code: Callable[[], None],
        last_error: Callable[[int], Optional[str]] = lambda slot_id: None,
    ) -> None:
        """``reload_code()`` imports the new code first (preload); raising abandons the reload.

        ``last_error(slot id)``: why a slot's worker could not start, to say why a reload is incomplete."""
        self.pool = pool
        self.replacer = replacer
        self.events = events
        self.state = state
        self.reload_code = reload_code
        self.last_error = last_error
        self.active = False
        self.queued = False
        self.pending = 0
        self.retry_deadline: Optional[float] = None  # how long it waits for slots retrying a failed fork
        self.retry_wake: Any = None

    def request(self) -> None:
        """Start a reload now, or queue one if a reload (or the first boot) is under way."""
        state = self.state()
        if state.ending:
            log.info("reload ignored: the master is %s", state.value)
            return
        if self.active or state is not State.RUNNING:
            if not self.queued:
                log.info("reload queued: it starts when the current %s ends", "reload" if self.active else "boot")
            self.queued = True
            return
        self._begin()

    def reconcile(self) -> bool:
        """The reconcile pass's part: finish a reload that is done, start one asked for while none could.
        True if it did either."""
        if self.active:
            return self.settle()
        if self.queued and self.state() is State.RUNNING:
            self.queued = False
            self._begin()
            return True
        return False

    def _begin(self) -> None:
        log.info(
            "rolling reload of %d workers",
            len(self.pool.slots),
            extra={"event": "reload", "result": "started", "workers": len(self.pool.slots)},
        )
        self.events.emit("reloading")
        try:
            self.events.tell("preparing_reload", guarded=False)  # e.g. enter the release a link names now
        except Exception as exc:  # an operator's mistake (a link to nothing): one line, no traceback
            message = f"reload abandoned: {exc}; the old workers keep serving"
            log.error(message, extra={"event": "reload", "result": "failed", "reason": "prepare"})
            self.pool.counters.reload_failed(message)
            self._finish(False)
            return
        try:
            self.reload_code()
        except Exception as exc:
            log.exception(
                "reload abandoned: the new code cannot be loaded; the old workers keep serving",
                extra={"event": "reload", "result": "failed", "reason": "import"},
            )
            why = str(exc) if isinstance(exc, ReloadError) else f"{type(exc).__name__}: {exc}"
            self.pool.counters.reload_failed(f"the new code cannot be loaded: {why}; the old workers keep serving")
            self._finish(False)
            return
        self.active = True
        slots = list(self.pool.slots)
        self.pending = len(slots)
        for slot in slots:
            self.replacer.add(slot, "reload", self._slot_done)
        if not slots:
            self._finish(True)

    def _slot_done(self, ok: bool, failed: Optional[WorkerProcess], exitcode: Optional[int]) -> None:
        if not self.active:
            return
        if not ok:
            self.replacer.drop("reload")
            if failed is not None:
                reason, details = failed.boot_failure(exitcode)
                self.pool.counters.reload_failed(
                    f"the new worker {failed.slot.id} could not start ({reason}); the old workers keep serving"
                )
                log.error(
                    "reload abandoned: the new worker %d could not start (%s); the old workers keep serving%s",
                    failed.slot.id,
                    reason,
                    details,
                    extra={
                        "event": "reload",
                        "result": "failed",
                        "reason": "boot",
                        "slot": failed.slot.id,
                        "error": reason,
                    },
                )
            self._finish(False)
            return
        self.pending -= 1  # the reconcile pass finishes the reload (settle) once it is the last

    def settle(self) -> bool:
        """Finish the reload once every slot was replaced and none of the pool's slots has a worker still
        starting (True if it did).

        A slot whose worker was forked after the reload began (it left and came back through a scale,
        or was respawned) serves the new code once it is ready: the reload waits for it rather than
        skipping it, and judges the slot by what it has then (a slot left empty fails the reload). A slot
        waiting to retry a failed fork is waited for too, ``boot_timeout`` at most.
        """
        if not self.active or self.pending:
            return False
        if any(slot.current is not None and not slot.current.ready for slot in self.pool.slots):
            return False
        if self._fork_retries_due():
            return False
        self._finish(True)
        return True

    def _fork_retries_due(self) -> bool:
        """True while a slot whose fork failed (out of fds, memory, processes) has its retry scheduled: that
        worker is forked from the new code, so the reload waits for it, ``boot_timeout`` at most."""
        if not any(
            slot.current is None and slot.fork_failed and slot.respawn_timer is not None and not slot.retiring
            for slot in self.pool.slots
        ):
            return False
        timeout = self.pool.settings.boot_timeout
        if self.retry_deadline is None:
            self.retry_deadline = time.monotonic() + timeout
            self.retry_wake = self.pool.loop.call_later(timeout, lambda: None)  # a loop turn to settle() in
        return time.monotonic() < self.retry_deadline

    def abandon(self, why: str) -> None:
        """Drop the reload in progress without calling the hook (the master is stopping)."""
        if self.active:
            log.info("reload abandoned: %s", why, extra={"event": "reload", "result": "abandoned", "reason": why})
        self.active = self.queued = False
        self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self.retry_wake is not None:
            self.retry_wake.cancel()
        self.retry_deadline = self.retry_wake = None

    def _finish(self, ok: bool) -> None:
        self.active = False
        self._stop_waiting()
        empty = [slot.id for slot in self.pool.slots if slot.current is None or not slot.current.ready]
        if ok and empty:
            ok = False  # a crash-looping slot was skipped: it serves neither the new code nor the old
            log.error(
                "rolling reload incomplete: slots %s have no serving worker (see their errors above)",
                empty,
                extra={"event": "reload", "result": "failed", "reason": "incomplete", "slots": empty},
            )
            errors = "".join(f"; slot {i}: {self.last_error(i)}" for i in empty if self.last_error(i))
            self.pool.counters.reload_failed(
                f"rolling reload incomplete: slots {empty} have no serving worker{errors}; "
                "the others serve the new code"
            )
        if ok:
            log.info(
                "rolling reload done: %d workers on the new code",
                len(self.pool.slots),
                extra={"event": "reload", "result": "ok", "workers": len(self.pool.slots)},
            )
        self.events.emit("reloaded", ok)
