"""HAProxy as a live frontend: one dynamic server per slot, drained before its slot retires.

Through the Runtime API only (no config reload): on start and on every port
change the master makes the backend hold one enabled server per live port
(``add server``, ``enable health``, ``set server ... state ready``, ``set
server ... addr ... port ...``); before a slot retires its server goes to
``drain``, the master waits (from timers, never blocking its loop) until
HAProxy reports no session or queued request on it, then puts it in
``maint`` and deletes it. A master owns the servers named
``<haproxy_prefix>-<host>-<port>`` (``pw-`` by default), so masters on
several hosts, or with their own prefixes on one host, share one backend,
each managing its own; of the others it touches none.

HAProxy forgets servers added at run time when it reloads (its management
guide: "A dynamic server not present in the configuration won't be restored
after a reload operation"), and its stats socket tells nobody: the master
reads the backend again ``WATCH_INTERVAL`` seconds after each sync that left
it in step (one ``show servers state BACKEND``; commands only when something
is off) and puts back what is missing, with its maxconn, ready; a reload
leaves the backend without them for at most that long (plus the commands).

Servers are added with ``maxconn`` (``haproxy_maxconn``, default 1): a
single-threaded worker runs one request at a time, so HAProxy keeps the rest
in its queue and hands each to the next free worker. A backend found
balancing another way than ``leastconn`` is logged once, with the fix.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, List, Optional, Set

from .._core.handle import MasterHandle
from .._os.handoff import owns_paths
from .._os.platform import frontend_host
from .haproxy_runtime import RuntimeClient, backend_algorithm, reply_error, server_sessions, servers_state

log = logging.getLogger("prefork_waitress")

SERVER_SETTINGS = "check inter 2s"  # plus "maxconn N" (haproxy_maxconn)
LEAST_BUSY = ("leastconn", "first")  # the algorithms that never pick a busy worker while another idles
DRAIN_POLL = 0.05
RETRY_START, RETRY_CAP = 0.5, 15.0
WATCH_INTERVAL = 0.5  # the bound on how long a reloaded HAProxy runs without this master's servers
Command = Callable[[Optional[str]], None]  # called with the error, or None


def server_prefix(host: str, prefix: str = "pw") -> str:
    """The name prefix of a master's servers: ``pw-127.0.0.2-`` (``haproxy_prefix``; IPv6 colons become dots)."""
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9._-]", ".", frontend_host(host).strip("[]")) + "-"


class _Drain:
    def __init__(self, ports: List[int], done: Callable[[], None], deadline: Any) -> None:
        self.ports = ports
        self.done = done
        self.deadline = deadline
        self.timed_out = False


