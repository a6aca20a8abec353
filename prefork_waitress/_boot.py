"""The master's boot: the slots' sockets, and the app imported in the master (preload) under gc.freeze.

What can fail before a fork happens here, bounded by ``boot_timeout``; the
Cluster calls it at start and, in preload mode, before each rolling reload.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ._core.pool import WorkerPool
from ._os.activation import activated_sockets
from ._os.limits import time_limit
from ._os.loading import AppImportError, resolve
from ._os.memory import freeze_heap, unfreeze_heap
from .options import Settings

log = logging.getLogger("prefork_waitress")


def open_slots(pool: WorkerPool, workers: int) -> None:
    """The slots: the sockets passed by socket activation (in order), else ``workers`` new ones."""
    passed = activated_sockets()
    for activated in passed:
        pool.add_slot(activated.sock)
    if passed:
        log.info(
            "socket activation: serving the %d sockets passed, ports %s",
            len(passed),
            [slot.port for slot in pool.slots],
        )
    for _ in range(workers if not passed else 0):
        pool.add_slot()


def load_app(app_spec: Any) -> Any:
    """Resolve the app in the master (preload); raises AppImportError with the cause."""
    if not isinstance(app_spec, str):
        return app_spec
    try:
        return resolve(app_spec)
    except AppImportError:
        raise
    except Exception as exc:
        raise AppImportError(f"cannot load {app_spec!r}: {type(exc).__name__}: {exc}") from exc


def preload(settings: Settings, app_spec: Any, load: Callable[[], Any]) -> Any:
    """Import the app in the master within boot_timeout (SIGALRM interrupts an import that hangs);
    with gc_freeze, freeze the heap the workers will share. Returns the app.

    A reload unfreezes first, so the old code's objects can be collected;
    the heap is frozen again even if the new code fails to import.
    """
    with time_limit(settings.boot_timeout, f"importing {app_spec!r} in the master (preload)"):
        if not settings.gc_freeze:
            return load()
        unfreeze_heap()
        try:
            app = load()
        except BaseException:
            freeze_heap()  # the old code keeps serving: keep its heap shared
            raise
        log.info("preloaded the app; %d objects frozen (gc.freeze) for the workers to share", freeze_heap())
        return app
