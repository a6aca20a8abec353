"""The control socket (public module; the code lives in integrations/control.py)."""

from .integrations.control import ControlError, ControlServer, request

__all__ = ["ControlError", "ControlServer", "request"]