class HAProxyServers:
    """Master listener keeping the backend's servers for this master's ports in step with it."""

    def __init__(self, master: MasterHandle, address: str, backend: str, drain_timeout: float = 30.0) -> None:
        self.master = master
        self.backend = backend
        self.host = frontend_host(master.settings.host)
        self.prefix = server_prefix(master.settings.host, master.settings.haproxy_prefix)
        self.client = RuntimeClient(master, address)
        self.drain_timeout = drain_timeout
        self.drains: List[_Drain] = []
        self.syncing = False
        self.again = False
        self.retry: Any = None
        self.watch: Any = None  # the next look at the backend (a reloaded HAProxy has lost our servers)
        self.added: Set[str] = set()  # servers of ours HAProxy held at the last sync
        self.retry_delay = RETRY_START
        self.failing = False
        self.closing = False
        self.maxconn = master.settings.haproxy_maxconn
        self.algorithm_checked = False
        self.limited: Set[str] = set()  # servers this master gave its maxconn

    def name(self, port: int) -> str:
        return f"{self.prefix}{port}"

    def server(self, port: int) -> str:
        return f"{self.backend}/{self.name(port)}"

    # master hooks ---------------------------------------------------------
    def when_ready(self) -> None:
        self.sync()

    def ports_changed(self, ports: List[int]) -> None:
        for drain in self.drains:  # a port given back (scale up again) serves on
            drain.ports = [port for port in drain.ports if port not in ports]
        self.sync()

    def release_ports(self, ports: List[int], done: Callable[[], None]) -> None:
        """Drain the servers of ``ports``; ``done()`` once HAProxy has no session left on them."""
        if not owns_paths():  # the master upgraded: a new master serves these same ports on
            done()
            return
        drain = _Drain(list(ports), done, None)
        drain.deadline = self.master.call_later(self.drain_timeout, lambda: self._drain_timed_out(drain))
        self.drains.append(drain)
        started = self._drain_started(drain)
        for port in ports:
            self._command(f"set server {self.server(port)} state drain", started)

    def stopping(self) -> None:
        """The master stops: it releases every port (drained, then deleted); no more syncing."""
        self.closing = True

    def stopped(self) -> None:
        self.client.close()
        for timer in (self.retry, self.watch):
            if timer is not None:
                timer.cancel()
        for drain in list(self.drains):
            self._end_drain(drain)

    # keeping the backend in step ---------------------------------------------
    def sync(self) -> None:
        """Read the backend's servers, then add, enable, move or delete this master's."""
        if self.closing:
            return
        if self.syncing:
            self.again = True
            return
        self.syncing = True
        if not self.algorithm_checked:
            self.client.run(f"show stat {self.backend} 2 -1", self._check_algorithm)
        self.client.run(f"show servers state {self.backend}", self._synced_state)

    def _check_algorithm(self, reply: Optional[str], error: Optional[str]) -> None:
        """Once: say so if the backend balances round-robin (or by hash), with the fix."""
        if error or reply is None or reply_error(reply):
            return  # the sync that follows reports an unreachable HAProxy
        self.algorithm_checked = True
        algorithm = backend_algorithm(reply)
        if algorithm is not None and algorithm not in LEAST_BUSY:
            log.warning(
                "HAProxy backend %s balances with %s: it hands a request to a worker busy with a slow one while "
                "another worker idles; put 'balance leastconn' and 'timeout queue 30s' in backend %s "
                "(see examples/haproxy.cfg)",
                self.backend,
                algorithm,
                self.backend,
            )

    def _synced_state(self, reply: Optional[str], error: Optional[str]) -> None:
        error = error or (reply_error(reply) if reply is not None else None)
        if error or reply is None:
            self._sync_failed(f"cannot read backend {self.backend!r}: {error}")
            return
        existing = {
            name: row
            for name, row in servers_state(reply).items()
            if name.startswith(self.prefix) and name[len(self.prefix) :].isdigit()
        }
        draining = {port for drain in self.drains for port in drain.ports}
        wanted = {self.name(port): port for port in self.master.ports if port not in draining}
        lost = sorted(name for name in self.added & set(wanted) if name not in existing)
        if lost:
            log.warning(
                "HAProxy backend %s lost %d servers of this master (HAProxy reloaded?): adding them again",
                self.backend,
                len(lost),
            )
        self.added = set(wanted)
        commands = []
        for name, port in wanted.items():
            row = existing.get(name)
            server = f"{self.backend}/{name}"
            if row is None:
                commands += [
                    f"add server {server} {self.host}:{port} {SERVER_SETTINGS} maxconn {self.maxconn}",
                    f"enable health {server}",
                    f"set server {server} state ready",
                ]
                self.limited.add(name)
                continue
            if row.get("srv_addr") != self.host.strip("[]") or row.get("srv_port") != str(port):
                commands.append(f"set server {server} addr {self.host.strip('[]')} port {port}")
            if row.get("srv_admin_state") != "0":
                commands.append(f"set server {server} state ready")
            if name not in self.limited:  # an earlier run's server: its maxconn may differ
                commands.append(f"set maxconn server {server} {self.maxconn}")
                self.limited.add(name)
        for name, row in existing.items():
            port_text = name[len(self.prefix) :]
            if name in wanted or (port_text.isdigit() and int(port_text) in draining):
                continue
            if row.get("srv_op_state") == "0" or row.get("srv_admin_state") != "0":
                # down or in maintenance, not ours any more: a leftover of an earlier run
                commands += [f"set server {self.backend}/{name} state maint", f"del server {self.backend}/{name}"]
        self._run_all(commands)

    def _run_all(self, commands: List[str]) -> None:
        failures: List[str] = []
        if not commands:
            self._sync_done(failures, changed=False)
            return
        for index, command in enumerate(commands):
            last = index == len(commands) - 1

            def after(error: Optional[str], command: str = command, last: bool = last) -> None:
                if error:
                    failures.append(f"{command}: {error}")
                if last:
                    self._sync_done(failures)

            self._command(command, after)

    def _sync_done(self, failures: List[str], changed: bool = True) -> None:
        self.syncing = False
        if failures:
            self.added = set()  # what HAProxy holds is unsure: the retry reads it again
            self._sync_failed("; ".join(failures))
            return
        if self.failing:
            log.info("HAProxy backend %s is in step again", self.backend)
        if changed or self.failing:
            log.info("HAProxy backend %s serves ports %s", self.backend, self.master.ports)
        self.failing = False
        self.retry_delay = RETRY_START
        if self.again:
            self.again = False
            self.sync()
        elif self.watch is None and not self.closing:
            self.watch = self.master.call_later(WATCH_INTERVAL, self._watch)

    def _watch(self) -> None:
        """Look at the backend again: HAProxy gives no event when a reload drops the servers added at run time."""
        self.watch = None
        self.sync()

    def _sync_failed(self, why: str) -> None:
        """Log (once per outage, then at debug) and try again later, backing off: it heals by itself."""
        self.syncing = False
        self.again = False
        (log.debug if self.failing else log.warning)("HAProxy: %s; retrying in %.1f s", why, self.retry_delay)
        self.failing = True
        if self.retry is None and not self.closing:
            self.retry = self.master.call_later(self.retry_delay, self._retry)
            self.retry_delay = min(RETRY_CAP, self.retry_delay * 2)

    def _retry(self) -> None:
        self.retry = None
        self.sync()

    # draining ---------------------------------------------------------------
    def _drain_started(self, drain: _Drain) -> Command:
        pending = [len(drain.ports)]

        def after(error: Optional[str]) -> None:
            if error and "No such server" not in error:
                log.warning("HAProxy: cannot drain a server of ports %s: %s", drain.ports, error)
            pending[0] -= 1
            if pending[0] == 0:
                self._poll_sessions(drain)

        return after

    def _poll_sessions(self, drain: _Drain) -> None:
        if drain not in self.drains:
            return
        if not drain.ports:
            self._end_drain(drain)
            return
        self.client.run(f"show stat {self.backend} 4 -1", lambda reply, error: self._sessions(drain, reply, error))

    def _sessions(self, drain: _Drain, reply: Optional[str], error: Optional[str]) -> None:
        if drain not in self.drains:
            return
        if error or reply is None:
            log.warning("HAProxy: cannot read sessions of ports %s (%s); retiring them", drain.ports, error)
            self._end_drain(drain)
            return
        sessions = server_sessions(reply)
        busy = [port for port in drain.ports if sessions.get(self.name(port), 0) > 0]
        if not drain.ports:
            self._end_drain(drain)
        elif busy:
            self.master.call_later(DRAIN_POLL, lambda: self._poll_sessions(drain))
            return
        for index, port in enumerate(drain.ports):
            last = index == len(drain.ports) - 1
            self._command(f"set server {self.server(port)} state maint", lambda error: None)
            self._command(f"del server {self.server(port)}", self._deleted(port, drain if last else None))

    def _deleted(self, port: int, drain: Optional[_Drain]) -> Command:
        """After ``del server``: a failure is retried by the next sync; the last one ends the drain."""

        def after(error: Optional[str]) -> None:
            if error and "No such server" not in error:
                log.info("HAProxy: server %s not deleted yet (%s); trying again later", self.server(port), error)
                self._sync_failed(f"del server {self.server(port)}: {error}")
            if drain is not None:
                self._end_drain(drain)

        return after

    def _drain_timed_out(self, drain: _Drain) -> None:
        if drain in self.drains:
            log.warning(
                "HAProxy: servers of ports %s still busy after %g s; retiring them", drain.ports, self.drain_timeout
            )
            self._end_drain(drain)

    def _end_drain(self, drain: _Drain) -> None:
        if drain not in self.drains:
            return
        self.drains.remove(drain)
        if drain.deadline is not None:
            drain.deadline.cancel()
        drain.done()

    # one command ------------------------------------------------------------
    def _command(self, command: str, after: Command) -> None:
        def reply(text: Optional[str], error: Optional[str]) -> None:
            after(error or (reply_error(text) if text is not None else None))

        self.client.run(command, reply)

    def __repr__(self) -> str:
        return f"<HAProxy backend {self.backend} via {self.client.address}>"
