"""Every option of the master, defined once: type, default, conversion, help.

The API, the CLI, the control socket and the PasteDeploy runner all go
through :func:`make_settings`, so a value given as ``"4"`` in an ini file and
as ``4`` in Python is converted and checked the same way, with the same
error message.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from waitress.adjustments import Adjustments

from ._os.adoption import why_no_refork

__all__ = ["OPTIONS", "PROGRAM_OPTIONS", "Option", "Settings", "make_settings", "waitress_defaults", "waitress_options"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f", ""})

# waitress options this library sets itself: the master owns the sockets.
MANAGED_WAITRESS_OPTIONS = ("host", "port", "listen", "sockets", "unix_socket")


def as_bool(value: Any) -> bool:
    """Accept a bool, or one of the usual yes/no words from an ini file."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        value = value.strip()
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def int_at_least(minimum: int, maximum: Optional[int] = None) -> Callable[[Any], int]:
    """Converter to an int within [minimum, maximum]."""

    def convert(value: Any) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected a whole number, got {value!r}")
        number = int(_number(value, int if not isinstance(value, float) else float))
        if number < minimum or (maximum is not None and number > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}, got {number}")
        return number

    return convert


def positive_seconds(value: Any) -> float:
    """Converter to a duration in seconds, strictly positive."""
    number = float(_number(value, float))
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return number


def non_negative_seconds(value: Any) -> float:
    """Converter to a duration in seconds, zero or more."""
    number = float(_number(value, float))
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be zero or a positive number of seconds, got {value!r}")
    return number


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Let None (or an empty / "none" string) through, convert the rest."""

    def convert_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off", "0")):
            return None
        return convert(value)

    return convert_optional


def as_path(value: Any) -> str:
    """A filesystem path, made absolute now so a later chdir cannot move it."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"expected a file path, got {value!r}")
    return os.path.abspath(os.fspath(value))


def as_output(value: Any) -> Any:
    """A path, or an open file object that has a real file descriptor."""
    if hasattr(value, "fileno") and not isinstance(value, (str, os.PathLike)):
        try:
            value.fileno()
        except (OSError, ValueError) as exc:
            raise ValueError(f"the file object has no usable fileno(): {exc}") from None
        return value
    return as_path(value)


def as_host(value: Any) -> str:
    """The address the worker sockets bind to."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a host name or address, got {value!r}")
    return value.strip()


def as_log_path(value: Any) -> str:
    """A log file path, or ``-`` for the worker's stdout (the output)."""
    if isinstance(value, str) and value.strip() == "-":
        return "-"
    return as_path(value)


def as_cpu_affinity(value: Any) -> Union[bool, Tuple[int, ...]]:
    """True: worker i on CPU i mod n; False: no pinning; a list: worker i on list[i mod len]."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("auto", "") or word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS or word == "none":
            return False
        value = [part for part in word.replace(",", " ").split()]
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and value:
        cpus = tuple(int_at_least(0)(cpu) for cpu in value)
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if usable is not None and not set(cpus) <= usable:
            missing = sorted(set(cpus) - usable)
            raise ValueError(f"CPUs {missing} are not available to this process (it may use {sorted(usable)})")
        return cpus
    raise ValueError(f"expected 'auto', true, false or a list of CPU numbers, got {value!r}")


UPSTREAM_FORMATS = ("nginx", "nginx-block", "haproxy", "haproxy-block")


def as_upstream_format(value: Any) -> str:
    """The frontend dialect of the upstream file: server lines, or a whole block (``-block``)."""
    if value not in UPSTREAM_FORMATS:
        raise ValueError(f"expected one of {', '.join(UPSTREAM_FORMATS)}, got {value!r}")
    return str(value)


def as_block_name(value: Any) -> str:
    """The name of an nginx ``upstream`` or HAProxy ``backend`` (letters, digits, '-', '_', '.')."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", value.strip()):
        raise ValueError(f"expected a name of letters, digits, - _ . (e.g. prefork_app), got {value!r}")
    return value.strip()


