"""The live ports as a frontend's upstream list (nginx or HAProxy), kept up to date in a file.

``render()`` is the public helper; ``UpstreamWriter`` is the master listener
behind ``upstream_file``/``on_ports_changed``: it rewrites the file atomically
on start and on every port change, then runs the command without waiting for
it in the master loop.
"""

from __future__ import annotations

import logging
import os
import subprocess
from typing import Any, Callable, Iterable, List, Optional

from .._core.handle import MasterHandle
from .._core.slots import describe_exit
from .._os.platform import frontend_host, write_atomically

__all__ = ["render", "write_atomically", "UpstreamWriter", "frontend_host"]

log = logging.getLogger("prefork_waitress")

FORMATS = ("nginx", "nginx-block", "haproxy", "haproxy-block")
POLL_START, POLL_CAP = 0.02, 0.5
COMMAND_TIMEOUT = 60.0
QUEUE_TIMEOUT = "30s"  # how long HAProxy holds a request for a free worker before a 503

NGINX_BLOCK = """\
# Written by prefork_waitress; include it in nginx's http {{}} block.
upstream {name} {{
    # the worker with the fewest requests in flight: never a busy one while another idles
    least_conn;
    # one count shared by every nginx worker process (without it each counts only its own)
    zone {name} 64k;
{servers}    # idle connections kept per nginx process; an idle one does not count as busy
    keepalive {keepalive};
}}
"""

HAPROXY_BLOCK = """\
# Written by prefork_waitress; load it after the main config: haproxy -f haproxy.cfg -f THIS_FILE
backend {name}
    mode http
    # the worker with the fewest requests in flight; maxconn: a worker is handed one request at a time
    balance leastconn
    # with every worker busy a request waits in HAProxy's queue this long for a free one, then 503
    timeout queue {queue}
{servers}"""


def render(
    ports: Iterable[int],
    host: str = "127.0.0.1",
    format: str = "nginx",
    *,
    name: str = "prefork_app",
    maxconn: int = 1,
) -> str:
    """The live ports for a frontend, in ``format``.

    ``nginx``: the body of an ``upstream`` block (``server`` lines); ``haproxy``:
    ``server`` lines with ``maxconn`` for a ``backend``; ``nginx-block`` and
    ``haproxy-block``: a whole ``upstream``/``backend`` called ``name`` that
    balances to the least busy worker, so that comes from here, not from lines
    a user has to remember.
    """
    address = frontend_host(host)
    ports = list(ports)
    if format in ("nginx", "nginx-block"):
        lines = [f"server {address}:{port} max_fails=0;" for port in ports]  # docs/guides/frontends.rst: never "down"
    elif format in ("haproxy", "haproxy-block"):
        limit = f" maxconn {maxconn}" if maxconn else ""
        lines = [f"server w{index} {address}:{port} check{limit}" for index, port in enumerate(ports)]
    else:
        raise ValueError(f"unknown upstream format {format!r}; expected one of {', '.join(FORMATS)}")
    if not format.endswith("-block"):
        return "".join(line + "\n" for line in lines)
    servers = "".join(f"    {line}\n" for line in lines)
    if format == "nginx-block":
        return NGINX_BLOCK.format(name=name, servers=servers, keepalive=max(16, len(ports)))
    return HAPROXY_BLOCK.format(name=name, servers=servers, queue=QUEUE_TIMEOUT)


