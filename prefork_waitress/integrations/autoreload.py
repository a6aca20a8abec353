"""The master's side of code reloading: the app's Project, its watcher, its reload.

In preload mode the master imports the app, so a reload re-imports exactly
the modules that changed and those depending on them before forking the new
generation. In lazy mode every new worker imports the code afresh, so the
master only watches the files and drops stale bytecode before the rolling
reload. In both modes workers report what they imported, at boot and after
each request that imported more (frameworks load most of an app lazily), so
those files are watched from then on.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, List, Mapping, Optional, Sequence

from .._core.handle import MasterHandle
from .._core.loop import Timer
from .._os.loading import resolve
from ..reloading import ChangeBatch, FileWatcher, Project, drop_bytecode

log = logging.getLogger("prefork_waitress")

# A save often touches several files: gather changes until none came for
# QUIET seconds (at most MAX_GATHER), on a master timer so the loop never blocks.
QUIET = 0.05
MAX_GATHER = 0.5


class CodeReloader:
    """Keeps the app's Project; in watch mode, turns saved files into rolling reloads."""

    def __init__(self, master: MasterHandle, app_spec: str, watch: bool, extra_files: Sequence[str] = ()) -> None:
        """``extra_files`` (``reload_extra_file``): files outside the app's modules whose change reloads too."""
        self.master = master
        self.app_spec = app_spec
        self.watch = watch
        self.extra_files = tuple(extra_files)
        self.project = Project.from_app(app_spec)
        self.watcher: Optional[FileWatcher] = None
        self._poll_timer: Optional[Timer] = None
        self._batch = ChangeBatch(QUIET, MAX_GATHER)
        self._settle_timer: Optional[Timer] = None
        self._loaded = False

    def load_app(self) -> Any:
        """Import (first time) or reload what changed (later), then resolve the app."""
        first, self._loaded = not self._loaded, True
        reloaded = self.project.load()
        if reloaded and not first:  # the first load imports everything: nothing was reloaded
            log.info("reloaded modules: %s", ", ".join(reloaded))
        return resolve(self.app_spec)

    def start_watching(self) -> None:
        """Watch every file of the project from the master loop (no thread)."""
        if not self.watch:
            return
        self.project.add_data_files(self.extra_files)
        self.watcher = self.project.watch_changes(debounce=0)
        self.master.own(self.watcher)
        self.master.add_io_handler(self.watcher, self._changed)
        self._schedule_poll()
        log.info("watching %d files for changes", len(self.watcher.paths))
        log.debug("now watching: %s", ", ".join(sorted(self.project.modules)))
        if self.master.settings.preload and "django.conf" in sys.modules:
            log.warning(
                "reload with preload: Django reads settings.py and registers models once per process, "
                "so the master cannot reload them; leave preload off to have every save served"
            )

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.master.remove_io_handler(self.watcher)
            self.watcher.close()
            self.watcher = None
        for timer in (self._poll_timer, self._settle_timer):
            if timer is not None:
                timer.cancel()

    def adopt(self, modules: Mapping[str, Optional[str]], data_files: List[str]) -> None:
        """A worker reports what it imported (at boot, after requests): watch the app's part."""
        added = self.project.adopt(modules) + self.project.add_data_files(data_files)
        if added and self.watcher is not None:
            names = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
            log.info("watching %d files for changes (new: %s)", len(self.watcher.paths), names)
            log.debug("now watching: %s", ", ".join(added))

    def _schedule_poll(self) -> None:
        if self.watcher is None:
            return
        deadline = self.watcher.next_poll_deadline()
        if deadline is not None:
            self._poll_timer = self.master.call_later(max(0.0, deadline - time.monotonic()), self._poll)

    def _poll(self) -> None:
        if self.watcher is not None and self.watcher.poll():
            self._changed(self.watcher)
        self._schedule_poll()

    def _changed(self, watcher: Any) -> None:
        now = time.monotonic()
        before = self._batch.deadline
        deadline = self._batch.add(watcher.changed_files(), now)
        if deadline is None or deadline == before:
            return
        if self._settle_timer is not None:
            self._settle_timer.cancel()
        self._settle_timer = self.master.call_later(max(0.0, deadline - now), self._settled)

    def _settled(self) -> None:
        changed, self._settle_timer = self._batch.take(), None
        log.info("changed: %s; reloading", ", ".join(sorted(changed)))
        if not self.master.settings.preload:
            for path in changed:
                if path.endswith(".py"):
                    drop_bytecode(path)
        self.master.reload()
