"""shutdown_delay: after a graceful stop is asked, serve on (and say "stopping") that long, then stop.

The Kubernetes preStop pattern without a shell ``sleep``: the readiness probe
fails at once, so the endpoints controller and the frontends take the pod
out, while every worker still serves what they send meanwhile. A second
graceful stop asked during the delay ends it at once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("prefork_waitress")


class ShutdownDelay:
    """Defers the first graceful stop by ``delay`` seconds."""

    def __init__(self, delay: float, call_later: Callable[[float, Callable[[], None]], Any]) -> None:
        self.delay = delay
        self._call_later = call_later
        self._timer: Any = None
        self._over = False

    @property
    def pending(self) -> bool:
        """Counting down: the master is stopping but still serves."""
        return self._timer is not None and not self._over

    def defer(self, stop: Callable[[], None]) -> bool:
        """True if the stop is deferred (``stop()`` runs after the delay); False: stop now."""
        if self._over or self.delay <= 0:
            return False
        if self._timer is not None:  # asked again during the delay: stop now
            log.info("stop asked again during shutdown_delay; draining now")
            self._end()
            return False
        log.info("stopping in %g s (shutdown_delay): not ready, still serving", self.delay)

        def over() -> None:
            self._end()
            stop()

        self._timer = self._call_later(self.delay, over)
        return True

    def _end(self) -> None:
        self._over = True
        if self._timer is not None:
            self._timer.cancel()
