"""Prometheus metrics of a master and its workers, served by the master's own loop.

:func:`collect` builds the families from what the master already knows (its
slots, its counters, the workers' shared request meters, /proc, TCP_INFO):
no message to any worker, so a busy or stuck worker never delays a scrape.
:class:`MetricsServer` answers ``GET /metrics`` on ``metrics_host:metrics_port``
through :class:`~.http_server.HttpServer` (bounded, never held by idle clients);
it is never in the app's request path.
``prefork-waitress ctl metrics`` prints the same text through the control socket.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from typing import Any, Dict, List

from .._core.counters import RESTART_REASONS
from .._core.handle import MasterHandle
from .._core.lifecycle import State
from .._os.activation import claim_inherited
from .._os.handoff import predecessor_pid
from .._os.memory import resident_bytes
from .._wire.meter import BUCKETS, RequestCounts
from . import exposition
from .http_server import HttpServer, Reply

__all__ = ["MetricsServer", "collect", "render_metrics"]

log = logging.getLogger("prefork_waitress")

P = "prefork_waitress_"  # every metric name begins with it
_STARTED = time.time()


@functools.lru_cache(maxsize=None)
def _versions() -> Dict[str, str]:
    """Found once: importlib.metadata scans the installed distributions (about 1.5 ms)."""
    import sys

    import waitress

    package = sys.modules.get(__name__.split(".")[0])  # the top package, already imported
    return {
        "version": str(getattr(package, "__version__", None) or _dist_version("prefork_waitress")),
        "waitress_version": str(getattr(waitress, "__version__", None) or _dist_version("waitress")),
        "python_version": platform.python_version(),
    }


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def collect(master: MasterHandle) -> List[exposition.Family]:
    """Every metric family, read now."""
    status = master.status()
    slots = [({"slot": str(w["id"])}, w["pid"]) for w in status["workers"]]
    by_slot = [({"slot": str(slot_id)}, counts) for slot_id, counts in master.request_counts().items()]
    ports = dict(zip((w["id"] for w in status["workers"]), status["master"]["ports"]))
    queues = [({"slot": str(i), "port": str(ports[i])}, q) for i, q in master.accept_queues().items() if q]
    return [
        *_cluster_families(status, slots),
        *_request_families(by_slot),
        *_worker_families(master.counters, status, slots, queues),
    ]


def _cluster_families(status: Dict[str, Any], slots: List[Any]) -> List[exposition.Family]:
    gauge = exposition.gauge
    running = State(status["master"]["state"]) is State.RUNNING
    return [
        gauge(P + "build_info", "Versions of prefork_waitress, waitress and Python (value 1).", [(_versions(), 1)]),
        gauge(P + "up", "1 while the master is running (all slots started).", [({}, int(running))]),
        gauge(P + "master_start_time_seconds", "When the master started, Unix time.", [({}, _STARTED)]),
        gauge(P + "master_resident_memory_bytes", "The master's RSS.", _known([({}, resident_bytes())])),
        gauge(P + "workers", "Worker slots.", [({}, len(slots))]),
        gauge(P + "workers_serving", "Slots whose worker process is up.", [({}, sum(p is not None for _, p in slots))]),
    ]


def _request_families(by_slot: List[Any]) -> List[exposition.Family]:
    gauge, counter, histogram = exposition.gauge, exposition.counter, exposition.histogram
    cluster = sum((counts for _, counts in by_slot), RequestCounts())
    return [
        counter(P + "requests_total", "Requests served by the slot.", [(s, n.requests) for s, n in by_slot]),
        counter(P + "cluster_requests_total", "Requests served by every slot.", [({}, cluster.requests)]),
        gauge(P + "requests_in_flight", "Requests running in the slot.", [(s, n.in_flight) for s, n in by_slot]),
        gauge(P + "cluster_requests_in_flight", "Requests running in all slots.", [({}, cluster.in_flight)]),
        histogram(
            P + "request_duration_seconds",
            "Time the app took per request (from its call until the response was handed to waitress).",
            BUCKETS,
            [(s, n.buckets, n.duration_sum) for s, n in by_slot],
        ),
        histogram(
            P + "cluster_request_duration_seconds",
            "Request duration, all slots.",
            BUCKETS,
            [({}, cluster.buckets, cluster.duration_sum)],
        ),
    ]


def _worker_families(
    counters: Any, status: Dict[str, Any], slots: List[Any], queues: List[Any]
) -> List[exposition.Family]:
    gauge, counter = exposition.gauge, exposition.counter
    slot_ids = sorted({w["id"] for w in status["workers"]} | set(counters.slot_restarts))
    return [
        gauge(
            P + "worker_resident_memory_bytes",
            "RSS of the slot's current worker process.",
            _known([(s, resident_bytes(pid) if pid else None) for s, pid in slots]),
        ),
        counter(
            P + "worker_restarts_total",
            "New worker processes for a slot, by reason: crash, killed, timeout, recycled, reload.",
            [({"reason": reason}, counters.restarts.get(reason, 0)) for reason in RESTART_REASONS],
        ),
        counter(
            P + "slot_restarts_total",
            "New worker processes of the slot, by reason (as worker_restarts_total).",
            [
                ({"slot": str(slot_id), "reason": reason}, counters.slot_restarts.get(slot_id, {}).get(reason, 0))
                for slot_id in slot_ids
                for reason in RESTART_REASONS
            ],
        ),
        counter(
            P + "reloads_total",
            "Rolling reloads, by result: ok or failed.",
            [({"result": result}, n) for result, n in counters.reloads.items()],
        ),
        gauge(P + "accept_queue_length", "Connections in the slot's listen queue.", [(s, q[0]) for s, q in queues]),
        gauge(P + "accept_queue_limit", "The slot's listen queue limit.", [(s, q[1]) for s, q in queues]),
    ]


def _known(series: List[Any]) -> List[Any]:
    return [(labels, value) for labels, value in series if value is not None]


def render_metrics(master: MasterHandle) -> str:
    """The exposition text (format 0.0.4) of ``master``'s metrics."""
    return exposition.render(collect(master))


# -- the HTTP endpoint --------------------------------------------------------------------


def metrics_reply(master: MasterHandle) -> Reply:
    """The /metrics route: the exposition text, read now."""
    return "200 OK", render_metrics(master).encode("utf-8"), exposition.CONTENT_TYPE


class MetricsServer:
    """Master listener: the /metrics endpoint (and any route added) in the master loop."""

    def __init__(self, master: MasterHandle, host: str, port: int) -> None:
        self.master = master
        self.http = HttpServer(master, host, port, {"/metrics": lambda: metrics_reply(master)})
        self._deferred = False

    def starting(self) -> None:
        """Bind with the worker ports, before the first fork (a port in use fails the start)."""
        sock = claim_inherited("metrics")  # an upgrade: the old master's, with its queue
        if sock is not None and sock.getsockname()[1] != self.http.port:
            sock.close()
            sock = None
        self._deferred = predecessor_pid() is not None  # an upgrade's new master: the old one answers for now
        port = self.http.open(sock, accepting=not self._deferred)
        log.info("metrics on http://%s:%d/metrics", self.http.host, port)

    def when_ready(self) -> None:
        """A new master (upgrade) answers on the old master's port once it has taken over."""
        if self._deferred:
            self._deferred = False
            self.http.accept()

    def upgraded(self, ok: bool) -> None:
        """A new master took over the (shared) port: new scrapes and probes are its own from now on."""
        if ok:
            self.http.let_go()

    def stopped(self) -> None:
        self.http.close()
