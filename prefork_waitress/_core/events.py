"""The hook table: master hooks go to the listeners (integrations) first, then to the master."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Protocol

from .slots import WorkerInfo

log = logging.getLogger("prefork_waitress")

Guard = Callable[..., None]


class Listener(Protocol):
    """What a listener may implement; every method is optional (a missing one is skipped).

    The hook methods are the master's hooks (see ``Master``). Three more points are
    for integrations only: ``starting`` (sockets bound, before the first fork;
    raising aborts the start), ``preparing_reload`` (a rolling reload begins,
    before the new code is imported; raising abandons the reload) and
    ``stopped`` (after the last worker exited).
    """

    def starting(self) -> None: ...
    def when_ready(self) -> None: ...
    def worker_started(self, info: WorkerInfo) -> None: ...
    def worker_exited(self, info: WorkerInfo, exitcode: Optional[int]) -> None: ...
    def ports_changed(self, ports: List[int]) -> None: ...
    def reloading(self) -> None: ...
    def preparing_reload(self) -> None: ...
    def reloaded(self, ok: bool) -> None: ...
    def upgraded(self, ok: bool) -> None: ...
    def stopping(self) -> None: ...
    def stopped(self) -> None: ...
    def release_ports(self, ports: List[int], done: Callable[[], None]) -> None:
        """A frontend's: stop sending to ``ports``, ``done()`` once none is in use (see _policies.retiring)."""


class Events:
    """Calls a hook on every listener, then on ``owner`` (the master, whose subclass overrides hooks)."""

    def __init__(self, owner: Any, guarded: Guard) -> None:
        self.owner = owner
        self.guarded = guarded
        self.listeners: List[Any] = []

    def add(self, listener: Any) -> None:
        self.listeners.append(listener)

    def emit(self, hook: str, *args: Any) -> None:
        """A master hook: listeners first (so integrations work even without ``super()``), then the owner."""
        for listener in self.listeners:
            method = getattr(listener, hook, None)
            if method is not None:
                self.guarded(method, *args)
        self.guarded(getattr(self.owner, hook), *args)

    def tell(self, point: str, guarded: bool) -> None:
        """An integration-only point ("starting", "stopped"); unguarded errors propagate."""
        for listener in self.listeners:
            method = getattr(listener, point, None)
            if method is None:
                continue
            if guarded:
                self.guarded(method)
            else:
                method()
