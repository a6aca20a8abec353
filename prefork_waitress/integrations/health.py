"""Health endpoints on the metrics port, answered by the master's loop: ``/healthz`` and ``/readyz``.

``/healthz`` is 200 whenever the master's loop runs (it answers it). ``/readyz``
is 200 only while the master runs with every slot served by a worker that
reported ready; 503 while booting, while a slot has no serving worker (a
crash, a reload's gap), while stopping (``shutdown_delay`` included) and
after a failed reload until a later one succeeds. Both carry a small JSON
body saying why. No worker is asked, so a busy single-threaded worker never
fails a probe.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from .._core.handle import MasterHandle
from .http_server import Reply

__all__ = ["Health"]

JSON = "application/json"


class Health:
    """Master listener: remembers a failed reload; computes the two replies."""

    def __init__(self, master: MasterHandle) -> None:
        self.master = master
        self.failure: Optional[str] = None  # why the last reload (or upgrade) failed, until one succeeds

    def reloaded(self, ok: bool) -> None:
        self.failure = None if ok else "the last reload failed; the old workers keep serving"

    def upgraded(self, ok: bool) -> None:
        """An upgrade (a new master) ended; this master is still here only if it failed."""
        self.failure = None if ok else "the last upgrade failed; this master keeps serving"

    def failed(self, why: str) -> None:
        """Mark the master not ready until the next successful reload (e.g. an upgrade failed)."""
        self.failure = why

    def readiness(self) -> Dict[str, Any]:
        """{"ready": bool, "state": ..., "reason": ...} as /readyz sends it."""
        state = self.master.state
        unserved = self.master.unserved_slots()
        reason = None
        if state != "running":
            reason = f"the master is {state}"
        elif unserved:
            reason = f"slots {unserved} have no serving worker"
        elif self.failure is not None:
            reason = self.failure
        body: Dict[str, Any] = {"ready": reason is None, "state": state, "pid": os.getpid()}
        if reason is not None:
            body["reason"] = reason
        if unserved:
            body["unserved_slots"] = unserved
        return body

    def readyz(self) -> Reply:
        body = self.readiness()
        return ("200 OK" if body["ready"] else "503 Service Unavailable"), _json(body), JSON

    def healthz(self) -> Reply:
        return "200 OK", _json({"alive": True, "state": self.master.state, "pid": os.getpid()}), JSON


def _json(body: Dict[str, Any]) -> bytes:
    return (json.dumps(body, sort_keys=True) + "\n").encode("utf-8")
