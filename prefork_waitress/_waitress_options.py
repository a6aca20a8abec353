"""waitress's own options, passed through: their defaults, and checking them against waitress itself."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from waitress.adjustments import Adjustments

# waitress options this library sets itself: the master owns the sockets.
MANAGED_WAITRESS_OPTIONS = ("host", "port", "listen", "sockets", "unix_socket")


def waitress_defaults() -> Dict[str, Any]:
    """waitress's own options and their defaults, minus those the master sets itself.

    They are the documented arguments of ``waitress.adjustments.Adjustments``,
    which keeps each default as a public class attribute (socket_options, a
    list of tuples, is no argument).
    """
    return {
        name: value
        for name, value in vars(Adjustments).items()
        if not name.startswith("_")
        and isinstance(value, (bool, int, float, str, frozenset, set, type(None)))
        and name not in MANAGED_WAITRESS_OPTIONS
    }


def waitress_options(given: Mapping[str, Any]) -> Dict[str, Any]:
    """Check pass-through options against waitress itself; threads must be 1."""
    options = dict(given)
    for name in MANAGED_WAITRESS_OPTIONS:
        if name in options:
            raise ValueError(
                f"option {name}: set by prefork_waitress itself "
                "(use host and base_port; each worker serves one pre-bound socket)"
            )
    if "threads" in options:
        try:
            threads = int(options["threads"])
        except (TypeError, ValueError):
            threads = -1
        if threads != 1:
            raise ValueError(
                f"option threads: must be 1, got {options['threads']!r} "
                "(each worker serves one request at a time; add workers instead)"
            )
        del options["threads"]
    try:
        adjustments = Adjustments(**options)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if message.startswith("Unknown adjustment"):
            message = f"unknown option {message.split(' ', 2)[2]}: not a prefork_waitress or waitress option"
        else:
            message = f"option {_culprit(options)}: {message}"
        raise ValueError(message) from None
    return {name: getattr(adjustments, name) for name in options}


def _culprit(options: Mapping[str, Any]) -> str:
    """The name of the waitress option that waitress rejected (it does not say which)."""
    for name, value in options.items():
        try:
            Adjustments(**{name: value})
        except (ValueError, TypeError):
            return name
    return ", ".join(options)
