"""The project's module graph: members, their sources, import edges, reload order."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from ._imports import ImportRequest, SpecFinder, read_imports


def _parents(name: str) -> list[str]:
    """Return the enclosing packages of a dotted name, outermost first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def is_file_key(key: str) -> bool:
    """Tell a depends trigger that is a file path from one that is a module name."""
    return os.path.isabs(key)


class ModuleGraph:
    """Members of a project and what imports what among them.

    An edge ``a -> b`` means a's code holds objects of b (``import b``,
    ``from b import name``, ``from pkg import b`` for a submodule b).  The
    packages enclosing an imported module are members but get no edge: the
    import system runs them first, and a package importing its own submodules
    would otherwise form a cycle with each of them.
    """

    def __init__(self) -> None:
        self.sources: dict[str, str | None] = {}
        self.imports: dict[str, set[str]] = {}
        self.depends: dict[str, set[str]] = {}  # trigger -> modules to reload
        self.roots: set[str] = set()
        self._explicit: set[str] = set()
        self._located: set[str] = set()  # sources given by add_imported(), kept as given

    def add_explicit(self, names: Iterable[str], *, root: bool) -> None:
        """Add modules named by the user (members even if not local) and their imports."""
        finder = SpecFinder()
        new = [n for n in names if n not in self._explicit]
        self._explicit.update(new)
        if root:
            for name in new:
                self.roots.update(finder.root(name))
        self._discover(new, finder)

    def add_imported(self, modules: Mapping[str, str]) -> list[str]:
        """Add modules a process imported (name to source file; members as given).

        The file is the importer's: the module may not be findable from this
        process's sys.path (a Trac plugin loaded from its env).  Returns the new ones.
        """
        new = [name for name in sorted(modules) if self.sources.get(name) is None]
        self._explicit.update(new)
        self._located.update(new)
        finder = SpecFinder()
        for name in new:
            self.sources[name] = os.path.abspath(modules[name])
            self.imports[name] = set()
        for name in new:
            self._discover(self._scan(name, finder), finder)
        return new

    def add_depends(self, trigger: str, targets: Iterable[str]) -> None:
        """Record that ``targets`` must be reloaded when ``trigger`` changes."""
        targets = list(targets)
        self.depends.setdefault(trigger, set()).update(targets)
        modules = targets if is_file_key(trigger) else [trigger, *targets]
        self.add_explicit(modules, root=False)

    def _is_member(self, name: str, finder: SpecFinder) -> bool:
        """Tell whether ``name`` is (or would be) a project member."""
        if name in self.sources or name in self._explicit:
            return True
        return finder.is_local(name, self.roots)

    def _discover(self, names: Iterable[str], finder: SpecFinder) -> None:
        """Breadth-first: add members reachable by imports from ``names``."""
        queue = deque(names)
        while queue:
            name = queue.popleft()
            if name in self.sources or not self._is_member(name, finder):
                continue
            self.sources[name] = finder.source(name)
            self.imports[name] = set()
            queue.extend(self._scan(name, finder))

    def _scan(self, name: str, finder: SpecFinder) -> list[str]:
        """Re-read ``name``'s imports into its edges; return the names to visit."""
        candidates = _parents(name)
        source = self.sources.get(name)
        requests = read_imports(source, name) if source else None
        if requests is None:  # missing or unparsable: keep the edges known so far
            return candidates
        edges: set[str] = set()
        for request in requests:
            candidates += [*_parents(request.base), request.base]
            targets = list(self._edge_targets(request, finder))
            edges.update(targets)
            candidates += targets
        edges.discard(name)
        self.imports[name] = edges
        return candidates

    def _edge_targets(self, request: ImportRequest, finder: SpecFinder) -> Iterator[str]:
        """Yield the modules whose objects ``request`` binds (before membership filtering)."""
        names = [n for n in request.names if n != "*"]
        attribute = not names
        for item in names:
            submodule = f"{request.base}.{item}"
            if self._is_member(submodule, finder):
                yield submodule
            else:
                attribute = True
        if attribute:
            yield request.base

    def rescan(self, names: Iterable[str]) -> None:
        """Re-read changed modules (and unresolved ones), adding new imports as members."""
        finder = SpecFinder()
        todo = [name for name in names if name in self.sources]
        for name, source in list(self.sources.items()):
            if source is None:
                self.sources[name] = finder.source(name)
                todo += [name] if self.sources[name] else []
        for name in todo:
            if name not in self._located:
                self.sources[name] = finder.source(name) or self.sources[name]
            self._discover(self._scan(name, finder), finder)

    def files(self) -> set[str]:
        """Return every module source file and every file trigger."""
        files = {path for path in self.sources.values() if path}
        return files | {key for key in self.depends if is_file_key(key)}

    def module_of(self, path: str) -> str | None:
        """Return the member whose source is ``path``, if any."""
        for name, source in self.sources.items():
            if source == path:
                return name
        return None

    def requires(self, name: str) -> set[str]:
        """Return the members that must be (re)loaded before ``name``."""
        needed = set(self.imports.get(name, ()))
        needed.update(t for t, targets in self.depends.items() if name in targets)
        return {n for n in needed if n in self.sources and n != name}

    def dependents(self, key: str) -> set[str]:
        """Return the members to reload when ``key`` (module or file) changes."""
        index: dict[str, set[str]] = {}
        for name in self.sources:
            for needed in self.requires(name):
                index.setdefault(needed, set()).add(name)
        for trigger, targets in self.depends.items():
            index.setdefault(trigger, set()).update(targets)
        seen: set[str] = set()
        queue = [key]
        while queue:
            for name in index.get(queue.pop(), ()):
                if name not in seen and name in self.sources:
                    seen.add(name)
                    queue.append(name)
        seen.discard(key)
        return seen

    def order(self, names: Iterable[str]) -> list[str]:
        """Sort ``names`` so each comes after the members it requires (DFS postorder).

        Inside an import cycle the order is still deterministic: names are
        visited alphabetically, so a package comes after the submodules it imports.
        """
        wanted = set(names)
        result: list[str] = []
        seen: set[str] = set()
        for start in sorted(wanted):
            if start in seen:
                continue
            seen.add(start)
            stack = [(start, iter(sorted(self.requires(start) & wanted)))]
            while stack:
                node, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    result.append(node)
                elif child not in seen:
                    seen.add(child)
                    stack.append((child, iter(sorted(self.requires(child) & wanted))))
        return result
