"""Crash loops: workers that die before they are ready are retried with a growing delay.

A slot whose new worker cannot start (the app fails to import, ``on_start``
raises, the process exits or is killed before it reports ready) is retried
after BACKOFF_START seconds, doubling up to BACKOFF_CAP, until a worker of
that slot becomes ready again. The wait is a timer in the master loop, so
the master sleeps in the kernel between attempts. The first failure is
logged with its traceback; the same error again is logged in one line.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Dict, Optional

from .._core.counters import exit_reason
from .._core.slots import Slot, WorkerProcess, describe_exit, exit_fields, log_fields

log = logging.getLogger("prefork_waitress")

BACKOFF_START = 0.1
BACKOFF_CAP = 30.0
HEALTHY_UPTIME = 5.0  # a worker that served this long before dying was healthy: respawn at once
# Deaths by these signals come from outside (an operator, a kill storm, the OOM killer): respawn at once.
EXTERNAL_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


def backoff_delay(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
    return min(BACKOFF_CAP, BACKOFF_START * 2.0 ** max(0, failures - 1))


class CrashLoops:
    """The last error of each failing slot, so a repeated error is logged once in full."""

    def __init__(self) -> None:
        self._last_error: Dict[int, str] = {}

    def last_error(self, slot_id: int) -> Optional[str]:
        """The error the slot's last worker that could not start gave (None once one started)."""
        return self._last_error.get(slot_id)

    def failed(self, slot: Slot, worker: WorkerProcess, exitcode: Optional[int], then: str = "") -> float:
        """Record that ``worker`` died before it was ready; log it; return the delay before a retry.

        ``then`` says what happens meanwhile (e.g. "the old worker keeps serving").
        """
        slot.boot_failures += 1
        attempt = slot.boot_failures
        delay = backoff_delay(attempt)
        why = describe_exit(exitcode)
        error, details = worker.boot_failure(exitcode)
        meanwhile = f"; {then}" if then else ""
        fields = log_fields(worker, "boot_failed", attempt=attempt, delay=delay, error=error, **exit_fields(exitcode))
        if self._last_error.get(slot.id) == error:
            log.error(
                "worker %d (pid %d) still failing (same error, %s, attempt %d, next in %.1f s)%s",
                slot.id,
                worker.pid,
                why,
                attempt,
                delay,
                meanwhile,
                extra=fields,
            )
        else:
            self._last_error[slot.id] = error
            log.error(
                "worker %d (pid %d) could not start (%s, attempt %d): %s%s; retrying in %.1f s%s",
                slot.id,
                worker.pid,
                why,
                attempt,
                error,
                meanwhile,
                delay,
                details,
                extra=fields,
            )
        return delay

    def died_after_ready(self, slot: Slot, worker: WorkerProcess, exitcode: Optional[int]) -> float:
        """A ready worker died: seconds before its successor (0: at once; growing if it keeps crashing early).

        A crash (exit code, SIGSEGV, SIGABRT) within HEALTHY_UPTIME of becoming ready
        counts toward the backoff, so an app that dies on every request cannot
        make a fork storm; a healthy worker, or one killed from outside, is
        replaced at once.
        """
        uptime = time.monotonic() - (worker.ready_at or worker.forked_at)
        external = exitcode is not None and exitcode < 0 and -exitcode in EXTERNAL_SIGNALS
        if uptime >= HEALTHY_UPTIME or external:
            slot.early_crashes = 0
            log.warning(
                "worker %d (pid %d) died with %s; respawning on port %d",
                slot.id,
                worker.pid,
                describe_exit(exitcode),
                slot.port,
                extra=log_fields(
                    worker, "worker_exit", reason=exit_reason(exitcode), respawn_in=0.0, **exit_fields(exitcode)
                ),
            )
            return 0.0
        slot.early_crashes += 1
        delay = 0.0 if slot.early_crashes == 1 else backoff_delay(slot.early_crashes - 1)
        log.error(
            "worker %d (pid %d) died with %s %.2f s after it became ready (%d in a row); "
            "respawning in %.1f s (crash-loop backoff)",
            slot.id,
            worker.pid,
            describe_exit(exitcode),
            uptime,
            slot.early_crashes,
            delay,
            extra=log_fields(
                worker, "worker_exit", reason="crash_loop", respawn_in=delay, uptime=uptime, **exit_fields(exitcode)
            ),
        )
        return delay

    def recovered(self, slot: Slot) -> None:
        """A worker of ``slot`` is ready: the next failure starts the backoff afresh."""
        if slot.boot_failures:
            log.info("worker %d is serving again after %d failed attempts", slot.id, slot.boot_failures)
        slot.boot_failures = 0
        self._last_error.pop(slot.id, None)
