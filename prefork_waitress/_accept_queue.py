"""Accept-queue visibility: how many connections wait in each slot's listening socket.

The master owns the listening sockets, so on Linux it can ask the kernel with
``TCP_INFO``: for a socket in LISTEN state ``tcpi_unacked`` is the current
accept-queue length and ``tcpi_sacked`` its limit (the backlog). A queue that
stays non-empty while nothing leaves it means the slot's worker is stuck or
at waitress's ``connection_limit``; :class:`StuckQueues` says so in the log.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

log = logging.getLogger("prefork_waitress")

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_UNACKED_SACKED = struct.Struct("=II")
_UNACKED_OFFSET = 24  # u8 x8, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked
STUCK_AFTER = 5.0  # seconds a queue may stay non-empty without shrinking before the warning


def accept_queue(sock: socket.socket) -> Tuple[Optional[int], Optional[int]]:
    """(connections waiting to be accepted, the queue's limit); (None, None) where the OS cannot say."""
    if _TCP_INFO is None or sock.fileno() < 0:
        return None, None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None, None
    if len(info) < _UNACKED_OFFSET + _UNACKED_SACKED.size:
        return None, None
    length, limit = _UNACKED_SACKED.unpack_from(info, _UNACKED_OFFSET)
    return length, limit


class StuckQueues:
    """Warns once per episode when a slot's queue stays non-empty and does not shrink for STUCK_AFTER seconds."""

    def __init__(self, clock: Callable[[], float], stuck_after: float = STUCK_AFTER) -> None:
        self.clock = clock
        self.stuck_after = stuck_after
        self._since: Dict[int, Tuple[float, int]] = {}  # slot id -> (last progress, previous length)
        self._warned: "set[int]" = set()

    def sample(self, queues: Iterable[Tuple[int, int, Optional[int]]]) -> None:
        """``queues``: (slot id, port, queue length or None) of every slot, now."""
        now = self.clock()
        seen = set()
        for slot_id, port, length in queues:
            seen.add(slot_id)
            if not length:
                self._forget(slot_id, port)
                continue
            since, previous = self._since.get(slot_id, (now, length))
            if length < previous:  # it shrank: connections are being accepted
                since = now
            self._since[slot_id] = (since, length)
            if now - since >= self.stuck_after and slot_id not in self._warned:
                self._warned.add(slot_id)
                log.warning(
                    "slot %d (port %d): %d connections in its accept queue, none accepted for %.0f s; "
                    "its worker is stuck or at waitress's connection_limit (slow clients belong behind nginx)",
                    slot_id,
                    port,
                    length,
                    now - since,
                )
        for slot_id in set(self._since) - seen:
            self._since.pop(slot_id, None)
            self._warned.discard(slot_id)

    def _forget(self, slot_id: int, port: int) -> None:
        self._since.pop(slot_id, None)
        if slot_id in self._warned:
            self._warned.discard(slot_id)
            log.info("slot %d (port %d): its accept queue is empty again", slot_id, port)


class AcceptQueueWatch:
    """Master listener: samples every slot's accept queue (from ``status()``) every SAMPLE_EVERY seconds."""

    SAMPLE_EVERY = 1.0

    def __init__(self, master: Any) -> None:
        self.master = master
        self.stuck = StuckQueues(time.monotonic)
        self._timer: Any = None

    def when_ready(self) -> None:
        if accept_queue_supported():
            self._sample()

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        workers = self.master.status()["workers"]
        self.stuck.sample((w["id"], w["port"], w.get("accept_queue")) for w in workers)
        self._timer = self.master.call_later(self.SAMPLE_EVERY, self._sample)


def accept_queue_supported() -> bool:
    return _TCP_INFO is not None
