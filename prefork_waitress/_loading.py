"""Resolve "package.module:attr" strings to the objects they name."""

from __future__ import annotations

import importlib
from typing import Any


class AppImportError(ImportError):
    """The app (or a class) named by a "module:attr" string cannot be loaded."""


def split_spec(spec: str) -> "tuple[str, str]":
    """Split "module:attr" (attr may be dotted); a bare module means attr "application"."""
    module, _, attr = spec.strip().partition(":")
    if not module:
        raise AppImportError(f"{spec!r} does not name a module; expected 'package.module:app'")
    return module, attr or "application"


def resolve(spec: str, call: bool = False) -> Any:
    """Import the module of ``spec`` and return its attribute (called if ``call``)."""
    module_name, attr = split_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppImportError(
                f"cannot import {spec!r}: no module named {exc.name!r} "
                "(is the current directory or your package on sys.path?)"
            ) from exc
        raise
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError(f"cannot load {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if call:
        obj = obj()
    return obj
