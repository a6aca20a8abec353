"""Recycling after max_requests or max_rss, through the SlotReplacer: the successor serves first.

A worker that has served its ``max_requests`` (or passed ``max_rss``) asks over its Pipe and keeps
serving until its turn comes; the replacer never replaces two slots at
once, so workers that reach their limit together are recycled one by one.
A successor that cannot start leaves the old worker serving; the request is
retried with the crash-loop backoff.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Set

from .._core.slots import WorkerProcess, log_fields
from .backoff import CrashLoops
from .replacing import SlotReplacer

log = logging.getLogger("prefork_waitress")


class Recycler:
    """The workers that asked to be recycled and are waiting for (or in) their turn."""

    def __init__(
        self, replacer: SlotReplacer, crashes: CrashLoops, call_later: Callable[[float, Callable[[], None]], Any]
    ) -> None:
        self.replacer = replacer
        self.crashes = crashes
        self.call_later = call_later
        self.asked: Set[int] = set()  # pids

    def request(self, worker: WorkerProcess, why: str = "") -> None:
        """``worker`` reached max_requests or max_rss (``why`` says which): recycle it when its turn comes."""
        if worker.pid in self.asked or worker.slot.current is not worker or worker.stopping:
            return
        if why:
            fields = log_fields(worker, "recycle", reason=why)
            log.info("worker %d (pid %d) %s; recycling it", worker.slot.id, worker.pid, why, extra=fields)
        self.asked.add(worker.pid)
        self.replacer.add(
            worker.slot,
            "recycle",
            lambda ok, failed, exitcode: self._done(worker, ok, failed, exitcode),
            only_if=worker,
        )

    def _done(self, worker: WorkerProcess, ok: bool, failed: Optional[WorkerProcess], exitcode: Optional[int]) -> None:
        self.asked.discard(worker.pid)
        if ok or failed is None:
            return
        serving = worker.slot.current is worker and not worker.stopping
        then = f"pid {worker.pid} keeps serving" if serving else ""
        delay = self.crashes.failed(worker.slot, failed, exitcode, then=then)
        if serving:
            self.call_later(delay, lambda: self.request(worker))

    def abandon(self) -> None:
        self.asked.clear()
