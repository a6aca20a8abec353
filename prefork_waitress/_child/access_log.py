"""The access log a worker writes: Apache combined format plus the duration and the slot, or JSON.

One line per request, written by the request thread with a single
``os.write`` on an ``O_APPEND`` descriptor: the kernel appends each write
whole, so the lines of several workers sharing one file never interleave and
no lock is taken. ``reopen()`` (log rotation: ``reopen``/SIGUSR1) opens the
path again and ``dup2``s it onto the same descriptor number, so a write in
progress on the request thread never sees a closed fd.

A line::

    127.0.0.1 - - [02/Dec/2026:14:21:27 +0000] "GET /a?b=1 HTTP/1.1" 200 5 "-" "curl/8.5" 512 0

that is ``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`` followed by
the request duration in microseconds (Apache's ``%D``) and the slot id.
What the client sent is escaped as Apache does (``\\"``, ``\\\\``, ``\\xhh`` for
control and non-ASCII bytes), so no field or line can be forged.

With ``access_log_format = json``, one object per line (:func:`format_json`)::

    {"time": "2026-12-02T14:21:27.512Z", "remote_addr": "127.0.0.1", "method": "GET", "path": "/a",
     "query": "b=1", "protocol": "HTTP/1.1", "status": 200, "bytes": 5, "duration": 0.000512,
     "slot": 0, "pid": 4242, "referer": null, "user_agent": "curl/8.5", "request_id": null,
     "remote_user": null}

Text is decoded as UTF-8 from the bytes sent (bytes that are not UTF-8 as
``\\xhh``); JSON escapes quotes, backslashes and control characters.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Optional

from .._os.output import on_reopen
from ._waitress import RequestFacts

__all__ = ["AccessLog", "format_json", "format_line"]

STDOUT = "-"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _escape(text: str) -> str:
    """Quote-safe and printable, as Apache writes %r and headers: \\" \\\\ and \\xhh."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    out = []
    for char in text:
        if char == '"' or char == "\\":
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        elif ord(char) < 256:  # waitress decodes headers as latin-1: this is the byte sent
            out.append(f"\\x{ord(char):02x}")
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogateescape"))
    return "".join(out)


class _Clock:
    """``[day/Mon/year:H:M:S +zone]`` for the current second, formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            tm = time.localtime(second)
            offset = tm.tm_gmtoff or 0
            sign, offset = ("-", -offset) if offset < 0 else ("+", offset)
            zone = f"{sign}{offset // 3600:02d}{offset % 3600 // 60:02d}"
            self.text = (
                f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {zone}]"
            )
            self.second = second
        return self.text


def _unquoted(text: str) -> str:
    """An unquoted field (host, user, status): escaped, and no space in it either (it separates fields)."""
    text = _escape(text)
    return text.replace(" ", "\\x20") if " " in text else text


def format_line(facts: RequestFacts, when: str, duration: float, slot: int) -> bytes:
    """One access log line, newline included."""
    request = _escape(f"{facts.method} {facts.uri} {facts.protocol}") if facts.method else "-"
    referer = _escape(facts.referer) if facts.referer else "-"
    agent = _escape(facts.agent) if facts.agent else "-"
    user = _unquoted(facts.user) if facts.user else "-"
    size = facts.size or "-"
    status = facts.status if facts.status.isdigit() else _unquoted(facts.status or "-")
    line = (
        f'{_unquoted(facts.remote)} - {user} {when} "{request}" {status} {size} "{referer}" "{agent}" '
        f"{int(duration * 1_000_000)} {slot}\n"
    )
    return line.encode("utf-8", "surrogateescape")


def _text(value: Optional[str]) -> Optional[str]:
    """What waitress decoded as latin-1 (one char per byte sent), as the UTF-8 text it most likely was."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # not from the wire (e.g. REMOTE_USER set by middleware): as it is
        return value


def format_json(facts: RequestFacts, when: str, duration: float, slot: int, pid: int) -> bytes:
    """One access log line as a JSON object (``when``: ISO 8601 UTC), newline included."""
    path, question, query = facts.uri.partition("?")
    entry: Dict[str, Any] = {
        "time": when,
        "remote_addr": _text(facts.remote),
        "method": _text(facts.method) or None,
        "path": _text(path) if facts.uri else None,
        "query": _text(query) if question else None,
        "protocol": facts.protocol if facts.method else None,
        "status": int(facts.status) if facts.status.isdigit() else facts.status,
        "bytes": facts.size,
        "duration": round(duration, 6),
        "slot": slot,
        "pid": pid,
        "referer": _text(facts.referer),
        "user_agent": _text(facts.agent),
        "request_id": _text(facts.request_id),
        "remote_user": _text(facts.user),
    }
    return (json.dumps(entry) + "\n").encode("ascii")


class _UtcClock:
    """``2026-12-02T14:21:27.512Z`` now: the part up to the second formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        return f"{self.text}.{int((now - second) * 1000):03d}Z"


class AccessLog:
    """A worker's access log: ``path`` (appended to) or ``-`` (the worker's stdout, i.e. the output)."""

    def __init__(self, path: str, slot: int, format: str = "combined") -> None:
        self.path = path
        self.slot = slot
        self.pid = os.getpid()
        self.fd = 1 if path == STDOUT else self._open()
        self._line: Callable[[RequestFacts, float], bytes]
        if format == "json":
            utc = _UtcClock()
            self._line = lambda facts, duration: format_json(facts, utc.now(), duration, self.slot, self.pid)
        else:
            self.clock = _Clock()
            self._line = lambda facts, duration: format_line(facts, self.clock.now(), duration, self.slot)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, facts: RequestFacts, duration: float) -> None:
        """Append the line of one request (a full disk or a closed fd loses the line, not the request)."""
        try:
            os.write(self.fd, self._line(facts, duration))
        except OSError:
            pass

    def reopen(self) -> None:
        """After rotation: the path again, on the same fd number (``-`` follows the output by itself)."""
        if self.path == STDOUT:
            return
        fd = self._open()
        try:
            os.dup2(fd, self.fd, inheritable=False)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close this process's fd on the file (never stdout)."""
        if self.fd > 2:
            os.close(self.fd)
        self.fd = -1

    def activate(self) -> "AccessLog":
        """Be reopened with the output on log rotation (the worker's ``reopen`` command)."""
        on_reopen(self.reopen)
        return self
