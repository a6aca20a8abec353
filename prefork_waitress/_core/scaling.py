"""Growing the slots for ``scale(n)``: every port checked, every socket opened, or none.

A new slot whose port belongs to a slot still retiring (its worker draining)
takes that slot back, socket and all, so the port is never bound twice
(no EADDRINUSE) and no queued connection is reset. This module only plans
and binds; the pool moves the slots' states.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from .._os.limits import is_out_of_fds, out_of_fds_message
from ..errors import StartError
from ..options import convert_option
from .slots import Slot, WorkerProcess, bind_socket
from .states import SlotState

MAX_PORT = 65535


def check_count(n: object) -> int:
    """``n`` as a worker count, with the workers option's bounds and message."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"scale: expected a whole number of workers >= 1, got {n!r}")
    try:
        count: int = convert_option("workers", n)
    except ValueError as exc:
        raise ValueError(f"scale: {exc}") from None
    return count


def plan(slots: List[Slot], n: int, base_port: int) -> List[Tuple[int, int]]:
    """(slot id, port) of each slot to add; port 0 means OS-chosen. Refuses ports past 65535."""
    first = slots[-1].id + 1 if slots else 0
    wanted = [(slot_id, base_port + slot_id if base_port else 0) for slot_id in range(first, first + n - len(slots))]
    if wanted and wanted[-1][1] > MAX_PORT:
        slot_id, port = wanted[-1]
        most = MAX_PORT - base_port + 1
        raise ValueError(
            f"scale: slot {slot_id} would listen on port {port}, past {MAX_PORT} "
            f"(base_port {base_port} leaves room for {most} workers)"
        )
    return wanted


def open_slots(wanted: List[Tuple[int, int]], host: str, draining: List[WorkerProcess]) -> List[Slot]:
    """The new slots, their sockets bound, or a retiring slot to take back (still RETIRING: the pool
    takes it back, see ``WorkerPool.grow``); on failure none stays open. Writes no slot's state."""
    retiring: Dict[int, Slot] = {w.slot.id: w.slot for w in draining if w.slot.state is SlotState.RETIRING}
    opened: List[Tuple[Slot, bool]] = []
    try:
        for slot_id, port in wanted:
            old = retiring.get(slot_id)
            if old is not None and port in (0, old.port):
                opened.append((old, False))
            else:
                opened.append((Slot(slot_id, bind_socket(host, port)), True))
    except (StartError, OSError) as exc:
        for slot, new in opened:
            if new:
                slot.sock.close()
        if isinstance(exc, OSError) and is_out_of_fds(exc):
            raise StartError(out_of_fds_message(f"scale: cannot open {len(wanted)} more sockets", exc)) from None
        raise
    return [slot for slot, _ in opened]
