"""Commands to workers: requests with ids, replies matched by id, deadlines on loop timers.

A command goes to each chosen worker as a :class:`~.._wire.messages.Command`;
the worker answers a :class:`~.._wire.messages.Reply` on its Pipe, which the
pool's message table hands to :meth:`CommandChannel.reply`. A request is
complete when every worker answered, exited or missed the deadline; its
callback then runs from the loop (never inside whatever read the reply).
"""

from __future__ import annotations

import itertools
import logging
import selectors
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._wire.messages import Command
from ..errors import CommandError
from .loop import EventLoop, Timer
from .outbox import OutboxFull
from .slots import Slot, WorkerProcess

log = logging.getLogger("prefork_waitress")

Replies = Dict[int, Any]  # slot id -> reply, or CommandError
Callback = Callable[[Replies], None]


class Request:
    """One command sent to some workers: what is still awaited, what came back."""

    def __init__(self, name: str, slot_ids: List[int], timeout: float, callback: Optional[Callback]) -> None:
        self.name = name
        self.slot_ids = slot_ids
        self.timeout = timeout
        self.callback = callback
        self.results: Replies = {}
        self.pending: Dict[int, WorkerProcess] = {}  # seq -> worker
        self.queued: Dict[int, Any] = {}  # seq -> its message still waiting whole in the worker's outbox
        self.timer: Optional[Timer] = None
        self.done = False

    def replies(self) -> Replies:
        """The replies in slot order (complete once ``done``)."""
        return {slot_id: self.results[slot_id] for slot_id in self.slot_ids if slot_id in self.results}


class CommandChannel:
    """The sequence numbers and the requests in flight, shared by every command."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self._seq = itertools.count(1)
        self._requests: Dict[int, Request] = {}  # seq -> its request

    def send(
        self,
        slots: List[Slot],
        name: str,
        args: Tuple[Any, ...],
        timeout: float,
        callback: Optional[Callback],
        fds: Sequence[int] = (),
    ) -> Request:
        """Send ``name`` to each ready worker of ``slots``; ``callback(replies)`` once all are in.

        ``fds`` follow the command on each worker's Pipe (see :class:`~.outbox.Outbox`)."""
        request = Request(name, [slot.id for slot in slots], timeout, callback)
        for slot in slots:
            self._send_one(request, slot, args, fds)
        if request.pending:
            request.timer = self.loop.call_later(timeout, lambda: self.expire(request))
        else:
            self._complete(request)
        return request

    def _send_one(self, request: Request, slot: Slot, args: Tuple[Any, ...], fds: Sequence[int]) -> None:
        process, name = slot.current, request.name
        if process is None or not process.ready or process.stopping:
            request.results[slot.id] = _error(
                f"worker {slot.id} is not serving (respawning or stopping); try again", slot.id, name, "NotReady"
            )
            return
        seq = next(self._seq)
        try:
            queued = process.outbox.send(Command(seq, name, args, {}), fds)
        except OutboxFull as exc:
            request.results[slot.id] = _error(
                f"worker {slot.id} is not reading its commands ({exc}); it may be frozen or stuck "
                "(heartbeat_timeout replaces such a worker)",
                slot.id,
                name,
                "NotReading",
            )
            return
        except (OSError, EOFError) as exc:
            request.results[slot.id] = _error(f"worker {slot.id} is gone: {exc}", slot.id, name, "Gone")
            return
        except Exception as exc:
            message = f"the command's arguments cannot be sent: {exc}"
            request.results[slot.id] = _error(message, slot.id, name, type(exc).__name__)
            return
        request.pending[seq] = process
        request.queued[seq] = queued
        self._requests[seq] = request

    def reply(self, seq: int, ok: bool, payload: Any) -> None:
        """A worker answered; a late reply to an expired request is dropped."""
        request = self._requests.pop(seq, None)
        if request is None:
            return
        process = request.pending.pop(seq)
        slot_id = process.slot.id
        request.results[slot_id] = payload if ok else _error_from(payload, slot_id, request.name)
        if not request.pending:
            self._complete(request)

    def worker_exited(self, process: WorkerProcess) -> None:
        """``process`` exited (its last messages already read): what it still owed is an error."""
        for seq, request in [(s, r) for s, r in self._requests.items() if r.pending.get(s) is process]:
            del self._requests[seq]
            del request.pending[seq]
            text = f"worker {process.slot.id} (pid {process.pid}) exited before answering {request.name!r}"
            request.results[process.slot.id] = _error(text, process.slot.id, request.name, "WorkerExited")
            if not request.pending:
                self._complete(request)

    def expire(self, request: Request) -> None:
        """The deadline passed: every missing reply is a Timeout error."""
        for seq, process in list(request.pending.items()):
            self._requests.pop(seq, None)
            process.outbox.discard(request.queued.get(seq))  # still unsent: the worker never sees it
            text = f"worker {process.slot.id} did not answer {request.name!r} within {request.timeout:g} s"
            request.results[process.slot.id] = _error(text, process.slot.id, request.name, "Timeout")
        request.pending.clear()
        self._complete(request)

    def _complete(self, request: Request) -> None:
        if request.done:
            return
        request.done = True
        if request.timer is not None:
            request.timer.cancel()
        callback = request.callback
        if callback is not None:
            replies = request.replies()
            self.loop.call_soon(lambda: callback(replies))

    def wait(self, request: Request, receive: Callable[[WorkerProcess], None]) -> Replies:
        """Block until ``request`` is complete: read only its workers' Pipes and sentinels, up to its deadline.

        ``receive(process)`` reads one message and dispatches it through the pool's
        table (replies land here); an exited worker's last messages are read, then
        what it owed becomes an error. Nothing else of the loop runs meanwhile.
        """
        deadline = time.monotonic() + request.timeout
        while not request.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.expire(request)
                break
            with selectors.PollSelector() as selector:  # its commands may wait in the outbox: wait to write them too
                for process in request.pending.values():
                    _register(selector, process)
                ready = selector.select(remaining)
            for key, events in ready:
                process = key.data
                if key.fd == process.sentinel:  # it exited
                    _read_all(process, receive)
                    self.worker_exited(process)
                    continue
                if events & selectors.EVENT_WRITE:
                    _flush(process)
                if events & selectors.EVENT_READ and not process.conn.closed:
                    receive(process)
        return request.replies()


