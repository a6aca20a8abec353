"""Options from outside the command line: a Python config file and the environment.

Every name read here is an entry of the option tables (``options.OPTIONS``,
``options.PROGRAM_OPTIONS``) or one of waitress's own options, so nothing is
defined twice. Each value keeps its source (``Given``), and a value that
does not convert is reported with it: ``option workers: ... (from env
PREFORK_WAITRESS_WORKERS)``. Precedence, highest first: the command line,
``PREFORK_WAITRESS_<OPTION>``, ``PREFORK_WAITRESS_ARGS``, the config file,
``WEB_CONCURRENCY`` (workers only), the defaults.
"""

from __future__ import annotations

import difflib
import inspect
import traceback
import types
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..options import (
    OPTION_BY_NAME,
    OPTIONS,
    PROGRAM_OPTION_BY_NAME,
    PROGRAM_OPTIONS,
    convert_option,
    waitress_defaults,
    waitress_options,
)

__all__ = ["ConfigError", "ConfigFile", "Given", "read_config_file", "read_environment", "merge", "describe"]

ENV_PREFIX = "PREFORK_WAITRESS_"
ENV_ARGS = ENV_PREFIX + "ARGS"
WEB_CONCURRENCY = "WEB_CONCURRENCY"
# the Master's hooks a config file may define as functions (their first argument is the master)
MASTER_HOOKS = ("when_ready", "worker_started", "worker_exited", "ports_changed", "reloading", "reloaded", "stopping")
NOT_IN_FILE = ("config", "print_config")  # options of the command line only
CONFIG_MODULE = "prefork_waitress_config"  # __name__ while the file runs: tells its own functions from imports
DEFAULT = "default"


class ConfigError(ValueError):
    """A config file or an environment variable that cannot be used; the message names it."""


class Given(NamedTuple):
    """An option's value as found, and where: "cli", "env VAR", "file PATH" or "default"."""

    value: Any
    source: str


class ConfigFile(NamedTuple):
    """What a config file defines: option values and master hooks (functions named like them)."""

    path: str
    options: Dict[str, Given]
    hooks: Dict[str, Callable[..., Any]]


def known_names() -> List[str]:
    """Every option name: the master's, the programs', waitress's."""
    return [o.name for o in OPTIONS] + [o.name for o in PROGRAM_OPTIONS] + list(waitress_defaults())


def close_match(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest candidate, or nothing."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]}?)" if matches else ""


def read_config_file(path: str) -> ConfigFile:
    """Run the Python file at ``path``; its module-level names are options, its hook functions hooks.

    Names starting with ``_``, modules, and functions or classes it imported
    are its own business; any other name must be an option or a hook.
    """
    source = f"file {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        code = compile(text, path, "exec")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
        where = f", line {exc.lineno}" if isinstance(exc, SyntaxError) else ""
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ConfigError(f"config file {path}{where}: {message}") from None
    namespace: Dict[str, Any] = {"__name__": CONFIG_MODULE, "__file__": path, "__builtins__": __builtins__}
    try:
        exec(code, namespace)
    except Exception as exc:
        raise ConfigError(f"config file {path}{_line_in(path, exc)}: {type(exc).__name__}: {exc}") from None
    options: Dict[str, Given] = {}
    hooks: Dict[str, Callable[..., Any]] = {}
    names = [n for n in known_names() if n not in NOT_IN_FILE]
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if name in MASTER_HOOKS:
            if not inspect.isfunction(value):
                raise ConfigError(f"config file {path}: {name} is a master hook: define it as a function (master, ...)")
            hooks[name] = value
        elif name in names:
            options[name] = Given(value, source)
        elif name in NOT_IN_FILE:
            raise ConfigError(f"config file {path}: {name} is an option of the command line only")
        elif not _defines_nothing(value):
            raise ConfigError(
                f"config file {path}: {name} is neither an option nor a master hook"
                f"{close_match(name, names + list(MASTER_HOOKS))}; "
                "name your own helpers with a leading _"
            )
    return ConfigFile(path, options, hooks)


def _defines_nothing(value: Any) -> bool:
    """True for a class (a worker_class may be defined in the file) or a function the file imported."""
    if inspect.isclass(value):
        return True
    return callable(value) and getattr(value, "__module__", None) != CONFIG_MODULE


def _line_in(path: str, exc: BaseException) -> str:
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == path]
    return f", line {lines[-1]}" if lines else ""


