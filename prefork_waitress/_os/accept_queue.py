"""Reading a listening socket's accept queue: how many connections wait, and the limit.

For a socket in LISTEN state, Linux ``TCP_INFO`` reports the current
accept-queue length in ``tcpi_unacked`` and its limit (the backlog) in
``tcpi_sacked``. Elsewhere the answer is (None, None).
"""

from __future__ import annotations

import socket
import struct
from typing import Optional, Tuple

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_UNACKED_SACKED = struct.Struct("=II")
_UNACKED_OFFSET = 24  # u8 x8, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked


def supported() -> bool:
    return _TCP_INFO is not None


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