def _pidfd(pid: int) -> Optional[int]:
    """A pollable fd that becomes readable when ``pid`` exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
        return fd
    except OSError:
        return None


class UpstreamWriter:
    """Master listener: write the upstream file, then run ``command`` (coalescing repeats)."""

    def __init__(self, master: MasterHandle, path: str, format: str = "nginx", command: Optional[str] = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown upstream format {format!r}; expected one of {', '.join(FORMATS)}")
        self.master = master
        self.path = path
        self.format = format
        self.command = command
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.again = False
        self._watch: Any = None
        self._poll_delay = POLL_START
        self._deadline: Any = None
        self.succeeded_once = False  # until then a failure is the frontend not being up yet: a warning
        self._after_run: List[Callable[[], None]] = []  # released once the running command exits
        self._after_next_run: List[Callable[[], None]] = []  # ... once the queued one exits

    def when_ready(self) -> None:
        self.update(self.master.ports)

    def ports_changed(self, ports: List[int]) -> None:
        self.update(ports)

    def release_ports(self, ports: List[int], done: Callable[[], None]) -> None:
        """The file no longer lists ``ports``: ``done()`` once the command that tells the frontend has exited."""
        if self.again:
            self._after_next_run.append(done)
        elif self.process is not None:
            self._after_run.append(done)
        else:
            done()

    def stopped(self) -> None:
        """The master is done: stop watching a command still running (it is left to finish)."""
        if self.process is not None:
            self._forget()
        self._release(self._after_run)
        self._release(self._after_next_run)

    def update(self, ports: List[int]) -> None:
        """Rewrite the file for ``ports``; run the command if it was written."""
        try:
            settings = self.master.settings
            text = render(
                ports, settings.host, self.format, name=settings.upstream_name, maxconn=settings.haproxy_maxconn
            )
            write_atomically(self.path, text)
        except OSError as exc:
            log.error("cannot write the upstream file %s: %s", self.path, exc)
            return
        log.info("upstream file %s now lists ports %s", self.path, ports)
        if self.command:
            self.run_command()

    def run_command(self) -> None:
        """Start the command now, or once the one still running has finished."""
        if self.process is not None:
            self.again = True
            return
        assert self.command is not None
        self._after_run, self._after_next_run = self._after_next_run, []
        try:
            self.process = subprocess.Popen(self.command, shell=True, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("cannot run on_ports_changed command %r: %s", self.command, exc)
            self._release(self._after_run)
            return
        self._deadline = self.master.call_later(COMMAND_TIMEOUT, self._timed_out)
        fd = _pidfd(self.process.pid)
        if fd is not None:
            self._watch = fd
            self.master.add_io_handler(fd, lambda _fd: self._check())
        else:
            self._poll_delay = POLL_START
            self._watch = self.master.call_later(self._poll_delay, self._check)

    def _check(self) -> None:
        """The command may have exited: reap it, log a failure, start a queued run."""
        process = self.process
        if process is None:
            return
        code = process.poll()
        if code is None:
            if not isinstance(self._watch, int):
                self._poll_delay = min(POLL_CAP, self._poll_delay * 2)
                self._watch = self.master.call_later(self._poll_delay, self._check)
            return
        self._forget()
        if code != 0 and not self.succeeded_once:
            # at start the frontend may not be up yet (nginx -s reload with no nginx): it reads the file when it starts
            log.warning(
                "on_ports_changed command %r failed with %s; is the frontend running yet? "
                "the upstream file is written, a frontend started later reads it",
                self.command,
                describe_exit(code),
            )
        elif code != 0:
            log.error("on_ports_changed command %r failed with %s", self.command, describe_exit(code))
        self.succeeded_once = self.succeeded_once or code == 0
        self._release(self._after_run)
        if self.again:
            self.again = False
            self.run_command()

    def _timed_out(self) -> None:
        if self.process is not None and self.process.poll() is None:
            log.error("on_ports_changed command %r still running after %g s; killing it", self.command, COMMAND_TIMEOUT)
            self.process.kill()

    def _release(self, callbacks: List[Callable[[], None]]) -> None:
        """Let the retiring slots waiting on a run go (they retire whether it worked or not)."""
        waiting = list(callbacks)
        callbacks.clear()
        for done in waiting:
            done()

    def _forget(self) -> None:
        if isinstance(self._watch, int):
            self.master.remove_io_handler(self._watch)
            os.close(self._watch)
        elif self._watch is not None:
            self._watch.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        self._watch = self._deadline = None
        self.process = None
