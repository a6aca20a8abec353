"""systemd notify support (public module; the code lives in integrations/systemd.py)."""

from .integrations.systemd import SystemdNotifier, notify

__all__ = ["SystemdNotifier", "notify"]
