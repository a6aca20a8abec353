"""Release directories: ``--chdir`` and ``--pythonpath`` kept as given and resolved again at each reload.

A deploy switches a ``current`` symlink from one release directory to the
next. ``os.chdir`` resolves a symlink once (``os.getcwd()`` then names the
release it pointed to), so the master keeps the paths as given and enters
them again before each rolling reload (and before an upgrade): the new
workers start in, and import from, the release the link names now.

On ``sys.path``: in lazy mode the paths are resolved when entered, so a
worker respawned between a symlink switch and the reload still loads the
release the last reload chose (never a mix); in preload mode the master
imports the app, and the symlink path itself goes on ``sys.path`` so the
modules' files (``/srv/app/current/app.py``) change under the master's
reloader, which re-executes them from the new release.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import List, Optional, Sequence

log = logging.getLogger("prefork_waitress")

__all__ = ["ReleasePaths", "enter", "entered"]


def given_cwd() -> str:
    """The current directory as the user named it: $PWD if it is this directory (a symlink kept), else getcwd()."""
    pwd = os.environ.get("PWD")
    try:
        if pwd and os.path.isabs(pwd) and os.path.samefile(pwd, "."):
            return os.path.normpath(pwd)
    except OSError:
        pass
    return os.getcwd()


class ReleasePaths:
    """The working directory and the sys.path entries of a master, as given (symlinks unresolved)."""

    def __init__(self, chdir: Optional[str], pythonpath: Sequence[str], resolve_links: bool) -> None:
        base = given_cwd()
        self.chdir = os.path.normpath(os.path.join(base, chdir)) if chdir else base
        # relative --pythonpath entries start at the directory given, not at the one it resolves to
        self.pythonpath = [os.path.normpath(os.path.join(self.chdir, path)) for path in pythonpath]
        self.resolve_links = resolve_links
        self._on_sys_path: List[str] = []
        self.resolved: List[str] = []

    def enter(self) -> bool:
        """chdir to the directory given, put the paths first on sys.path; True if they now resolve elsewhere."""
        os.chdir(self.chdir)
        given = [self.chdir, *self.pythonpath]
        entries = [os.path.realpath(path) for path in given] if self.resolve_links else given
        resolved = [os.path.realpath(path) for path in given]
        moved = bool(self.resolved) and resolved != self.resolved
        for path in self._on_sys_path:
            while path in sys.path:
                sys.path.remove(path)
        for path in reversed(entries):
            while path in sys.path:
                sys.path.remove(path)
            sys.path.insert(0, path)
        self._on_sys_path, self.resolved = entries, resolved
        importlib.invalidate_caches()  # the import system's directory listings may be of the old release
        if moved:
            log.info("release paths now resolve to %s", ", ".join(resolved))
        return moved

    def preparing_reload(self) -> None:
        """Master point: a rolling reload begins; the new workers (and a preload) use the paths as they resolve now.

        A link that names nothing (or no directory) abandons the reload, the old workers serving on:
        new workers started where the old ones are would not be the release asked for.
        """
        try:
            self.enter()
        except OSError as exc:
            raise OSError(f"cannot enter {self.chdir} ({exc.strerror or exc}): fix the link and reload again") from exc


_entered: Optional[ReleasePaths] = None


def enter(chdir: Optional[str], pythonpath: Sequence[str], resolve_links: bool) -> ReleasePaths:
    """Enter the directories for this process (the CLI, at start); ``entered()`` returns them later."""
    global _entered
    paths = ReleasePaths(chdir, pythonpath, resolve_links)
    paths.enter()
    _entered = paths
    return paths


def entered() -> Optional[ReleasePaths]:
    """What :func:`enter` entered in this process (None if it was not called): resolve again with ``.enter()``."""
    return _entered
