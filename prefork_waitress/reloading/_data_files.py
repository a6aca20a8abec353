"""Data files a framework asks a reloader to watch (Django: templates, translations)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A watched directory holding more files than this is almost surely not templates.
MAX_FILES = 5000


class _DjangoReloaderStandIn:
    """Collects what Django's ``autoreload_started`` receivers ask a reloader to watch."""

    def __init__(self) -> None:
        self.files: set[str] = set()

    def watch_dir(self, path: str | os.PathLike[str], glob: str) -> None:
        for found in Path(path).glob(glob):
            if len(self.files) >= MAX_FILES:
                return
            if found.is_file() and not found.name.startswith("."):
                self.files.add(str(found.absolute()))

    def watch_file(self, path: str | os.PathLike[str]) -> None:
        self.files.add(str(Path(path).absolute()))


def django_data_files() -> set[str]:
    """Return the files Django's own dev server would watch besides modules.

    Django's receivers of ``autoreload_started`` (``django.template.autoreload``:
    every template directory but Django's own; the translation reloader: the
    ``locale`` directories) name them; Django caches templates and translations
    in the process, so a change needs fresh workers.  Empty without Django.
    """
    autoreload = sys.modules.get("django.utils.autoreload")
    apps = sys.modules.get("django.apps")
    registry = getattr(apps, "apps", None)
    if autoreload is None or not getattr(registry, "ready", False):
        return set()
    collector = _DjangoReloaderStandIn()
    try:
        autoreload.autoreload_started.send(sender=collector)
    except Exception:  # a receiver that wants a real reloader: watch what was collected
        pass
    return collector.files


class NewDataFiles:
    """Tells which framework data files appeared since the last call."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def since_last(self) -> list[str]:
        fresh = django_data_files() - self._seen
        self._seen |= fresh
        return sorted(fresh)
