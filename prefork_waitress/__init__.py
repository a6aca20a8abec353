"""Run a WSGI app as a cluster of single-threaded waitress processes, one port each,
under a master that your own Python code controls."""

__version__ = "0.1.0"  # the one place; setup.py reads it from here

from ._core.slots import WorkerInfo
from ._os.logformat import JsonFormatter
from .errors import BootError, CommandError, StartError
from .master import Master
from .options import Settings, make_settings
from .worker import Worker

__all__ = [
    "BootError",
    "CommandError",
    "JsonFormatter",
    "Master",
    "Settings",
    "StartError",
    "Worker",
    "WorkerInfo",
    "__version__",
    "make_settings",
]
