"""A non-blocking client of HAProxy's Runtime API (the stats socket), driven by the master loop.

One command per connection, as HAProxy's non-interactive mode expects: connect,
send the line, read until HAProxy closes. Commands run one after the other, in
the order given, each with a deadline; nothing here ever blocks the loop (a
connect in progress is finished once the loop sees the socket writable,
replies are read from an io handler).
"""

from __future__ import annotations

import collections
import errno
import socket
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Tuple

__all__ = ["RuntimeClient", "parse_address", "reply_error", "servers_state", "server_sessions", "backend_algorithm"]

Reply = Callable[[Optional[str], Optional[str]], None]  # (reply, error): one of them is None
COMMAND_TIMEOUT = 5.0


class Loop(Protocol):
    """What the client needs of the master (MasterHandle offers it)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...

    def add_io_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None: ...

    def remove_io_handler(self, fileobj: Any) -> None: ...

    def add_write_handler(self, fileobj: Any, callback: Callable[[Any], None]) -> None: ...

    def remove_write_handler(self, fileobj: Any) -> None: ...


def parse_address(address: str) -> Tuple[int, Any]:
    """``/run/haproxy.sock`` (a UNIX socket) or ``host:port`` (TCP): (family, address)."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "/" not in address:
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(port))
    return socket.AF_UNIX, address


def reply_error(reply: str) -> Optional[str]:
    """The error in a reply to ``set severity-output number; CMD`` (severity 0-3), else None."""
    for line in reply.splitlines():
        if line[:1] == "[" and line[1:2] in "0123" and line[2:4] == "]:":
            return line[4:].strip()
    return None


def servers_state(reply: str) -> Dict[str, Dict[str, str]]:
    """``show servers state BACKEND`` as {server name: {column: value}}."""
    lines = [line for line in reply.splitlines() if line.strip()]
    header = next((line[1:].split() for line in lines if line.startswith("#")), [])
    found: Dict[str, Dict[str, str]] = {}
    for line in lines:
        fields = line.split()
        if line.startswith("#") or len(fields) < len(header) or not header:
            continue
        row = dict(zip(header, fields))
        if "srv_name" in row:  # else not the table asked for: nothing to take from it
            found[row["srv_name"]] = row
    return found


def server_sessions(reply: str) -> Dict[str, int]:
    """``show stat BACKEND 4 -1`` (CSV) as {server name: current sessions + queued requests}.

    A row whose counts are not numbers is left out (a reply of another shape, or cut short).
    """
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    sessions: Dict[str, int] = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("svname") in (None, "FRONTEND", "BACKEND"):
            continue
        counts = (row.get("scur") or "0", row.get("qcur") or "0")
        if all(count.isascii() and count.isdigit() for count in counts):
            sessions[row["svname"]] = int(counts[0]) + int(counts[1])
    return sessions


def backend_algorithm(reply: str) -> Optional[str]:
    """The balance algorithm (``algo`` column) of the BACKEND row of ``show stat BACKEND 2 -1``, if given."""
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return None
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("svname") == "BACKEND":
            return row.get("algo") or None
    return None


class _Call:
    def __init__(self, command: str, reply: Reply) -> None:
        self.command = command
        self.reply = reply
        self.sock: Optional[socket.socket] = None
        self.received: List[bytes] = []
        self.deadline: Any = None


class RuntimeClient:
    """Runs Runtime API commands one at a time; each reply (or error) goes to its callback."""

    def __init__(self, loop: Loop, address: str, timeout: float = COMMAND_TIMEOUT) -> None:
        self.loop = loop
        self.address = address
        self.family, self.target = parse_address(address)
        self.timeout = timeout
        self.queue: Deque[_Call] = collections.deque()
        self.current: Optional[_Call] = None

    def run(self, command: str, reply: Reply) -> None:
        """Queue ``command`` (errors reported with severity numbers); ``reply(text, error)`` later."""
        self.queue.append(_Call(f"set severity-output number; {command}", reply))
        if self.current is None:
            self._next()

    def close(self) -> None:
        """Drop the call in progress and everything queued (their callbacks are not called)."""
        self.queue.clear()
        call, self.current = self.current, None
        if call is not None:
            self._dispose(call)

    def _next(self) -> None:
        if self.queue and self.current is None:
            self._start(self.queue.popleft())

    def _start(self, call: _Call) -> None:
        self.current = call
        call.deadline = self.loop.call_later(self.timeout, lambda: self._fail(call, "no reply in time"))
        try:
            call.sock = socket.socket(self.family, socket.SOCK_STREAM)
            call.sock.setblocking(False)
            code = call.sock.connect_ex(self.target)
        except OSError as exc:
            self._fail(call, exc.strerror or str(exc))
            return
        if code in (0, errno.EISCONN):
            self._send(call)
        elif code in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            self.loop.add_write_handler(call.sock, lambda sock: self._connected(call))
        else:
            self._fail(call, f"cannot connect to {self.address}: {errno.errorcode.get(code, code)}")

    def _connected(self, call: _Call) -> None:
        """The connect in progress ended (writable): sent the command, or failed."""
        if call is not self.current or call.sock is None:
            return
        self.loop.remove_write_handler(call.sock)
        code = call.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(call, f"cannot connect to {self.address}: {errno.errorcode.get(code, code)}")
        else:
            self._send(call)

    def _send(self, call: _Call) -> None:
        assert call.sock is not None
        try:
            call.sock.send(call.command.encode() + b"\n")  # one short line fits a fresh socket's buffer
        except OSError as exc:
            self._fail(call, f"cannot send to {self.address}: {exc.strerror or exc}")
            return
        self.loop.add_io_handler(call.sock, lambda sock: self._readable(call))

    def _readable(self, call: _Call) -> None:
        if call is not self.current or call.sock is None:
            return
        try:
            data = call.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(call, f"reading from {self.address}: {exc.strerror or exc}")
            return
        if data:
            call.received.append(data)
            return
        self._finish(call, b"".join(call.received).decode("utf-8", "replace"), None)

    def _fail(self, call: _Call, error: str) -> None:
        self._finish(call, None, error)

    def _finish(self, call: _Call, reply: Optional[str], error: Optional[str]) -> None:
        if call is not self.current:
            return
        self.current = None
        self._dispose(call)
        try:
            call.reply(reply, error)
        finally:
            self._next()

    def _dispose(self, call: _Call) -> None:
        if call.deadline is not None:
            call.deadline.cancel()
        if call.sock is not None:
            self.loop.remove_write_handler(call.sock)
            self.loop.remove_io_handler(call.sock)
            call.sock.close()
            call.sock = None
