"""systemd ``Type=notify`` support: READY, RELOADING, STOPPING and STATUS over $NOTIFY_SOCKET.

Standard library only: one AF_UNIX datagram per message, as sd_notify(3) does.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import List, Optional

from .._core.handle import MasterHandle
from .._os.handoff import owns_paths

__all__ = ["SystemdNotifier", "notify"]

log = logging.getLogger("prefork_waitress")


def _socket_address(address: str) -> Optional[str]:
    """A path, or an abstract-namespace name ("@name" becomes "\\0name"); None if unsupported."""
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def notify(message: str, address: Optional[str] = None) -> bool:
    """Send ``message`` (e.g. "READY=1") to ``address`` or $NOTIFY_SOCKET; False if not sent."""
    target = _socket_address(address or os.environ.get("NOTIFY_SOCKET", ""))
    if target is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode("utf-8"), target)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SystemdNotifier:
    """A master listener that tells systemd where the service is in its life."""

    def __init__(self, master: MasterHandle, address: str) -> None:
        self.master = master
        self.address = address

    def _status(self, what: str) -> str:
        ports: List[int] = self.master.ports
        return f"STATUS={what}: {len(ports)} workers on ports {', '.join(map(str, ports))}"

    def when_ready(self) -> None:
        notify(f"READY=1\n{self._status('serving')}", self.address)

    def reloading(self) -> None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}\n{self._status('reloading')}", self.address)

    def reloaded(self, ok: bool) -> None:
        what = "serving" if ok else "serving (the last reload failed; old workers kept)"
        notify(f"READY=1\n{self._status(what)}", self.address)

    def ports_changed(self, ports: List[int]) -> None:
        notify(self._status("serving"), self.address)

    def stopping(self) -> None:
        if not owns_paths():  # an old master after an upgrade: the service is the new master now
            return
        notify("STOPPING=1\nSTATUS=stopping", self.address)
