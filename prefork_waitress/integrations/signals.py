"""The default signals: TERM and INT stop gracefully, QUIT stops at once."""

from __future__ import annotations

import signal

from .._core.handle import MasterHandle


def install_default_signals(master: MasterHandle) -> None:
    """Give the master its default signals (the CLI adds HUP, TTIN and TTOU on top)."""
    master.add_signal_handler(signal.SIGTERM, master.stop)
    master.add_signal_handler(signal.SIGINT, master.stop)
    master.add_signal_handler(signal.SIGQUIT, lambda: master.stop(graceful=False))
