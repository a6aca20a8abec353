"""What the master counts for monitoring: restarts by reason, reloads, requests of exited workers.

The live workers' requests are in their shared meters; when a worker
exits, the master folds its last counts in here, by slot id, so the totals
of a slot never go down when its process is replaced (Prometheus counters).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

from .._wire.meter import RequestCounts

__all__ = ["RESTART_REASONS", "ClusterCounters", "exit_reason"]

# crash: exited on its own; killed: by a signal it did not ask for; timeout: request_timeout;
# recycled: max_requests (or another recycling policy); reload: a rolling reload;
# refork: replaced by a worker forked from a warm template (refork_after).
RESTART_REASONS: Tuple[str, ...] = ("crash", "killed", "timeout", "recycled", "reload", "refork")
_PURPOSE_REASON = {"recycle": "recycled", "reload": "reload"}


def exit_reason(exitcode: Optional[int]) -> str:
    """The restart reason of a worker that exited unexpectedly: "killed" by a signal, else "crash"."""
    return "killed" if exitcode is not None and exitcode < 0 else "crash"


class ClusterCounters:
    """Monotonic counters of one master, all read in its loop."""

    def __init__(self) -> None:
        self.restarts: Dict[str, int] = dict.fromkeys(RESTART_REASONS, 0)
        self.slot_restarts: Dict[int, Dict[str, int]] = {}  # by slot id, then by reason
        self.reloads: Dict[str, int] = {"ok": 0, "failed": 0}
        self.exited: Dict[int, RequestCounts] = {}  # by slot id
        self.last_reload_error: Optional[str] = None  # why the last rolling reload failed

    def restarted(self, reason: str, slot_id: Optional[int] = None) -> None:
        """A slot (``slot_id``) got a new worker process because of ``reason``."""
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        if slot_id is not None:
            by_reason = self.slot_restarts.setdefault(slot_id, {})
            by_reason[reason] = by_reason.get(reason, 0) + 1

    def replaced(self, purpose: str, slot_id: Optional[int] = None) -> None:
        """A replacement (SlotReplacer purpose "reload", "recycle", ...) swapped a slot's worker."""
        self.restarted(_PURPOSE_REASON.get(purpose, purpose), slot_id)

    def reloading(self) -> None:
        """Listener hook: a rolling reload begins (its failure, if any, is yet to be told)."""
        self.last_reload_error = None

    def reloaded(self, ok: bool) -> None:
        """Listener hook: a rolling reload finished or was abandoned."""
        self.reloads["ok" if ok else "failed"] += 1

    def reload_failed(self, why: str) -> None:
        """Why the reload that is about to be reported failed (``ctl reload`` shows it)."""
        self.last_reload_error = why

    def process_exited(self, slot_id: int, counts: RequestCounts) -> None:
        """Keep what an exited worker served (its meter is about to be unmapped)."""
        self.exited[slot_id] = self.exited.get(slot_id, RequestCounts()) + counts.finished()

    def requests(self, live: Iterable[Tuple[int, RequestCounts]]) -> Dict[int, RequestCounts]:
        """Per slot id: exited workers' counts plus the live ones given as (slot id, counts)."""
        totals = dict(self.exited)
        for slot_id, counts in live:
            totals[slot_id] = totals.get(slot_id, RequestCounts()) + counts
        return dict(sorted(totals.items()))
