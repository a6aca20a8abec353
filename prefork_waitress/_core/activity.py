"""What each slot is doing right now, read from the master's own records and the shared meters.

No message to any worker: a busy or stuck worker is shown as it is
(``prefork-waitress ctl top``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterable

from .slots import Slot

__all__ = ["slot_activity"]


def _state(slot: Slot) -> str:
    worker = slot.current
    if slot.retiring:
        return "retiring"
    if worker is None:
        return "respawning"
    if worker.stopping:
        return "stopping"
    return "serving" if worker.ready else "starting"


def slot_activity(slots: Iterable[Slot]) -> Dict[int, Dict[str, Any]]:
    """Per slot id: its state and its current worker's running request (method, path, elapsed s) or None."""
    now = time.monotonic()
    activity: Dict[int, Dict[str, Any]] = {}
    for slot in slots:
        meter = slot.current.meter if slot.current is not None else None
        current = meter.current() if meter is not None else None
        request = None
        if current is not None:
            request = {"method": current.method, "path": current.path, "elapsed": max(0.0, now - current.started)}
        activity[slot.id] = {"state": _state(slot), "request": request}
    return activity