def _register(selector: selectors.BaseSelector, process: WorkerProcess) -> None:
    """Watch the worker's sentinel, and its Pipe for replies (and for room, while commands wait to go)."""
    selector.register(process.sentinel, selectors.EVENT_READ, process)
    if not process.conn.closed:
        writing = selectors.EVENT_WRITE if _flush(process) is False else 0
        selector.register(process.conn, selectors.EVENT_READ | writing, process)


def _flush(process: WorkerProcess) -> Optional[bool]:
    """A blocking wait runs no loop: write the worker's queued commands itself (None: its Pipe is gone)."""
    try:
        return process.outbox.flush()
    except OSError:
        return None


def _read_all(process: WorkerProcess, receive: Callable[[WorkerProcess], None]) -> None:
    """Read what an exited worker sent before its sentinel fired (e.g. its last reply)."""
    try:
        while not process.conn.closed and process.conn.poll(0):
            receive(process)
    except (OSError, EOFError):
        pass


def _error(text: str, slot_id: int, name: str, exc_type: str) -> CommandError:
    return CommandError(text, worker=slot_id, command=name, exc_type=exc_type)


def _error_from(payload: Any, slot_id: int, name: str) -> CommandError:
    exc_type, message, traceback = payload
    if exc_type == "UnknownCommand":
        text = message
    else:
        text = f"{exc_type}: {message}" if message else exc_type
    return CommandError(text, worker=slot_id, command=name, exc_type=exc_type, traceback=traceback)


def targets(slots: List[Slot], worker: Optional[int]) -> List[Slot]:
    """The slots a command goes to: all, or the one with id ``worker``."""
    if worker is None:
        return list(slots)
    for slot in slots:
        if slot.id == worker:
            return [slot]
    raise ValueError(f"no worker slot {worker}; the slots are {[s.id for s in slots]}")
