"""The control socket's client side: one JSON line out, one back (what ``prefork-waitress ctl`` uses)."""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, Optional

__all__ = ["ControlError", "request"]


class ControlError(Exception):
    """The control socket cannot be reached, or its reply cannot be read."""


def request(path: str, message: Dict[str, Any], timeout: Optional[float] = 30.0) -> Dict[str, Any]:
    """Send one request to the master listening on ``path``; return its decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no master is listening on {path}") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            line = _read_line(sock)
        except socket.timeout:
            raise ControlError(f"no reply from {path} within {timeout} s") from None
        except OSError as exc:
            raise ControlError(f"connection to {path} failed: {exc.strerror or exc}") from None
        if message.get("action") == "stop" and message.get("wait"):
            _wait_for_eof(sock, path, timeout)
    try:
        reply: Dict[str, Any] = json.loads(line)
    except ValueError:
        raise ControlError(f"unreadable reply from {path}: {line[:200]!r}") from None
    return reply


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ControlError("the master closed the connection without replying")
        data += chunk
    return data.partition(b"\n")[0]


def _wait_for_eof(sock: socket.socket, path: str, timeout: Optional[float]) -> None:
    """After ``stop``: the master closes every control connection once its workers are gone."""
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        raise ControlError(f"the master on {path} is still stopping after {timeout} s") from None
    except OSError:
        pass
