"""The master's table of worker messages: one handler per message type (see :mod:`.._wire.messages`)."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Tuple, Type, TypeVar

from .slots import WorkerProcess

log = logging.getLogger("prefork_waitress")

M = TypeVar("M", bound=Tuple[Any, ...])  # a message type of _wire.messages (a NamedTuple)
Handler = Callable[[WorkerProcess, Any], None]


class MessageTable:
    """Message type -> (handler, deferred); a deferred handler runs from the loop, never where it was read."""

    def __init__(self, call_soon: Callable[[Callable[[], None]], None]) -> None:
        self._call_soon = call_soon
        self._handlers: Dict[type, Tuple[Handler, bool]] = {}

    def handle(self, kind: Type[M], handler: Callable[[WorkerProcess, M], None], deferred: bool = False) -> None:
        """Route messages of type ``kind`` to ``handler(worker, message)`` (deferred: from the loop)."""
        self._handlers[kind] = (handler, deferred)

    def dispatch(self, worker: WorkerProcess, message: Any) -> None:
        """Hand ``message`` from ``worker`` to its handler (an unknown one is logged and dropped)."""
        entry = self._handlers.get(type(message))
        if entry is None:
            log.warning("worker %d sent an unknown message %r; ignored", worker.slot.id, type(message).__name__)
            return
        handler, deferred = entry
        if deferred:
            self._call_soon(lambda: handler(worker, message))
        else:
            handler(worker, message)
