"""Memory that stays shared between workers: freezing the preloaded heap, and max_rss.

Freeze: after a preload, ``gc.collect()`` then ``gc.freeze()`` moves every
object the master holds into the GC's permanent generation, so the cyclic
collections in the workers never traverse (and so never write to, and so
never copy) the pages of the app's import-time object graph.

max_rss: the worker checks its own resident size at most once per
``RSS_CHECK_INTERVAL`` (one read of /proc/self/statm, gated on
``time.monotonic()`` after a request), never a syscall per request.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Callable, Optional, Union

RSS_CHECK_INTERVAL = 1.0  # seconds between two reads of /proc/self/statm
MIB = 1024 * 1024


def can_freeze() -> bool:
    """True where the interpreter has gc.freeze (CPython 3.7+; not PyPy)."""
    return hasattr(gc, "freeze")


def freeze_heap() -> int:
    """Collect the import's garbage, then freeze what is left; returns the frozen object count."""
    if not can_freeze():
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def unfreeze_heap() -> None:
    """Before a preload reload: let the old app's objects be collected once they are garbage."""
    if can_freeze():
        gc.unfreeze()


def frozen_count() -> Optional[int]:
    """Objects in the permanent generation (inherited frozen from the master), None if unsupported."""
    return gc.get_freeze_count() if can_freeze() else None


def resident_bytes(pid: Union[int, str] = "self") -> Optional[int]:
    """Resident set size of this process (or ``pid``) in bytes from /proc (None where there is none, or it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RssLimit:
    """Tells once when the process's RSS has passed ``limit_mib``, reading it at most once a second."""

    def __init__(
        self,
        limit_mib: int,
        read_rss: Callable[[], Optional[int]] = resident_bytes,
        clock: Callable[[], float] = time.monotonic,
        interval: float = RSS_CHECK_INTERVAL,
    ) -> None:
        self.limit = limit_mib * MIB
        self.read_rss = read_rss
        self.clock = clock
        self.interval = interval
        self.next_check = clock()  # the first request after boot reads it
        self.exceeded: Optional[int] = None  # the RSS that passed the limit, once it did

    def check(self) -> Optional[int]:
        """After a request: the RSS in bytes the first time it is over the limit, else None."""
        if self.exceeded is not None:
            return None
        now = self.clock()
        if now < self.next_check:
            return None
        self.next_check = now + self.interval
        rss = self.read_rss()
        if rss is None or rss <= self.limit:
            return None
        self.exceeded = rss
        return rss
