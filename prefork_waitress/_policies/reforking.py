"""Reforking (``refork_after``): the other slots' workers are forked again from one warm worker.

A worker the master forked (cold: its lazy imports and caches are its own)
says so once it has served ``refork_after`` requests. It becomes the
template, and every other slot whose worker the master forked gets a
successor forked from the template, one slot at a time through the
SlotReplacer: the successor serves before the old worker drains, as in a
rolling reload. The pages the template had warmed are then shared by all.
Workers forked later by the master (respawn, recycle, reload) are cold
again, and the first of them to reach ``refork_after`` starts the next round.
"""

from __future__ import annotations

import functools
import logging
from typing import List, Optional

from .._core.pool import Adopted, WorkerPool
from .._core.slots import Slot, WorkerProcess, log_fields
from .replacing import SlotReplacer

log = logging.getLogger("prefork_waitress")


class Reforker:
    """The template of the round in progress, and the slots still to refork from it."""

    def __init__(self, after: int, pool: WorkerPool, replacer: SlotReplacer) -> None:
        self.after = after
        self.pool = pool
        self.replacer = replacer
        self.template: Optional[WorkerProcess] = None
        self.waiting = 0  # replacements of this round not yet done
        self.reforked = 0  # of this round, the slots that got a worker forked from the template

    def warm(self, worker: WorkerProcess) -> None:
        """``worker`` has served ``refork_after`` requests: make it the template if it is a cold one."""
        if not self.after or worker.reforked_from is not None or self.template is not None:
            return
        if worker.slot.current is not worker or worker.stopping or not worker.ready:
            return
        cold = self._cold_slots(worker)
        if not cold:
            return
        log.info(
            "worker %d (pid %d) is warm (%d requests); forking the workers of slots %s from it",
            worker.slot.id,
            worker.pid,
            self.after,
            ", ".join(str(slot.id) for slot in cold),
            extra=log_fields(worker, "refork", result="started", slots=[slot.id for slot in cold]),
        )
        self.template, self.waiting, self.reforked = worker, len(cold), 0
        for slot in cold:
            self.replacer.add(slot, "refork", functools.partial(self._done, slot), slot.current, self._fork)

    def _cold_slots(self, template: WorkerProcess) -> List[Slot]:
        return [
            slot
            for slot in self.pool.slots
            if slot is not template.slot and slot.current is not None and slot.current.reforked_from is None
        ]

    def _fork(self, slot: Slot, adopted: Adopted) -> None:
        template = self.template
        if template is None or template.slot.current is not template or template.stopping:
            adopted(None, "the template worker is no longer serving")
            return
        self.pool.fork_from(template, slot, adopted)

    def _done(self, slot: Slot, ok: bool, failed: Optional[WorkerProcess], exitcode: Optional[int]) -> None:
        self.waiting -= 1
        if self.template is None:
            return
        worker = slot.current
        self.reforked += worker is not None and worker.reforked_from == self.template.pid
        if self.waiting <= 0:
            fields = {"event": "refork", "result": "done", "template_pid": self.template.pid, "reforked": self.reforked}
            log.info("refork from pid %d done: %d slot(s) reforked", self.template.pid, self.reforked, extra=fields)
            self.template = None

    def abandon(self) -> None:
        """The master stops: the round ends (its queued replacements are dropped)."""
        self.replacer.drop("refork")
        self.template, self.waiting = None, 0
