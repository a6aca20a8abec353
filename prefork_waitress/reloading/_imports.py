"""Static import analysis: what a module's source imports, where modules live, which are local.

Project-local rule: a module belongs to the project when it has a Python
source file (``.py``) and that file, symlinks resolved, is

- not inside prefork_waitress itself (the master's own code is never reloaded),
- and either under a *root* -- the directory of the top-level package of a
  module given to the Project (or the file itself for a top-level module) --
  or under none of the interpreter's directories: sysconfig's ``stdlib``,
  ``platstdlib``, ``purelib``, ``platlib``, and any path with a
  ``site-packages`` or ``dist-packages`` component.

So an app checked out anywhere is local, third-party and standard modules are
not, and an app installed into site-packages is still local below its package.
"""

from __future__ import annotations

import ast
import functools
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from importlib.machinery import ModuleSpec
from typing import NamedTuple

_OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_PACKAGE_DIR_NAMES = ("site-packages", "dist-packages")


class ImportRequest(NamedTuple):
    """One import found in source: ``from base import names`` or ``import base``."""

    base: str
    names: tuple[str, ...] = ()


def _under(path: str, directory: str) -> bool:
    """Tell whether ``path`` is ``directory`` or inside it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


@functools.cache
def interpreter_dirs() -> tuple[str, ...]:
    """Return the standard library and install directories of this interpreter."""
    paths = sysconfig.get_paths()
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(sorted({os.path.realpath(paths[k]) for k in keys if paths.get(k)}))


def is_project_local(path: str, roots: Iterable[str]) -> bool:
    """Apply the project-local rule (module docstring) to a source file path."""
    real = os.path.realpath(path)
    if not real.endswith(".py") or _under(real, _OWN_PACKAGE):
        return False
    if any(_under(real, root) for root in roots):
        return True
    parts = real.split(os.sep)
    if any(name in parts for name in _PACKAGE_DIR_NAMES):
        return False
    return not any(_under(real, d) for d in interpreter_dirs())


class SpecFinder:
    """Find module specs without importing anything (memoised per instance)."""

    def __init__(self) -> None:
        self._cache: dict[str, ModuleSpec | None] = {}
        self._local: dict[str, bool] = {}

    def find(self, name: str) -> ModuleSpec | None:
        """Return the spec of ``name`` (sys.modules first), or None if not found."""
        if name not in self._cache:
            self._cache[name] = self._find(name)
        return self._cache[name]

    def _find(self, name: str) -> ModuleSpec | None:
        """Resolve top-level names by every finder, submodules by their parent's path."""
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if isinstance(spec, ModuleSpec):
            return spec
        parent, _, _ = name.rpartition(".")
        try:
            if not parent:
                return importlib.util.find_spec(name)
            locations = self.search_locations(parent)
            if not locations:
                return None
            return importlib.machinery.PathFinder.find_spec(name, locations)
        except (ImportError, ValueError, OSError):
            return None

    def search_locations(self, package: str) -> list[str]:
        """Return the directories where ``package``'s submodules live ([] if none)."""
        module = sys.modules.get(package)
        path = getattr(module, "__path__", None)
        if path is None:
            spec = self.find(package)
            path = spec.submodule_search_locations if spec else None
        return [os.fspath(p) for p in path] if path is not None else []

    def source(self, name: str) -> str | None:
        """Return the absolute ``.py`` source path of ``name``, or None."""
        spec = self.find(name)
        origin = spec.origin if spec is not None and spec.has_location else None
        if origin and origin.endswith(".py"):
            return os.path.abspath(origin)
        return None

    def is_local(self, name: str, roots: Iterable[str]) -> bool:
        """Tell whether ``name`` has a project-local source (memoised; roots must not change)."""
        if name not in self._local:
            source = self.source(name)
            self._local[name] = source is not None and is_project_local(source, roots)
        return self._local[name]

    def root(self, name: str) -> list[str]:
        """Return the real directory (or file) of ``name``'s top-level package."""
        top = name.partition(".")[0]
        locations = self.search_locations(top)
        if locations:
            return [os.path.realpath(p) for p in locations]
        source = self.source(top)
        return [os.path.realpath(source)] if source else []

    def sys_path_entry(self, name: str) -> str | None:
        """Return the real directory holding ``name``'s top-level package or module."""
        top = self.root(name)
        return os.path.dirname(top[0]) if top else None


def _is_type_checking(test: ast.expr) -> bool:
    """Tell whether an ``if`` test is ``TYPE_CHECKING`` (imports never run)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def resolve_relative(module: str | None, level: int, package: str) -> str | None:
    """Turn ``from <level dots><module> import`` into an absolute base name."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level > len(parts):
        return None
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{module}" if module else base


_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Yield every statement, nested ones too, skipping ``if TYPE_CHECKING:`` bodies."""
    for node in body:
        yield node
        skip_body = isinstance(node, ast.If) and _is_type_checking(node.test)
        for field in _BODIES:
            if not (skip_body and field == "body"):
                yield from _statements(getattr(node, field, None) or ())


def _literal_import_calls(tree: ast.AST) -> Iterator[ImportRequest]:
    """Yield ``import_module("x")`` / ``__import__("x")`` calls with an absolute literal."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, first = node.func, node.args[0]
        called = getattr(func, "attr", None) or getattr(func, "id", None)
        if (
            called in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and not first.value.startswith(".")
        ):
            yield ImportRequest(first.value)


def _requests(tree: ast.Module, package: str) -> Iterator[ImportRequest]:
    """Yield the imports of a parsed module whose package is ``package``."""
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            yield from (ImportRequest(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(node.module, node.level, package)
            if base:
                yield ImportRequest(base, tuple(alias.name for alias in node.names))


def read_imports(path: str, module: str) -> list[ImportRequest] | None:
    """Parse ``path`` (the source of ``module``) and return its imports; None if unparsable."""
    try:
        with open(path, "rb") as f:
            source = f.read()
        tree = ast.parse(source, path)
    except (OSError, SyntaxError, ValueError):
        return None
    is_package = os.path.basename(path) == "__init__.py"
    requests = list(_requests(tree, module if is_package else module.rpartition(".")[0]))
    if b"import_module" in source or b"__import__" in source:  # walking all nodes is slow
        requests += _literal_import_calls(tree)
    return requests
