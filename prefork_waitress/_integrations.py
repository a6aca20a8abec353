"""Attach the built-in integrations a master's settings and environment ask for."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .master import Master


def attach(master: "Master") -> None:
    """Add each integration as a listener, so it works even if hooks skip ``super()``."""
    from .control import ControlServer
    from .metrics import MetricsServer
    from .systemd import SystemdNotifier
    from .upstream import UpstreamWriter

    settings = master.settings
    if settings.control_socket:
        master.add_listener(ControlServer(master, settings.control_socket))
    if settings.upstream_file:
        master.add_listener(
            UpstreamWriter(master, settings.upstream_file, settings.upstream_format, settings.on_ports_changed)
        )
    if settings.metrics_port:
        master.add_listener(MetricsServer(master, settings.metrics_host or settings.host, settings.metrics_port))
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        master.add_listener(SystemdNotifier(master, address))
