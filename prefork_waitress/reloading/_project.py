"""Project: the modules an app is made of, and reloading what changed in dependency order."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import time
import traceback
import weakref
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, NamedTuple

from ._graph import ModuleGraph
from ._imports import is_project_local
from ._watcher import FileWatcher

if TYPE_CHECKING:
    from ._watcher import StrPath

    Depends = Mapping[StrPath, str | Iterable[str]]

log = logging.getLogger("prefork_waitress.reloading")

# A file modified this recently may be rewritten within the same timestamp tick
# (coarse filesystem clocks), so its content digest is kept too.
_RACY_NS = 2_000_000_000


class ReloadError(Exception):
    """A project module failed to import or reload; ``__cause__`` is the original error.

    ``module`` names it, ``traceback`` is the formatted traceback, and
    ``reloaded`` lists the modules this load() had already (re)executed.
    """

    def __init__(self, module: str, error: BaseException, reloaded: list[str], verb: str) -> None:
        self.module = module
        self.reloaded = list(reloaded)
        self.traceback = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        super().__init__(f"{verb} {module!r} failed: {type(error).__name__}: {error}")


class _Stamp(NamedTuple):
    """What tells a file changed: stat fields, plus a digest while the mtime is racy."""

    mtime_ns: int
    size: int
    ino: int
    digest: bytes | None


def _digest(path: str) -> bytes | None:
    """Return a hash of the file's content (None if unreadable)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


def _stamp(path: str) -> _Stamp | None:
    """Stat ``path`` (None if missing); hash it only when modified very recently."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    racy = time.time_ns() - st.st_mtime_ns < _RACY_NS
    return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino, _digest(path) if racy else None)


def _differs(old: _Stamp | None, new: _Stamp | None, path: str) -> bool:
    """Tell whether the file changed between two stamps."""
    if old is None or new is None:
        return old is not new
    if old[:3] != new[:3]:
        return True
    return old.digest is not None and (new.digest or _digest(path)) != old.digest


def drop_bytecode(source: str) -> None:
    """Delete a changed source's .pyc: importlib trusts it on whole-second mtime and size."""
    try:
        os.remove(importlib.util.cache_from_source(source))
    except (OSError, NotImplementedError, ValueError):
        pass


