"""The states of a slot and of a worker process, and the transitions each may take.

The tables below are the whole state machine: :class:`~.registry.SlotRegistry` (the
pool's base) is the one writer of ``slot.state`` and ``worker.state``, and every move
goes through :func:`move`, which refuses a move the table does not list
(:class:`IllegalTransition`). A new state goes in its Enum and its row here; the
registry method that enters it is the only place that may.

Worker process::

    booting --ready--> ready --retire--> retiring --quiet or stop--> stopping --reaped--> exited
       |                 |                                             ^
       +-----------------+---------------stop (SIGTERM/SIGKILL)--------+      (any --reaped--> exited)

Slot (a port in or leaving the pool; the usual paths: in the pool, its state follows its processes,
so it may move between any two in-pool states when a race makes several changes at once)::

    empty --fork--> starting --worker ready--> serving --successor forked--> replacing
      ^  \\                                        ^                              |
      |   backing_off (respawn timer)             +---successor serves/fails-----+
      +-- its worker exited (respawn now, or backing_off)
    any in-pool state --scale down--> retiring --worker gone--> closed
    retiring --scale up again (taken back)--> the in-pool state its worker gives
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Dict, FrozenSet, Mapping, TypeVar

log = logging.getLogger("prefork_waitress")


class IllegalTransition(RuntimeError):
    """A move the state table does not allow: a bug in the master, never the user's doing."""


class WorkerState(enum.Enum):
    """Where one worker process is in its life (``ctl status``: ``worker_state``)."""

    BOOTING = "booting"  # forked, importing the app; boot_timeout runs
    READY = "ready"  # reported ready: it serves its port (or waits to take over its slot)
    RETIRING = "retiring"  # told to accept until its port is quiet, then drain (no successor shares its socket)
    STOPPING = "stopping"  # asked to leave (SIGTERM drains, SIGKILL ends); a kill timer runs
    EXITED = "exited"  # reaped


class SlotState(enum.Enum):
    """Where one slot is (``ctl status``: ``state``)."""

    EMPTY = "empty"  # in the pool, no process: a fork is due now
    BACKING_OFF = "backing_off"  # in the pool, no process: a respawn timer is pending (crash loop, failed fork)
    STARTING = "starting"  # its worker is booting
    SERVING = "serving"  # its worker is ready
    REPLACING = "replacing"  # a successor is booting beside its worker (reload, recycle, refork, timeout)
    RETIRING = "retiring"  # out of the pool (scale down, stop): its worker serves until released, then drains
    CLOSED = "closed"  # retired: its worker is gone and its socket closed


W, S = WorkerState, SlotState

WORKER_TRANSITIONS: Mapping[WorkerState, FrozenSet[WorkerState]] = {
    W.BOOTING: frozenset({W.READY, W.RETIRING, W.STOPPING, W.EXITED}),
    W.READY: frozenset({W.RETIRING, W.STOPPING, W.EXITED}),
    W.RETIRING: frozenset({W.STOPPING, W.EXITED}),
    W.STOPPING: frozenset({W.EXITED}),
    W.EXITED: frozenset(),
}

_IN_POOL = frozenset({S.EMPTY, S.BACKING_OFF, S.STARTING, S.SERVING, S.REPLACING})

# A slot in the pool is in the state its processes give it (WorkerPool._phase), so it may go from any
# of those to any other: a scale up taking back a slot while a reload's successor boots for it can
# make it empty, then serving, in one step. What the table holds: leaving the pool is RETIRING,
# coming back is only from RETIRING, and CLOSED is final.
SLOT_TRANSITIONS: Mapping[SlotState, FrozenSet[SlotState]] = {
    **{state: (_IN_POOL - {state}) | {S.RETIRING} for state in _IN_POOL},
    S.RETIRING: _IN_POOL | {S.CLOSED},  # taken back by a scale up, or closed once its worker is gone
    S.CLOSED: frozenset(),
}

E = TypeVar("E", WorkerState, SlotState)


def move(obj: Any, new: E, **fields: Any) -> bool:
    """Set ``obj.state`` to ``new`` if the table allows it (staying put is no move: False).

    Raises IllegalTransition otherwise. Logged at debug level (the user-facing lines are the pool's)."""
    old = obj.state
    if old is new:
        return False
    table: Mapping[Any, FrozenSet[Any]] = WORKER_TRANSITIONS if isinstance(new, WorkerState) else SLOT_TRANSITIONS
    if new not in table[old]:
        raise IllegalTransition(f"{obj!r}: {old.value} -> {new.value} is not a legal transition")
    obj.state = new
    extra: Dict[str, Any] = dict(fields, event="transition", state=new.value, previous=old.value)
    log.debug("%r: %s -> %s", obj, old.value, new.value, extra=extra)
    return True