def read_environment(environ: Mapping[str, str]) -> Tuple[Dict[str, Given], List[str]]:
    """``PREFORK_WAITRESS_<OPTION>`` values, and a warning for each such variable that is no option.

    ``WEB_CONCURRENCY`` is not read here (see :func:`merge`); ``PREFORK_WAITRESS_ARGS``
    is parsed by the command line's parser.
    """
    names = known_names()
    variables = [ENV_PREFIX + name.upper() for name in names] + [ENV_ARGS]
    options: Dict[str, Given] = {}
    warnings: List[str] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == ENV_ARGS:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name in names and var == ENV_PREFIX + name.upper():
            options[name] = Given(environ[var], f"env {var}")
        else:
            warnings.append(f"{var} is not a prefork-waitress setting and is not used{close_match(var, variables)}")
    return options, warnings


def merge(layers: Sequence[Mapping[str, Given]], environ: Mapping[str, str]) -> Dict[str, Given]:
    """Every option once, from the highest layer that has it (``layers`` highest first), else its default.

    ``WEB_CONCURRENCY`` sets workers when no layer does. Waitress options
    appear only when some layer gives them.
    """
    merged: Dict[str, Given] = {o.name: Given(o.default, DEFAULT) for o in OPTIONS + PROGRAM_OPTIONS}
    if WEB_CONCURRENCY in environ:
        merged["workers"] = Given(environ[WEB_CONCURRENCY], f"env {WEB_CONCURRENCY}")
    for layer in reversed(layers):
        merged.update(layer)
    return merged


def rank(given: Given) -> int:
    """The precedence of ``given``'s source: 0 (the command line) wins over 1, 2, ..."""
    source = given.source
    if source == "cli":
        return 0
    if source == f"env {ENV_ARGS}":
        return 2
    if source.startswith(f"env {ENV_PREFIX}"):
        return 1
    if source.startswith("file "):
        return 3
    return 4 if source != DEFAULT else 5


def convert(name: str, given: Given) -> Any:
    """``given`` converted by its option's table entry; the error names the option and the source."""
    try:
        if name in PROGRAM_OPTION_BY_NAME:
            try:
                return PROGRAM_OPTION_BY_NAME[name].convert(given.value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"option {name}: {exc}") from None
        if name in OPTION_BY_NAME:
            return convert_option(name, given.value)
        return waitress_options({name: given.value})[name]
    except (ValueError, TypeError, ImportError) as exc:
        raise ConfigError(f"{exc} (from {given.source})") from None


def describe(app: Optional[Given], merged: Mapping[str, Given], converted: Mapping[str, Any]) -> str:
    """``--print-config``: one line per option, ``name = value  # source``, in the table's order."""
    rows = [("app", repr(app.value), app.source)] if app is not None else []
    for name, given in merged.items():
        value = converted.get(name, given.value)
        rows.append((name, _shown(value), given.source))
    width = max(len(f"{name} = {value}") for name, value, _ in rows)
    return "".join(f"{name} = {value}".ljust(width) + f"  # {source}\n" for name, value, source in rows)


def _shown(value: Any) -> str:
    if inspect.isclass(value):
        return f"{value.__module__}:{value.__qualname__}"
    return repr(value)


def config_path(layers: Sequence[Mapping[str, Given]]) -> Optional[Given]:
    """The config file named by the highest layer (command line, then environment), if any."""
    for layer in layers:
        if layer.get("config") is not None and layer["config"].value is not None:
            return layer["config"]
    return None
