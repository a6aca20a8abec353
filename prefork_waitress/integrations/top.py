"""The ``top`` action of the control socket: one snapshot of the cluster for ``prefork-waitress ctl top``.

Built from what the master already knows, as the metrics are: its slots and
counters, the workers' shared meters (request counts, duration histogram,
the running request's method, path and start), /proc and the accept queues.
No message goes to a worker, so a busy or stuck worker never delays it.
Rates and percentiles over an interval are the client's work: it subtracts
two snapshots.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from .._core.handle import MasterHandle
from .._os.memory import resident_bytes
from .._wire.meter import BUCKETS, RequestCounts

__all__ = ["top_snapshot"]


def top_snapshot(master: MasterHandle) -> Dict[str, Any]:
    """The master, its totals and one entry per slot, JSON-able."""
    status = master.status()
    counts = master.request_counts()
    activity = master.activity()
    counters = master.counters
    workers = []
    for worker in status["workers"]:
        slot_id = worker["id"]
        served = counts.get(slot_id, RequestCounts())
        doing = activity.get(slot_id, {"state": "unknown", "request": None})
        pid = worker["pid"]
        workers.append(
            dict(
                worker,
                state=doing["state"],
                busy=doing["request"] is not None,
                request=doing["request"],
                requests=served.requests,
                buckets=list(served.buckets),
                duration_sum=served.duration_sum,
                rss=resident_bytes(pid) if pid else None,
                restarts_by_reason=dict(counters.slot_restarts.get(slot_id, {})),
            )
        )
    return {
        "time": time.time(),
        "monotonic": time.monotonic(),
        "master": dict(
            status["master"],
            rss=resident_bytes(),
            restarts=dict(counters.restarts),
            reloads=dict(counters.reloads),
        ),
        "bounds": list(BUCKETS),
        "workers": workers,
    }