def as_runtime_address(value: Any) -> str:
    """HAProxy's Runtime API: ``host:port`` (TCP) or the path of its UNIX stats socket."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a UNIX socket path or host:port, got {value!r}")
    host, sep, port = value.strip().rpartition(":")
    if sep and "/" not in value:
        if not (port.isdigit() and 0 < int(port) < 65536 and host):
            raise ValueError(f"expected host:port with a port from 1 to 65535, got {value!r}")
        return value.strip()
    return as_path(value.strip())


def as_backend_name(value: Any) -> str:
    """An HAProxy backend name (letters, digits, '-', '_', '.', ':')."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", value.strip()):
        raise ValueError(f"expected an HAProxy backend name (letters, digits, - _ . :), got {value!r}")
    return value.strip()


def as_log_level(value: Any) -> str:
    """A logging level name."""
    if not isinstance(value, str) or value.upper() not in (
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    ):
        raise ValueError(f"expected debug, info, warning, error or critical, got {value!r}")
    return value.upper()


def one_of(*words: str) -> Callable[[Any], str]:
    """Converter to one of ``words`` (case-insensitive)."""

    def convert(value: Any) -> str:
        word = value.strip().lower() if isinstance(value, str) else value
        if word not in words:
            raise ValueError(f"expected {' or '.join(repr(w) for w in words)}, got {value!r}")
        return str(word)

    return convert


def as_bind(value: Any) -> Tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6): the host, and the first slot's port."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:8080, got {value!r}")
    host, _, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return as_host(host), int_at_least(0, 65535)(port)


def as_directory(value: Any) -> str:
    """An existing directory, made absolute."""
    path = as_path(value)
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {path}")
    return path


def as_search_path(value: Any) -> Tuple[str, ...]:
    """Directories for sys.path, separated by commas (or given as a list); made absolute when used."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    paths = tuple(str(part).strip() for part in parts if str(part).strip())
    if not paths:
        raise ValueError(f"expected one or more directories separated by commas, got {value!r}")
    return paths


def as_worker_class(value: Any) -> Any:
    """A Worker subclass, or a "module:Class" string naming one."""
    from .worker import Worker

    if isinstance(value, str):
        from ._os.loading import resolve

        value = resolve(value)
    if not (isinstance(value, type) and issubclass(value, Worker)):
        raise ValueError(f"expected a subclass of prefork_waitress.Worker, got {value!r}")
    return value


def as_paths(value: Any) -> Tuple[str, ...]:
    """File paths, made absolute: a list, or one string with paths separated by os.pathsep (``:``)."""
    parts = value.split(os.pathsep) if isinstance(value, str) else value
    if isinstance(parts, (str, bytes)) or not hasattr(parts, "__iter__"):
        raise ValueError(f"expected a file path or a list of them, got {value!r}")
    return tuple(as_path(part) for part in parts if not (isinstance(part, str) and not part.strip()))


def as_server_prefix(value: Any) -> str:
    """The first part of HAProxy server names: letters, digits, '_', '.' and '-' (not at its end)."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]*[A-Za-z0-9_.]", value.strip()):
        raise ValueError(f"expected a name prefix of letters, digits, _ . - (e.g. pw or blue), got {value!r}")
    return value.strip()


def _negative(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and float(str(value).strip()) < 0
    except ValueError:
        return False


def as_refork_after(value: Any) -> Tuple[int, ...]:
    """Request thresholds, one per refork generation: ``1000``, ``"50,1000,10000"`` or ``[50, 1000]``.

    0 alone (or nothing) turns reforking off; a list holds increasing numbers above 0.
    """
    example = "e.g. 1000, or 50,1000,10000 for a refork per generation; 0: never"
    parts = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)):
        parts = [parts]
    numbers = []
    for part in parts:
        try:
            number = int_at_least(0)(part)
        except ValueError:
            if _negative(part):
                raise ValueError(f"a number of requests cannot be negative, got {part!r} ({example})") from None
            raise ValueError(f"expected a number of requests or a list of them ({example}), got {value!r}") from None
        numbers.append(number)
    if numbers == [0]:
        return ()
    if 0 in numbers:
        raise ValueError(f"every threshold of a list must be above 0 (0 alone turns reforking off), got {value!r}")
    for before, after in zip(numbers, numbers[1:]):
        if after <= before:
            raise ValueError(
                f"each generation's threshold must be larger than the one before, got {before} then {after} "
                f"in {value!r} ({example})"
            )
    return tuple(numbers)


