"""What the master hands a worker process at fork."""

from __future__ import annotations

import dataclasses
import socket
from multiprocessing.connection import Connection
from typing import Any, Dict, Optional, Sequence, Tuple


@dataclasses.dataclass
class ChildSpec:
    """Everything a worker process needs, handed over by fork (never pickled)."""

    slot_id: int
    port: int
    generation: int
    sock: socket.socket
    conn: Connection
    app: Any  # the WSGI callable (preload) or a "module:attr" string
    worker_class: type
    waitress_options: Dict[str, Any]
    output: Any
    cpus: Optional[Tuple[int, ...]]
    graceful_timeout: float
    max_requests: int
    master_pid: int
    inherited: Sequence[Any]  # the master's objects and fds this worker must close
    meter: Any = None  # shared page: request clock, duration histogram, heartbeats (RequestMeter), or None
    access_log: Optional[str] = None  # a path, "-" (stdout), or None
    access_log_format: str = "combined"  # or "json"
    report_modules: bool = False  # tell the master what was imported, at boot and after requests (reload=True)
    max_rss: int = 0  # MiB; 0: no limit
    refork_after: Tuple[int, ...] = ()  # tell the master at each of these counts (it may make this a template)
    freeze: bool = False  # a template collects and gc.freeze()s its heap before it forks (gc_freeze)
    inline_tasks: bool = False  # run requests on the I/O thread, no task thread (inline_tasks)
