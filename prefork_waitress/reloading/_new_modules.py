"""NewModules: what a process imported since it last looked, for a worker to report."""

from __future__ import annotations

import sys


def _source_file(module: object) -> str | None:
    """Return a module's ``__file__`` when it names a Python source, else None."""
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") else None


class NewModules:
    """Tells which modules (name to source file) were imported since the last call.

    Frameworks import most of an app after boot: Django's URL includes and
    views on the first request, Flask blueprints, Pyramid ``config.scan()``,
    Trac's env plugins.  A worker calls ``since_last()`` after every request;
    it costs one ``len(sys.modules)`` when nothing was imported.  A module
    removed and another imported between two calls (same count) is seen at the
    next import.  Modules without a ``.py`` source are skipped: there is
    nothing to watch.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._count = -1

    def since_last(self) -> dict[str, str]:
        """Return the source-backed modules imported since the previous call."""
        if len(sys.modules) == self._count:
            return {}
        items = list(sys.modules.items())  # another thread may be importing
        self._count = len(items)
        fresh: dict[str, str] = {}
        for name, module in items:
            if name in self._seen:
                continue
            self._seen.add(name)
            source = _source_file(module)
            if source is not None and getattr(module, "__name__", None) == name:
                fresh[name] = source
        return fresh
