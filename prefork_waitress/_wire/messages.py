"""The messages on the Pipe between the master and a worker, one named type each.

Both ends run the same code (a worker is forked from the master, or from a
worker of it), so a message is a ``NamedTuple`` pickled by ``Connection.send``:
the receiver dispatches on its type (the master: ``WorkerPool.handle``) and
reads its fields by name. A new message is a new type here plus one handler.

Master to worker: :class:`Command` (its answer: :class:`Reply`) and
:class:`Retire`. Worker to master: :class:`Ready`, :class:`BootFailed`,
:class:`Reply`, :class:`Draining`, :class:`Recycle`, :class:`Warm`,
:class:`Modules`.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

__all__ = [
    "REFORK",
    "REFORK_FDS",
    "BootFailed",
    "Command",
    "Draining",
    "Modules",
    "Ready",
    "Recycle",
    "ReforkOrder",
    "Reply",
    "Retire",
    "Warm",
]


# master -> worker ------------------------------------------------------------
class Command(NamedTuple):
    """Run command ``name`` (a ``child_<name>`` of the Worker, or :data:`REFORK`); answer :class:`Reply`."""

    seq: int
    name: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


class Retire(NamedTuple):
    """The slot leaves the pool: serve what still arrives until the port is quiet, then drain and exit."""


# worker -> master ------------------------------------------------------------
class Ready(NamedTuple):
    """Booted (app loaded, on_start run, server listening): the worker serves its port."""

    pid: int
    started_at: float  # time.time() of the worker's start (Worker.started_at)


class BootFailed(NamedTuple):
    """The worker could not boot: the error's one line and its traceback (the worker exits next)."""

    message: str
    traceback: str


class Reply(NamedTuple):
    """The answer to :class:`Command` ``seq``: its result, or (ok False) (exc type, message, traceback)."""

    seq: int
    ok: bool
    result: Any


class Draining(NamedTuple):
    """The worker stopped accepting: new connections go to the other process(es) on its socket."""


class Recycle(NamedTuple):
    """max_requests or max_rss reached (``why``): fork a successor, then stop this worker."""

    served: int
    why: str


class Warm(NamedTuple):
    """The worker reached a refork_after threshold (``served`` requests): it may become a template."""

    served: int


class Modules(NamedTuple):
    """What the worker imported since it last said (reload): module name -> its source file, and data files."""

    fresh: Dict[str, str]
    data_files: List[str]


# refork: a Command named REFORK, with a ReforkOrder, and REFORK_FDS fds behind it ------------------
REFORK = "__refork__"  # the command name; not a valid child_<name>, so no app can shadow it
REFORK_FDS = 3  # as SCM_RIGHTS right behind the command: the slot's socket, the Pipe's worker end, the meter


class ReforkOrder(NamedTuple):
    """What a template needs to fork a worker for another slot (the fds come with the command)."""

    slot_id: int
    port: int
    generation: int
    cpus: Optional[Tuple[int, ...]]
    max_requests: int
