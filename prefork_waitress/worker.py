"""The Worker: the object each forked process is, with its hooks and commands.

Subclass it (and mix in command classes) to run code when a worker starts
or stops and to add commands: ``child_<name>`` implements command ``name``
and its return value is the reply; an optional ``on_<name>`` runs first.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
import time
from typing import Any, Dict, Optional, Tuple

from ._os.memory import frozen_count, resident_bytes
from ._os.output import redirect_stdio, reopen_files

__all__ = ["Worker", "UnknownCommand"]

COMMAND_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnknownCommand(LookupError):
    """The worker has no ``child_<name>`` method for the command."""


class Worker:
    """One worker process: hooks, commands, and what it knows about itself."""

    id: int
    port: int
    pid: int
    generation: int
    app: Any
    started_at: float
    requests_served: int = 0
    in_flight: int = 0

    def __init__(self, id: int, port: int, generation: int, app: Any) -> None:
        self.id = id
        self.port = port
        self.generation = generation
        self.app = app
        self.pid = os.getpid()
        self.started_at = time.time()
        self.requests_served = 0
        self.in_flight = 0

    # hooks ----------------------------------------------------------------
    def on_start(self) -> None:
        """Runs after fork, before the first request (open connections, warm caches)."""

    def on_stop(self) -> None:
        """Runs after the last request, before the process exits."""

    # built-in commands ------------------------------------------------------
    def child_ping(self) -> str:
        """Answers "pong": the worker's command channel is alive."""
        return "pong"

    def child_stats(self) -> Dict[str, Any]:
        """What the worker is and has done: pid, port, uptime, requests, memory.

        ``gc_frozen`` is gc.get_freeze_count(): the objects inherited frozen
        from a preloading master or frozen by a refork template (the
        interpreter's own count without either, or with gc_freeze off).
        """
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform != "darwin":
            max_rss *= 1024
        return {
            "id": self.id,
            "pid": self.pid,
            "port": self.port,
            "generation": self.generation,
            "uptime": time.time() - self.started_at,
            "requests_served": self.requests_served,
            "in_flight": self.in_flight,
            "rss": resident_bytes(),
            "max_rss": max_rss,
            "gc_frozen": frozen_count(),
        }

    def child_reopen(self, path: Optional[str] = None) -> bool:
        """Log rotation (SIGUSR1 to the CLI master): the output ``path`` onto fds 1 and 2, and the access log."""
        if path is not None:
            redirect_stdio(path)
        reopen_files()
        return True

    def child_stop(self) -> bool:
        """Stop gracefully: finish the request in flight, then exit (the same drain as SIGTERM)."""
        os.kill(os.getpid(), signal.SIGTERM)
        return True

    # dispatch -------------------------------------------------------------
    def run_command(self, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """Run ``on_<name>`` (if any) then ``child_<name>``; return the latter's result."""
        if not isinstance(name, str) or not COMMAND_NAME.match(name):
            raise UnknownCommand(f"invalid command name {name!r}")
        implementation = getattr(self, "child_" + name, None)
        if not callable(implementation):
            raise UnknownCommand(f"unknown command {name!r}: {type(self).__name__} has no child_{name}()")
        notification = getattr(self, "on_" + name, None)
        if callable(notification) and name not in ("start", "stop"):
            notification(*args, **kwargs)
        return implementation(*args, **kwargs)
