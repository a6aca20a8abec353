"""Resolve "package.module:attr" strings to the objects they name.

``"module:factory()"`` names an app factory: it is called (with no arguments)
wherever the app is loaded, so ``--call`` works in lazily loading workers too.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import time
import traceback
from typing import Any, List, Optional

FACTORY_SUFFIX = "()"
PROBE_TIMEOUT = 60.0


class AppImportError(ImportError):
    """The app (or a class) named by a "module:attr" string cannot be loaded."""


def split_spec(spec: str) -> "tuple[str, str]":
    """Split "module:attr" (attr may be dotted); a bare module means attr "application"."""
    module, _, attr = spec.strip().partition(":")
    if not module:
        raise AppImportError(f"{spec!r} does not name a module; expected 'package.module:app'")
    return module, attr or "application"


def find(spec: str) -> Any:
    """Import the module of ``spec`` and return its attribute, never calling it."""
    module_name, attr = split_spec(spec)
    attr = attr[: -len(FACTORY_SUFFIX)] if attr.endswith(FACTORY_SUFFIX) else attr
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
    return obj


def resolve(spec: str, call: bool = False) -> Any:
    """Import the module of ``spec`` and return its attribute (called if ``call`` or "attr()")."""
    obj = find(spec)
    if call or spec.strip().endswith(FACTORY_SUFFIX):
        obj = obj()
    return obj


def check(spec: str) -> None:
    """Raise AppImportError unless ``spec`` names something callable (a factory is not called)."""
    obj = find(spec)
    if not callable(obj):
        raise AppImportError(f"cannot use {spec!r}: {type(obj).__name__} object is not callable")


def _check_app(spec: str, app: Any) -> None:
    if not callable(app):
        raise AppImportError(f"cannot use {spec!r}: {type(app).__name__} object is not callable")


def describe_failure(spec: str, exc: BaseException) -> str:
    """The error for a user: one line, plus the app's own frames if the app's code raised."""
    if isinstance(exc, AppImportError):
        return str(exc)
    return f"{app_traceback(exc)}\ncannot load {spec!r}: the app raised {type(exc).__name__} while being imported"


def app_traceback(exc: BaseException) -> str:
    """The app's own frames of ``exc`` (not this package's, not importlib's) and its last line."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = (package, os.path.dirname(importlib.__file__), "<frozen importlib")
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if not frame.filename.startswith(ours)]
    summary = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    head = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) if frames else ""
    return head + summary


def root_cause(exc: BaseException) -> BaseException:
    """The first exception of a ``raise ... from`` chain (what the app itself raised)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def probe(spec: str, timeout: float = PROBE_TIMEOUT, load: bool = False) -> Optional[str]:
    """Check ``spec`` loads in a forked throwaway process; return the error, or None.

    ``load``: as a worker loads it (a factory is called, and the result must be callable).

    The master itself never imports the app, so workers import it fresh (a
    rolling reload sees new code) and import-time side effects stay out of it.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        code = 0
        try:
            if load:
                _check_app(spec, resolve(spec))
            else:
                check(spec)
        except BaseException as exc:
            code = 1
            os.write(write_end, describe_failure(spec, exc).encode("utf-8", "replace")[:32768])
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        message = read_until_eof(read_end, time.monotonic() + timeout)
    finally:
        os.close(read_end)
    if message is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return f"cannot load {spec!r}: importing it took longer than {timeout:g} s"
    _, status = os.waitpid(pid, 0)
    if message:
        return message
    if status != 0:
        return f"cannot load {spec!r}: the import exited the process (status {status})"
    return None


def read_until_eof(fd: int, deadline: float) -> Optional[str]:
    """Everything written to ``fd`` until EOF; None if the deadline passes first."""
    chunks: List[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks).decode("utf-8", "replace").strip()
        chunks.append(data)
