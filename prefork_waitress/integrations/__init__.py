"""Built-in integrations: each sees the master only through the MasterHandle Protocol.

:func:`attach` is the one list of what a master gets from its settings and
environment. A new integration is a listener (see ``_core.events.Listener``)
added here.
"""

from __future__ import annotations

import os
from typing import Any, List

from .._core.handle import MasterHandle
from .._os.activation import RESERVED_PREFIX
from .accept_queue import AcceptQueueWatch
from .control import ControlServer
from .haproxy import HAProxyServers
from .health import Health
from .metrics import MetricsServer, render_metrics
from .signals import dump_worker_tracebacks, install_default_signals
from .systemd import SystemdNotifier
from .top import top_snapshot
from .upgrade import Upgrader
from .upstream import UpstreamWriter


def attach(master: MasterHandle) -> Upgrader:
    """Install the default signals and add each integration asked for as a listener; the upgrader."""
    install_default_signals(master)
    settings = master.settings
    master.add_listener(AcceptQueueWatch(master))
    passed: List[Any] = []  # (name, object with .sock) of the sockets an upgrade passes on besides the slots
    upgrader = Upgrader(master, lambda: [(name, owner.sock) for name, owner in passed if owner.sock is not None])
    if settings.control_socket:
        control = ControlServer(master, settings.control_socket)
        control.add_action("metrics", lambda request: {"text": render_metrics(master)})
        control.add_action("top", lambda request: top_snapshot(master))
        control.add_action("tracebacks", lambda request: {"workers": dump_worker_tracebacks(master)})
        control.add_deferred_action("upgrade", lambda request, reply: master.upgrade(reply))
        master.add_listener(control)
        passed.append((RESERVED_PREFIX + "control", control))
    if settings.metrics_port:
        metrics = MetricsServer(master, settings.metrics_host or settings.host, settings.metrics_port)
        health = Health(master)
        metrics.http.route("/healthz", health.healthz)
        metrics.http.route("/readyz", health.readyz)
        master.add_listener(health)
        master.add_listener(metrics)
        passed.append((RESERVED_PREFIX + "metrics", metrics.http))
    master.add_listener(upgrader)  # after control and metrics (they claim their passed sockets first)
    if settings.upstream_file:
        master.add_listener(
            UpstreamWriter(master, settings.upstream_file, settings.upstream_format, settings.on_ports_changed)
        )
    if settings.haproxy_socket and settings.haproxy_backend:
        master.add_listener(
            HAProxyServers(master, settings.haproxy_socket, settings.haproxy_backend, settings.graceful_timeout)
        )
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        master.add_listener(SystemdNotifier(master, address))
    return upgrader
