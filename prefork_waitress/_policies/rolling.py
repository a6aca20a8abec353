"""Rolling reload: every slot gets a new worker through the SlotReplacer, one at a time."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from .._core.slots import WorkerProcess

if TYPE_CHECKING:
    from ..master import Master

log = logging.getLogger("prefork_waitress")


class RollingReload:
    """The reload in progress (at most one) and whether another was asked for meanwhile."""

    def __init__(self, master: "Master") -> None:
        self.master = master
        self.active = False
        self.queued = False
        self.pending = 0

    def request(self) -> None:
        """Start a reload now, or queue one if a reload (or the first boot) is under way."""
        state = self.master.state
        if state in ("stopping", "stopped"):
            log.info("reload ignored: the master is %s", state)
            return
        if self.active or state != "running":
            if not self.queued:
                log.info("reload queued: it starts when the current %s ends", "reload" if self.active else "boot")
            self.queued = True
            return
        self._begin()

    def start_queued(self) -> None:
        """Run a reload that was asked for while none could start."""
        if self.queued and not self.active and self.master.state == "running":
            self.queued = False
            self._begin()

    def _begin(self) -> None:
        master = self.master
        log.info("rolling reload of %d workers", len(master._slots))
        master.emit("reloading")
        try:
            master.reload_code()
        except Exception:
            log.exception("reload abandoned: the new code cannot be loaded; the old workers keep serving")
            self._finish(False)
            return
        self.active = True
        slots = list(master._slots)
        self.pending = len(slots)
        for slot in slots:
            master._replacer.add(slot, "reload", self._slot_done)
        if not slots:
            self._finish(True)

    def _slot_done(self, ok: bool, failed: Optional[WorkerProcess], exitcode: Optional[int]) -> None:
        if not self.active:
            return
        if not ok:
            self.master._replacer.drop("reload")
            if failed is not None:
                reason, details = failed.boot_failure(exitcode)
                log.error(
                    "reload abandoned: the new worker %d could not start (%s); the old workers keep serving%s",
                    failed.slot.id,
                    reason,
                    details,
                )
            self._finish(False)
            return
        self.pending -= 1
        if self.pending == 0:
            self._finish(True)

    def abandon(self, why: str) -> None:
        """Drop the reload in progress without calling the hook (the master is stopping)."""
        if self.active:
            log.info("reload abandoned: %s", why)
        self.active = self.queued = False

    def _finish(self, ok: bool) -> None:
        self.active = False
        if ok:
            log.info("rolling reload done: %d workers on the new code", len(self.master._slots))
        self.master.emit("reloaded", ok)
        self.start_queued()
