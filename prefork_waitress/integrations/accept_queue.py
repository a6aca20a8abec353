"""Stuck accept queues: a slot whose queue stays non-empty without shrinking is warned about.

``status()`` reports each slot's accept queue (``_os.accept_queue``); a queue
that stays non-empty while nothing leaves it means the slot's worker is stuck
or at waitress's ``connection_limit``, and :class:`StuckQueues` says so.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Iterable, Optional, Tuple

from .._core.handle import MasterHandle
from .._core.loop import Timer
from .._os import accept_queue as _accept_queue

log = logging.getLogger("prefork_waitress")

STUCK_AFTER = 5.0  # seconds a queue may stay non-empty without shrinking before the warning


class StuckQueues:
    """Warns once per episode when a slot's queue stays non-empty and does not shrink for STUCK_AFTER seconds."""

    def __init__(self, clock: Callable[[], float], stuck_after: float = STUCK_AFTER) -> None:
        self.clock = clock
        self.stuck_after = stuck_after
        self._since: Dict[int, Tuple[float, int]] = {}  # slot id -> (last progress, previous length)
        self._warned: "set[int]" = set()

    def sample(self, queues: Iterable[Tuple[int, int, Optional[int]]]) -> None:
        """``queues``: (slot id, port, queue length or None) of every slot, now."""
        now = self.clock()
        seen = set()
        for slot_id, port, length in queues:
            seen.add(slot_id)
            if not length:
                self._forget(slot_id, port)
                continue
            since, previous = self._since.get(slot_id, (now, length))
            if length < previous:  # it shrank: connections are being accepted
                since = now
            self._since[slot_id] = (since, length)
            if now - since >= self.stuck_after and slot_id not in self._warned:
                self._warned.add(slot_id)
                log.warning(
                    "slot %d (port %d): %d connections in its accept queue, none accepted for %.0f s; "
                    "its worker is stuck or at waitress's connection_limit (slow clients belong behind nginx)",
                    slot_id,
                    port,
                    length,
                    now - since,
                )
        for slot_id in set(self._since) - seen:
            self._since.pop(slot_id, None)
            self._warned.discard(slot_id)

    def _forget(self, slot_id: int, port: int) -> None:
        self._since.pop(slot_id, None)
        if slot_id in self._warned:
            self._warned.discard(slot_id)
            log.info("slot %d (port %d): its accept queue is empty again", slot_id, port)


class AcceptQueueWatch:
    """Master listener: samples every slot's accept queue, each second while one is non-empty.

    While every queue is empty it looks again only every STUCK_AFTER seconds,
    so an idle master wakes rarely (a queue that fills is warned about at most
    STUCK_AFTER seconds later than with a one-second look).
    """

    BUSY_EVERY = 1.0
    IDLE_EVERY = STUCK_AFTER

    def __init__(self, master: MasterHandle) -> None:
        self.master = master
        self.stuck = StuckQueues(time.monotonic)
        self._timer: Optional[Timer] = None

    def when_ready(self) -> None:
        if _accept_queue.supported():
            self._sample()

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        # accept_queues() and ports are both in slot order
        queues = list(zip(self.master.accept_queues().items(), self.master.ports))
        sample = [(slot_id, port, queue[0] if queue else None) for (slot_id, queue), port in queues]
        self.stuck.sample(sample)
        busy = any(length for _, _, length in sample)
        self._timer = self.master.call_later(self.BUSY_EVERY if busy else self.IDLE_EVERY, self._sample)
