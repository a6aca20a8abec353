"""The control socket's wire (JSON lines, never pickle) and its client side: one line out, one back.

:func:`request` is what ``prefork-waitress ctl`` uses; the codec below is shared with the server.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, Optional

from ..errors import CommandError

__all__ = ["ControlError", "request", "decode_request", "encode", "jsonable", "jsonable_replies"]

MAX_DIGITS = 30  # longer numbers in a request are refused (no slot id, count or timeout is that long)


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
    except (ValueError, RecursionError):
        raise ControlError(f"unreadable reply from {path}: {line[:200]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"unreadable reply from {path}: {line[:200]!r}")
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


def encode(message: Dict[str, Any]) -> bytes:
    """One reply line; a reply JSON cannot carry becomes an error reply."""
    try:
        return (json.dumps(message, default=repr) + "\n").encode("utf-8")
    except (ValueError, RecursionError) as exc:  # e.g. a worker's reply nested too deeply for JSON
        return (json.dumps({"ok": False, "error": f"the reply cannot be sent as JSON: {exc}"}) + "\n").encode()


def jsonable_replies(replies: Dict[int, Any]) -> Dict[str, Any]:
    """Replies by slot id as JSON shows them (slot ids as strings)."""
    return {str(slot): jsonable(reply) for slot, reply in replies.items()}


def jsonable(reply: Any) -> Any:
    """A worker's reply as JSON shows it: a CommandError becomes {"error": ..., "type": ...}."""
    return reply.as_json() if isinstance(reply, CommandError) else reply


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number with more than {MAX_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def decode_request(line: bytes) -> Any:
    """Parse one request line: UTF-8 JSON, no NaN/Infinity, no absurdly long number.

    Raises ValueError (or RecursionError for nesting too deep to parse) for
    anything else, so the caller replies with an error and closes.
    """
    return json.loads(line.decode("utf-8"), parse_int=_bounded_int, parse_constant=_no_constant)
