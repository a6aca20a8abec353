"""Log records as one JSON object per line (``--log-format json``), and which slot this process serves.

The library never installs a handler (see docs/guides/operations.rst, "JSON logs"); the runners put
:class:`JsonFormatter` on theirs. A worker inherits the master's handlers at
fork, so its records come out in the same form, with its slot. Fields: ``time``
(ISO 8601, UTC), ``level``, ``pid``, ``slot`` (when the record is from or about
a worker), ``logger``, ``message``, the event's own fields (the ``extra=`` of
the log call: ``event``, ``exitcode``, ``reason``, ``generation``, ``port``,
...), and ``exception`` (the traceback, as one string) when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Dict, Optional

__all__ = ["JsonFormatter", "set_process_slot"]

_slot: Optional[int] = None
# What every LogRecord has (or a formatter adds): not the event's own fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def set_process_slot(slot: Optional[int]) -> None:
    """This process is the worker of ``slot`` (None: the master): its records carry that slot."""
    global _slot
    _slot = slot


def utc_iso(timestamp: float) -> str:
    """``2026-12-07T13:05:37.437Z``: a Unix time as ISO 8601, UTC, in milliseconds."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message or traceback are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: Dict[str, Any] = {
            "time": utc_iso(record.created),
            "level": record.levelname,
            "pid": record.process,
        }
        slot = getattr(record, "slot", _slot)
        if slot is not None:
            entry["slot"] = slot
        entry["logger"] = record.name
        entry["message"] = record.getMessage()
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=repr)
