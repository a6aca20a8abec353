"""Retiring slots on scale-down only once every frontend has stopped sending to their ports.

A frontend is any master listener with ``release_ports(ports, done)``: the
upstream file (done once the ``on_ports_changed`` command has exited) and
HAProxy (done once the servers are drained). Until all of them called
``done`` (or the deadline passed), a retiring slot keeps its worker serving;
then ``retire(slot)`` stops it. A slot asked for again (scale up) before that
is handed back instead.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, List, Optional, Protocol, Sequence

log = logging.getLogger("prefork_waitress")

RELEASE_TIMEOUT = 60.0  # seconds the frontends get before the slots are retired anyway


class Frontend(Protocol):
    """Something that sends traffic to the ports and can be told to stop."""

    def release_ports(self, ports: List[int], done: Callable[[], None]) -> None:
        """Stop sending new requests to ``ports``; call ``done()`` once no request is left there."""


class RetiringSlot(Protocol):
    id: int
    port: int


class _Job:
    def __init__(self, slots: List[Any], waiting: int, retire: Callable[[Any], None]) -> None:
        self.slots = slots
        self.waiting = waiting
        self.retire = retire
        self.timer: Any = None


class Retirements:
    """The slots waiting for the frontends to let go of them."""

    def __init__(
        self,
        call_later: Callable[[float, Callable[[], None]], Any],
        frontends: Callable[[], Sequence[Frontend]],
        retire: Callable[[Any], None],
        timeout: float = RELEASE_TIMEOUT,
    ) -> None:
        self._call_later = call_later
        self._frontends = frontends
        self._retire = retire
        self._timeout = timeout
        self._jobs: List[_Job] = []

    @property
    def pending(self) -> List[Any]:
        """The slots still waiting, oldest first."""
        return [slot for job in self._jobs for slot in job.slots]

    def begin(self, slots: Iterable[RetiringSlot], retire: Optional[Callable[[Any], None]] = None) -> None:
        """Tell every frontend to let go of these slots' ports; then ``retire`` each (default: the one given)."""
        chosen = list(slots)
        if not chosen:
            return
        frontends = list(self._frontends())
        job = _Job(chosen, len(frontends), retire or self._retire)
        self._jobs.append(job)
        if frontends:
            job.timer = self._call_later(self._timeout, lambda: self._finish(job, timed_out=True))
        ports = [slot.port for slot in chosen]
        for frontend in frontends:
            try:
                frontend.release_ports(list(ports), self._counter(job))
            except Exception:
                log.exception("frontend %r failed to release ports %s", frontend, ports)
                job.waiting -= 1
        if job.waiting <= 0:
            self._finish(job)

    def reclaim(self, slot_id: int) -> Optional[Any]:
        """Take back a slot that is still waiting (scale up again), or None."""
        for job in self._jobs:
            for slot in job.slots:
                if slot.id == slot_id:
                    job.slots.remove(slot)
                    return slot
        return None

    def abandon(self) -> None:
        """Retire every waiting slot now (the master is stopping at once)."""
        for job in list(self._jobs):
            self._finish(job)

    def _counter(self, job: _Job) -> Callable[[], None]:
        called: List[bool] = []

        def done() -> None:
            if called:
                return
            called.append(True)
            job.waiting -= 1
            if job.waiting <= 0:
                self._finish(job)

        return done

    def _finish(self, job: _Job, timed_out: bool = False) -> None:
        if job not in self._jobs:
            return
        self._jobs.remove(job)
        if job.timer is not None:
            job.timer.cancel()
        if timed_out:
            log.warning(
                "the frontends did not let go of ports %s within %g s; retiring them anyway",
                [slot.port for slot in job.slots],
                self._timeout,
            )
        for slot in job.slots:
            job.retire(slot)
