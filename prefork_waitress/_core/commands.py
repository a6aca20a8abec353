"""Sending commands to workers and matching their replies, with deadlines."""

from __future__ import annotations

import itertools
import logging
import time
from multiprocessing.connection import wait
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .slots import Slot, WorkerProcess
from ..errors import CommandError

log = logging.getLogger("prefork_waitress")

Reply = Tuple[bool, Any]


class CommandChannel:
    """Owns the sequence numbers and reply store shared by every command in flight."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._replies: Dict[int, Reply] = {}
        self._waiting: Set[int] = set()

    def store_reply(self, seq: int, ok: bool, payload: Any) -> None:
        """Keep a reply someone waits for; late replies to abandoned commands are dropped."""
        if seq in self._waiting:
            self._replies[seq] = (ok, payload)

    def send(
        self, slots: Iterable[Slot], name: str, args: Tuple[Any, ...]
    ) -> Tuple[Dict[int, Any], Dict[int, WorkerProcess]]:
        """Send to each ready worker; return (errors by slot id, workers by seq)."""
        results: Dict[int, Any] = {}
        pending: Dict[int, WorkerProcess] = {}
        for slot in slots:
            process = slot.current
            if process is None or not process.ready or process.stopping:
                results[slot.id] = CommandError(
                    f"worker {slot.id} is not serving (respawning or stopping); try again",
                    worker=slot.id,
                    command=name,
                    exc_type="NotReady",
                )
                continue
            seq = next(self._seq)
            try:
                process.conn.send(("command", seq, name, args, {}))
            except (OSError, EOFError) as exc:
                results[slot.id] = CommandError(
                    f"worker {slot.id} is gone: {exc}", worker=slot.id, command=name, exc_type="Gone"
                )
                continue
            except Exception as exc:
                results[slot.id] = CommandError(
                    f"the command's arguments cannot be sent: {exc}",
                    worker=slot.id,
                    command=name,
                    exc_type=type(exc).__name__,
                )
                continue
            self._waiting.add(seq)
            pending[seq] = process
        return results, pending

    def collect(self, pending: Dict[int, WorkerProcess], name: str, timeout: float, receive: Any) -> Dict[int, Any]:
        """Wait (with a deadline) for the replies of ``pending``; ``receive(process)`` reads what it sent."""
        results: Dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while pending:
                self._take_replies(pending, name, results)
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    break
                self._wait_once(pending, name, remaining, receive, results)
        finally:
            for process in pending.values():
                results[process.slot.id] = CommandError(
                    f"worker {process.slot.id} did not answer {name!r} within {timeout:g} s",
                    worker=process.slot.id,
                    command=name,
                    exc_type="Timeout",
                )
            for seq in list(pending):
                self._waiting.discard(seq)
        return results

    def _take_replies(self, pending: Dict[int, WorkerProcess], name: str, results: Dict[int, Any]) -> None:
        for seq in [s for s in pending if s in self._replies]:
            process = pending.pop(seq)
            self._waiting.discard(seq)
            ok, payload = self._replies.pop(seq)
            results[process.slot.id] = payload if ok else _error_from(payload, process.slot.id, name)

    def _wait_once(
        self, pending: Dict[int, WorkerProcess], name: str, remaining: float, receive: Any, results: Dict[int, Any]
    ) -> None:
        by_object: Dict[Any, WorkerProcess] = {}
        for process in pending.values():
            by_object[process.conn] = process
            by_object[process.sentinel] = process
        for obj in wait(list(by_object), remaining):
            process = by_object[obj]
            if obj is process.conn:
                receive(process)
        for seq, process in list(pending.items()):
            if seq not in self._replies and _has_exited(process):
                receive(process)  # a reply sent just before dying still counts
                if seq not in self._replies:
                    del pending[seq]
                    self._waiting.discard(seq)
                    results[process.slot.id] = CommandError(
                        f"worker {process.slot.id} (pid {process.pid}) exited before answering {name!r}",
                        worker=process.slot.id,
                        command=name,
                        exc_type="WorkerExited",
                    )


def _has_exited(process: WorkerProcess) -> bool:
    return bool(wait([process.sentinel], 0))


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
