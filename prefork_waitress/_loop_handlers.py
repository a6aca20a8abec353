"""What code outside the library hangs on a master's loop: readers, writers, signals, timers.

Every object given here is the master's: a forked worker closes its copy
(``master_objects``), so no worker holds a watcher, a client socket or a
pipe end of the master's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from ._core.loop import EventLoop, Timer


class LoopHandlers:
    """The Cluster's handler methods (a base class: the Cluster sets ``_loop`` and calls ``_init_handlers``)."""

    _loop: EventLoop

    def _init_handlers(self) -> None:
        self._io_handlers: Dict[Any, Callable[[Any], None]] = {}
        self._write_handlers: Dict[Any, Callable[[Any], None]] = {}
        self._owned: List[Any] = []  # other master-only objects a worker must close

    def _master_objects(self) -> List[Any]:
        return list(self._io_handlers) + list(self._write_handlers) + self._owned

    def add_io_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Run ``callback(fileobj)`` in the master loop whenever ``fileobj`` is readable."""
        if not (isinstance(fileobj, int) or hasattr(fileobj, "fileno")):
            raise TypeError(f"add_io_handler: {fileobj!r} has no fileno()")
        self._io_handlers[fileobj] = callback
        self._loop.add_reader(fileobj, callback)

    def remove_io_handler(self, fileobj: Any) -> None:
        self._io_handlers.pop(fileobj, None)
        self._loop.remove_reader(fileobj)

    def add_write_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None:
        """Run ``callback(fileobj)`` in the master loop whenever ``fileobj`` is writable (remove it when done)."""
        self._write_handlers[fileobj] = callback
        self._loop.add_writer(fileobj, callback)

    def remove_write_handler(self, fileobj: Any) -> None:
        self._write_handlers.pop(fileobj, None)
        self._loop.remove_writer(fileobj)

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback()`` in the master loop when ``signum`` arrives (replaces the default)."""
        self._loop.add_signal(signum, callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` in the master loop after ``delay`` seconds; returns a cancellable timer."""
        return self._loop.call_later(delay, callback)

    def own(self, obj: Any) -> None:
        """Mark an fd or object as the master's, so every worker closes its copy."""
        self._owned.append(obj)
