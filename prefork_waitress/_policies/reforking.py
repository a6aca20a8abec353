"""Reforking (``refork_after``): the other slots' workers are forked again from a warm worker, in generations.

``refork_after`` is a list of request counts, one per refork generation (a
single number is a list of one). A worker the master forked (generation 0:
cold, its lazy imports and caches are its own) says so once it has served
the first count. It becomes the template, and every other slot whose worker
is less warm gets a successor forked from the template (generation 1), one
slot at a time through the SlotReplacer: the successor serves before the
old worker drains, as in a rolling reload. The pages the template had warmed
are then shared by all.

Generation n + 1 is made the same way, from a warmer template: the first
worker of generation n (or the template that made generation n) to have
served the (n+1)-th count. As in Shopify's Pitchfork, the counts grow (e.g.
50, 1000, 10000), since a worker dirties its shared pages fast at first and
then slower; unlike Pitchfork, the last count is not repeated. Workers
forked later by the master (respawn, recycle, reload) are cold again
(generation 0), and the first of them to reach the first count reforks
the other cold slots.
"""

from __future__ import annotations

import functools
import logging
from typing import Dict, List, Optional, Tuple

from .._core.pool import Adopted, WorkerPool
from .._core.slots import Slot, WorkerProcess, log_fields
from .replacing import SlotReplacer

log = logging.getLogger("prefork_waitress")


class Reforker:
    """The template of the round in progress, the slots still to refork from it, and each worker's warmth."""

    def __init__(self, after: Tuple[int, ...], pool: WorkerPool, replacer: SlotReplacer) -> None:
        self.after = tuple(after)
        self.pool = pool
        self.replacer = replacer
        self.template: Optional[WorkerProcess] = None
        self.making = 0  # the refork generation the round in progress makes
        self.waiting = 0  # replacements of this round not yet done
        self.reforked = 0  # of this round, the slots that got a worker forked from the template
        self.made: Dict[int, int] = {}  # pid of a live template -> the generation it made
        self.served: Dict[int, int] = {}  # pid -> the last threshold it reported

    def level(self, worker: WorkerProcess) -> int:
        """How warm a worker counts: its refork generation, or the generation it made as a template."""
        return max(worker.refork_generation, self.made.get(worker.pid, 0))

    def warm(self, worker: WorkerProcess, served: int) -> None:
        """``worker`` has served ``served`` requests (a threshold): make it the next template if it qualifies."""
        if not self.after:
            return
        self._forget_dead()
        self.served[worker.pid] = served
        if self.template is None:
            self._start(worker)

    def _start(self, worker: WorkerProcess) -> bool:
        """Start a round from ``worker`` if it has served its generation's threshold and some slot is colder."""
        level = self.level(worker)
        if level >= len(self.after) or self.served.get(worker.pid, 0) < self.after[level]:
            return False
        if worker.slot.current is not worker or worker.stopping or not worker.ready:
            return False
        colder = self._colder_slots(worker, level)
        if not colder:
            return False
        self.template, self.making, self.waiting, self.reforked = worker, level + 1, len(colder), 0
        self.made[worker.pid] = level + 1
        log.info(
            "worker %d (pid %d) is warm (%d requests); refork generation %d: forking the workers of slots %s from it",
            worker.slot.id,
            worker.pid,
            self.served[worker.pid],
            self.making,
            ", ".join(str(slot.id) for slot in colder),
            extra=log_fields(
                worker, "refork", result="started", refork_generation=self.making, slots=[slot.id for slot in colder]
            ),
        )
        for slot in colder:
            self.replacer.add(slot, "refork", functools.partial(self._done, slot), slot.current, self._fork)
        return True

    def _colder_slots(self, template: WorkerProcess, level: int) -> List[Slot]:
        return [
            slot
            for slot in self.pool.slots
            if slot is not template.slot and slot.current is not None and self.level(slot.current) <= level
        ]

    def _forget_dead(self) -> None:
        live = self.pool.processes
        self.made = {pid: made for pid, made in self.made.items() if pid in live}
        self.served = {pid: served for pid, served in self.served.items() if pid in live}

    def _fork(self, slot: Slot, adopted: Adopted) -> None:
        template = self.template
        if template is None or template.slot.current is not template or template.stopping:
            adopted(None, "the template worker is no longer serving")
            return
        self.pool.fork_from(template, slot, adopted, self.making)

    def _done(self, slot: Slot, ok: bool, failed: Optional[WorkerProcess], exitcode: Optional[int]) -> None:
        self.waiting -= 1
        if self.template is None:
            return
        worker = slot.current
        self.reforked += worker is not None and worker.reforked_from == self.template.pid
        if self.waiting > 0:
            return
        log.info(
            "refork from pid %d done: %d slot(s) reforked (refork generation %d)",
            self.template.pid,
            self.reforked,
            self.making,
            extra={
                "event": "refork",
                "result": "done",
                "template_pid": self.template.pid,
                "reforked": self.reforked,
                "refork_generation": self.making,
            },
        )
        self.template = None
        self._next_round()

    def _next_round(self) -> None:
        """A worker that passed its threshold while the last round ran starts the next one now."""
        workers = [slot.current for slot in self.pool.slots if slot.current is not None]
        for worker in sorted(workers, key=self.level, reverse=True):
            if worker.pid in self.served and self._start(worker):
                return

    def abandon(self) -> None:
        """The master stops: the round ends (its queued replacements are dropped)."""
        self.replacer.drop("refork")
        self.template, self.waiting = None, 0
