"""The reconcile pass: at the end of each loop turn, what is wanted against what is, then act.

Events (a worker ready or gone, a timer, a command) only record facts and mark
requests (a slot empty, a replacement or a reload queued); this pass decides
from the states what to do about them, and runs again until a round does
nothing, so no work is left for a later turn (the loop has no tick: it may
sleep for hours). A new policy that must act on a state adds a step here.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from .._core.pool import WorkerPool
from .._core.states import SlotState
from .replacing import SlotReplacer
from .rolling import RollingReload

log = logging.getLogger("prefork_waitress")

MAX_ROUNDS = 50  # a pass that still acts after this many rounds is a bug; the next turn goes on


class Reconciler:
    """Fills empty slots, starts the next replacement, finishes or starts reloads, then the master's steps."""

    def __init__(
        self,
        pool: WorkerPool,
        replacer: SlotReplacer,
        rolling: RollingReload,
        serving: Callable[[], bool],
        steps: Sequence[Callable[[], bool]] = (),
    ) -> None:
        """``serving()``: the master is booting or running (slots are to be filled); ``steps``: more
        checks of the master's own (each returns True if it acted)."""
        self.pool = pool
        self.replacer = replacer
        self.rolling = rolling
        self.serving = serving
        self.steps = list(steps)

    def run(self) -> None:
        """Rounds until one does nothing."""
        for _ in range(MAX_ROUNDS):
            if not self.round():
                return
        log.warning("the reconcile pass still acts after %d rounds; going on next turn", MAX_ROUNDS)

    def round(self) -> bool:
        acted = self.fill()
        acted |= self.replacer.pump()
        acted |= self.rolling.reconcile()
        for step in self.steps:
            acted |= step()
        return acted

    def fill(self) -> bool:
        """Fork a worker for each empty slot of the pool (a failed fork backs the slot off)."""
        if not self.serving():
            return False
        empty = [slot for slot in self.pool.slots if slot.state is SlotState.EMPTY]
        for slot in empty:
            self.pool.spawn_or_retry(slot)
        return bool(empty)