def as_config_file(value: Any) -> str:
    """An existing file, made absolute."""
    path = as_path(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name, default, converter, one line of help, and how the command line shows it."""

    name: str
    default: Any
    convert: Callable[[Any], Any]
    help: str
    cli: bool = True
    metavar: Optional[str] = None  # the value's name in --help (default: NAME)
    aliases: Tuple[str, ...] = ()  # more flags than --name-with-dashes
    default_text: Optional[str] = None  # the default as --help shows it (when repr() would mislead)
    repeatable: bool = False  # the flag may be given several times; the values form a list

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_flag(self) -> bool:
        """A yes/no option: ``--name`` (and ``--no-name`` when it defaults to true) takes no value."""
        return self.convert is as_bool


OPTIONS: Tuple[Option, ...] = (
    Option("workers", 3, int_at_least(1, 512), "number of worker slots (processes)"),
    Option("host", "127.0.0.1", as_host, "address every worker listens on"),
    Option("base_port", 8080, int_at_least(0, 65535), "slot i listens on BASE_PORT+i (0: OS-chosen ports)"),
    Option("pidfile", None, optional(as_path), "path of the master's pid file", metavar="PATH", aliases=("--pid",)),
    Option("output", None, optional(as_output), "file the workers' stdout and stderr go to", metavar="PATH"),
    Option("worker_class", None, optional(as_worker_class), "Worker subclass, as module:Class", metavar="MODULE:CLASS"),
    Option("preload", False, as_bool, "import the app in the master before forking"),
    Option("gc_freeze", True, as_bool, "gc.freeze() the heap workers share: the preloaded app's, a refork template's"),
    Option("graceful_timeout", 30.0, positive_seconds, "seconds a stopping worker may take"),
    Option(
        "shutdown_delay",
        0.0,
        non_negative_seconds,
        "on a graceful stop, answer /readyz 503 and serve on this many seconds before draining",
        metavar="SECONDS",
    ),
    Option("boot_timeout", 60.0, positive_seconds, "seconds a new worker may take to become ready"),
    Option("reload", False, as_bool, "reload the app when its source files change"),
    Option(
        "reload_extra_file",
        (),
        as_paths,
        "with reload: one more file whose change reloads (templates, config); repeatable",
        metavar="PATH",
        repeatable=True,
    ),
    Option("request_timeout", None, optional(positive_seconds), "replace a worker whose request runs longer"),
    Option(
        "heartbeat_timeout",
        30.0,
        optional(positive_seconds),
        "replace a worker whose I/O loop or command thread is silent this long (off: none)",
    ),
    Option("max_requests", 0, int_at_least(0), "recycle a worker after this many requests (0: never)"),
    Option("max_requests_jitter", 0, int_at_least(0), "add a random 0..N to max_requests per worker"),
    Option("max_rss", 0, int_at_least(0), "recycle a worker whose RSS passes this many MiB (0: never)"),
    Option(
        "refork_after",
        (),
        as_refork_after,
        "once a worker has served N requests, fork the other slots' workers from it, warm; a list N1,N2,... "
        "reforks again from a worker of the newest generation that served the next N (Linux; 0: never)",
        metavar="N[,N...]",
    ),
    Option(
        "cpu_affinity",
        True,
        as_cpu_affinity,
        "pin workers to CPUs: auto, off, or a CPU list",
        metavar="auto|off|CPUS",
        default_text="auto",
    ),
    Option("control_socket", None, optional(as_path), "UNIX socket for prefork-waitress ctl", metavar="PATH"),
    Option("upstream_file", None, optional(as_path), "write the live ports to this file", metavar="PATH"),
    Option(
        "upstream_format",
        "nginx",
        as_upstream_format,
        "upstream file dialect: nginx or haproxy (server lines), nginx-block or haproxy-block (a whole "
        "least-busy upstream/backend block)",
        metavar="{nginx,nginx-block,haproxy,haproxy-block}",
    ),
    Option(
        "upstream_name",
        "prefork_app",
        as_block_name,
        "name of the upstream/backend the -block formats write",
        metavar="NAME",
    ),
    Option("on_ports_changed", None, optional(str), "shell command run after the upstream file changes", metavar="CMD"),
    Option(
        "handle_signals",
        True,
        as_bool,
        "install the default signals (TERM/INT stop, QUIT stop at once, HUP reload, TTIN/TTOU scale, "
        "USR1 reopen the output, USR2 upgrade); false: none",
        cli=False,
    ),
    Option("haproxy_socket", None, optional(as_runtime_address), "HAProxy Runtime API: stats socket path or host:port"),
    Option("haproxy_backend", None, optional(as_backend_name), "HAProxy backend that gets one server per worker"),
    Option(
        "haproxy_prefix",
        "pw",
        as_server_prefix,
        "name prefix of this master's HAProxy servers (PREFIX-HOST-PORT); masters sharing a backend and a host "
        "each need their own",
        metavar="PREFIX",
    ),
    Option(
        "haproxy_maxconn",
        1,
        int_at_least(0),
        "maxconn of each HAProxy server (Runtime API, haproxy upstream files): requests a worker is handed "
        "at once; more wait in HAProxy's queue for a free worker (0: no limit)",
        metavar="N",
    ),
    Option(
        "metrics_port",
        None,
        optional(int_at_least(1, 65535)),
        "serve Prometheus metrics on GET /metrics here",
        metavar="PORT",
    ),
    Option("metrics_host", None, optional(as_host), "address of the metrics port (default: host)", metavar="HOST"),
    Option(
        "access_log",
        None,
        optional(as_log_path),
        "access log: a path, or - for the output",
        metavar="PATH|-",
    ),
    Option(
        "access_log_format",
        "combined",
        one_of("combined", "json"),
        "access log lines: combined (Apache's, plus duration and slot) or json (one object per line)",
        metavar="{combined,json}",
    ),
)
OPTION_BY_NAME: Dict[str, Option] = {option.name: option for option in OPTIONS}

# Options of the programs (CLI, paste runner), not of the master: same table rules.
PROGRAM_OPTIONS: Tuple[Option, ...] = (
    Option("call", False, as_bool, "MODULE:APP is a factory: call it (in each worker) to get the WSGI app"),
    Option("log_level", "info", as_log_level, "log level: debug, info, warning, error or critical"),
    Option(
        "log_format",
        "text",
        one_of("text", "json"),
        "log records as text lines or as JSON objects, one per line",
        metavar="{text,json}",
    ),
    Option(
        "bind",
        None,
        optional(as_bind),
        "HOST:PORT of the first slot (the others follow); sets host and base_port",
        metavar="HOST:PORT",
    ),
    Option(
        "chdir",
        None,
        optional(as_directory),
        "change to this directory first (relative paths start there)",
        metavar="DIR",
    ),
    Option(
        "pythonpath",
        None,
        optional(as_search_path),
        "directories (comma-separated) put first on sys.path",
        metavar="DIRS",
    ),
    Option(
        "config",
        None,
        optional(as_config_file),
        "a Python file whose module-level names are options (and hooks); see docs/guides/operations.rst",
        metavar="FILE",
    ),
    Option("print_config", False, as_bool, "print each option, its value and where it came from, then exit"),
    Option(
        "check_config",
        False,
        as_bool,
        "check the options and load the app in a child process as a worker would; bind nothing, exit 0 or 1",
    ),
)
PROGRAM_OPTION_BY_NAME: Dict[str, Option] = {option.name: option for option in PROGRAM_OPTIONS}


class Settings:
    """The validated options of one master: one attribute per entry of OPTIONS, plus ``waitress``.

    Read-only. The attributes come from the table itself (not typed again
    here), so adding an Option adds its setting.
    """

    __slots__ = ("_values", "waitress")
    _values: Dict[str, Any]
    waitress: Mapping[str, Any]

    def __init__(self, values: Mapping[str, Any], waitress: Mapping[str, Any]) -> None:
        unknown = set(values) - set(OPTION_BY_NAME)
        if unknown:
            raise TypeError(f"Settings: not options: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "_values", {o.name: values.get(o.name, o.default) for o in OPTIONS})
        object.__setattr__(self, "waitress", dict(waitress))

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"Settings has no option {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only: make new ones with make_settings()")

    def as_dict(self) -> Dict[str, Any]:
        """Every option's value, by name (waitress's options not included)."""
        return dict(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self._values == other._values and self.waitress == other.waitress

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={value!r}" for name, value in self._values.items())
        return f"Settings({given}, waitress={dict(self.waitress)!r})"


def convert_option(name: str, value: Any) -> Any:
    """Convert one option by the table, with an error that names it."""
    option = OPTION_BY_NAME[name]
    try:
        return option.convert(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"option {name}: {exc}") from None


def waitress_defaults() -> Dict[str, Any]:
    """waitress's own options and their defaults, minus those the master sets itself.

    They are the documented arguments of ``waitress.adjustments.Adjustments``,
    which keeps each default as a public class attribute (socket_options, a
    list of tuples, is no argument).
    """
    return {
        name: value
        for name, value in vars(Adjustments).items()
        if not name.startswith("_")
        and isinstance(value, (bool, int, float, str, frozenset, set, type(None)))
        and name not in MANAGED_WAITRESS_OPTIONS
    }


def waitress_options(given: Mapping[str, Any]) -> Dict[str, Any]:
    """Check pass-through options against waitress itself; threads must be 1."""
    options = dict(given)
    for name in MANAGED_WAITRESS_OPTIONS:
        if name in options:
            raise ValueError(
                f"option {name}: set by prefork_waitress itself "
                "(use host and base_port; each worker serves one pre-bound socket)"
            )
    if "threads" in options:
        try:
            threads = int(options["threads"])
        except (TypeError, ValueError):
            threads = -1
        if threads != 1:
            raise ValueError(
                f"option threads: must be 1, got {options['threads']!r} "
                "(each worker serves one request at a time; add workers instead)"
            )
        del options["threads"]
    try:
        adjustments = Adjustments(**options)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if message.startswith("Unknown adjustment"):
            message = f"unknown option {message.split(' ', 2)[2]}: not a prefork_waitress or waitress option"
        else:
            message = f"option {_culprit(options)}: {message}"
        raise ValueError(message) from None
    return {name: getattr(adjustments, name) for name in options}


def _culprit(options: Mapping[str, Any]) -> str:
    """The name of the waitress option that waitress rejected (it does not say which)."""
    for name, value in options.items():
        try:
            Adjustments(**{name: value})
        except (ValueError, TypeError):
            return name
    return ", ".join(options)


def make_settings(**given: Any) -> Settings:
    """Validate and convert every option at once; unknown names go to waitress."""
    values: Dict[str, Any] = {option.name: option.default for option in OPTIONS}
    passthrough: Dict[str, Any] = {}
    for name, value in given.items():
        if name in OPTION_BY_NAME:
            values[name] = convert_option(name, value)
        else:
            passthrough[name] = value
    settings = Settings(values, waitress_options(passthrough))
    if settings.base_port and settings.base_port + settings.workers - 1 > 65535:
        raise ValueError(f"option base_port: {settings.base_port} + {settings.workers} workers runs past port 65535")
    why_not = why_no_refork() if settings.refork_after else None
    if why_not:
        raise ValueError(f"option refork_after: cannot refork here: {why_not}; leave refork_after at 0")
    if bool(settings.haproxy_socket) != bool(settings.haproxy_backend):
        named, missing = ("haproxy_socket", "haproxy_backend")[:: 1 if settings.haproxy_socket else -1]
        raise ValueError(f"option {named}: needs {missing} too (which backend, through which Runtime API socket)")
    if settings.reload_extra_file and not settings.reload:
        raise ValueError("option reload_extra_file: its files are watched only with reload on (add --reload)")
    return settings