def _reexecute(module: ModuleType, source: str) -> None:
    """importlib.reload, or run the file again for a module loaded from outside sys.path.

    A Trac env plugin is imported from its file by name, so reload() finds no
    spec for it; its file is the one the graph knows.
    """
    try:
        importlib.reload(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.__name__:
            raise
        spec = importlib.util.spec_from_file_location(module.__name__, source)
        if spec is None or spec.loader is None:
            raise
        module.__spec__ = spec
        spec.loader.exec_module(module)


def _check_name(name: str) -> str:
    """Return ``name`` if it is a dotted module name, else raise ValueError."""
    if not isinstance(name, str) or not all(p.isidentifier() for p in name.split(".")):
        raise ValueError(f"not a module name: {name!r}")
    return name


def _trigger_key(trigger: StrPath) -> str:
    """Return a depends trigger as a module name, or an absolute path for a file.

    A str is a file when it contains a path separator, names an existing file
    (relative to the cwd) or is not a dotted name; pass a Path to be explicit.
    """
    if isinstance(trigger, str):
        separators = {os.sep, os.altsep or os.sep, "/"}
        dotted = all(p.isidentifier() for p in trigger.split("."))
        if dotted and not os.path.isfile(trigger) and not separators & set(trigger):
            return trigger
    return os.path.abspath(os.fspath(trigger))


def _names(names: str | Iterable[str]) -> list[str]:
    """Accept one module name or an iterable of them."""
    return [_check_name(n) for n in ([names] if isinstance(names, str) else names)]


class Project:
    """The modules an app is made of, what depends on what, and how to reload them.

    Change detection compares each file's (mtime_ns, size, inode) with what
    the previous load() saw: a stat per file, and a ``touch`` forces a reload.
    Files modified less than 2 s before being stamped also keep a content
    digest, so two writes within one coarse timestamp tick are still told apart.
    """

    def __init__(self, modules: str | Iterable[str], depends: Depends | None = None) -> None:
        self._graph = ModuleGraph()
        self._given: list[str] = []
        self._stamps: dict[str, _Stamp | None] = {}
        self._pending: set[str] = set()  # to reload, kept across failed loads
        self._adopt_checked: set[str] = set()  # sys.modules names from_app() looked at
        self._loaded = False
        self._app: str | None = None  # from_app(): the app's module
        self._watchers: weakref.WeakSet[FileWatcher] = weakref.WeakSet()
        self.add_modules(modules)
        for trigger, targets in (depends or {}).items():
            self._graph.add_depends(_trigger_key(trigger), _names(targets))

    @classmethod
    def from_app(cls, app_spec: str, depends: Depends | None = None) -> Project:
        """Build the project of a ``"package.module:attr"`` app; import nothing yet.

        load() then imports the module and adopts every module it caused to be
        imported whose file is project-local (see adopt()).  A broken app is reported
        by load() as ReloadError, while its files are already known and watched.
        """
        module = _check_name(app_spec.partition(":")[0])
        project = cls([module], depends)
        project._app = module
        return project

    @property
    def modules(self) -> frozenset[str]:
        """Every module name of the project: given, discovered, and in depends."""
        return frozenset(self._graph.sources)

    def files(self) -> set[str]:
        """Every file the project depends on: module sources and depends file triggers."""
        return self._graph.files()

    def add_modules(self, names: str | Iterable[str]) -> None:
        """Add modules (and what they import) to the project; load() imports them."""
        new = [n for n in _names(names) if n not in self._given]
        self._given += new
        self._graph.add_explicit(new, root=True)
        if self._loaded:
            self._stamp_new_files()
        self._update_watchers()

    def dependents(self, name: StrPath) -> set[str]:
        """Return the modules reloaded when ``name`` (module or file) changes, transitively."""
        if isinstance(name, str) and name in self._graph.sources:
            return self._graph.dependents(name)
        path = os.path.abspath(os.fspath(name))
        key = self._graph.module_of(path) or path
        return self._graph.dependents(key)

    def watch_changes(
        self,
        *,
        debounce: float = 0.05,
        use_polling: bool = False,
        poll_interval: float = 0.25,
    ) -> FileWatcher:
        """Return a FileWatcher over files(); load() and add_modules() extend it."""
        watcher = FileWatcher(
            self.files(),
            debounce=debounce,
            use_polling=use_polling,
            poll_interval=poll_interval,
        )
        self._watchers.add(watcher)
        return watcher

    def load(self) -> list[str]:
        """Import what is missing, reload what changed with its dependents; return them.

        The first call imports the given modules not imported yet and stamps
        every file.  Later calls reload each changed module, its importers
        (transitively) and its ``depends`` targets, every module after those it
        imports, with importlib.reload.  The result lists the modules executed,
        in order (reloaded ones, then newly imported given ones).

        On failure ReloadError is raised.  Then the modules before the failing
        one are reloaded (new code); the failing one keeps its previous
        namespace (restored if it raised half-way; its import side effects stay);
        the ones after it are untouched.  All of those stay pending: the next
        load() retries them even if nothing else changed.
        """
        importlib.invalidate_caches()
        try:
            if self._loaded:
                self._find_changes()
            else:
                self._stamp_new_files()
                self._loaded = True
            executed = self._reload_pending()
            return executed + self._import_missing(executed)
        finally:
            self._adopt_imported()
            self._stamp_new_files()
            self._update_watchers()

    def _find_changes(self) -> None:
        """Mark changed modules and everything depending on them as pending."""
        changed: set[str] = set()
        for path, old in list(self._stamps.items()):
            new = _stamp(path)
            if _differs(old, new, path):
                changed.add(path)
            self._stamps[path] = new
        by_file = {src: name for name, src in self._graph.sources.items() if src}
        modules = {by_file[p] for p in changed if p in by_file}
        for path in changed & by_file.keys():
            drop_bytecode(path)
        self._graph.rescan(sorted(modules))
        self._stamp_new_files()  # files of newly imported modules are new, not changed
        self._pending |= modules
        for key in modules | {p for p in changed if p in self._graph.depends}:
            self._pending |= self._graph.dependents(key)
        if self._app is not None and self._pending:
            # The app object may hold what no import shows (a Pyramid scan, a
            # blueprint found by name): build it again from the new modules.
            self._pending.add(self._app)

    def _reload_pending(self) -> list[str]:
        """Reload pending modules in dependency order; raise ReloadError on the first failure."""
        reloaded: list[str] = []
        order = self._graph.order(self._pending)
        if self._app in order:  # last: after every module it may have found dynamically
            order.append(order.pop(order.index(self._app)))
        for name in order:
            module = sys.modules.get(name)
            source = self._graph.sources.get(name)
            if module is None or source is None or not os.path.exists(source):
                self._pending.discard(name)  # not imported (or deleted): nothing to redo
                continue
            snapshot = dict(module.__dict__)
            try:
                _reexecute(module, source)
            except (Exception, SystemExit) as exc:
                module.__dict__.clear()
                module.__dict__.update(snapshot)
                raise ReloadError(name, exc, reloaded, "reloading") from exc
            reloaded.append(name)
            self._pending.discard(name)
        return reloaded

    def _import_missing(self, executed: list[str]) -> list[str]:
        """Import the given modules that are not in sys.modules yet."""
        imported: list[str] = []
        for name in self._given:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except (Exception, SystemExit) as exc:
                raise ReloadError(name, exc, executed + imported, "importing") from exc
            imported.append(name)
        return imported

    def _adopt_imported(self) -> None:
        """For from_app(): adopt what this process imported since the last look."""
        fresh: dict[str, str | None] = {}
        for name, module in list(sys.modules.items()):
            if name in self._adopt_checked:
                continue
            self._adopt_checked.add(name)
            if getattr(module, "__name__", None) == name:
                fresh[name] = getattr(module, "__file__", None)
        self.adopt(fresh)

    def adopt(self, modules: Mapping[str, str | None]) -> list[str]:
        """For from_app(): add the project-local ones of these modules (name to file).

        Project-local is the rule of ``_imports`` (a ``.py`` outside the
        interpreter's stdlib and site-packages, or under a given module's
        package), so an app's own packages, Django apps next to it and plugins
        loaded from anywhere (a Trac env's ``plugins/``) are adopted; libraries
        are not.  The master feeds it what workers report they imported: such a
        module is watched and reloaded when in sys.modules, but load() never
        imports it.  Returns the modules added.
        """
        if self._app is None:
            return []
        found = {
            name: path
            for name, path in modules.items()
            if path
            and name != "__main__"
            and self._graph.sources.get(name) is None
            and is_project_local(path, self._graph.roots)
        }
        added = self._graph.add_imported(found) if found else []
        if added:
            if self._loaded:
                self._stamp_new_files()
            self._update_watchers()
        return added

    def add_data_files(self, paths: Iterable[StrPath]) -> list[str]:
        """Watch files whose change reloads no module but needs fresh workers (templates).

        Like ``depends={path: []}``; returns the paths that were new.
        """
        added = []
        for path in paths:
            key = os.path.abspath(os.fspath(path))
            if key not in self._graph.depends:
                self._graph.add_depends(key, [])
                added.append(key)
        if added:
            if self._loaded:
                self._stamp_new_files()
            self._update_watchers()
        return added

    def _stamp_new_files(self) -> None:
        """Stamp the project files never stamped before (their baseline)."""
        for path in self._graph.files():
            if path not in self._stamps:
                self._stamps[path] = _stamp(path)

    def _update_watchers(self) -> None:
        """Make the watchers from watch_changes() follow newly found files."""
        files = self._graph.files()
        for watcher in list(self._watchers):
            if watcher.closed:
                continue
            for path in sorted(files - watcher.paths):
                try:
                    watcher.add(path)
                except OSError as exc:
                    log.warning("cannot watch project file %s: %s", path, exc)

    def __repr__(self) -> str:
        return f"<Project {len(self._graph.sources)} modules, {len(self._pending)} pending>"
