"""Every option of the master, defined once: type, default, conversion, help.

The API, the CLI, the control socket and the PasteDeploy runner all go
through :func:`make_settings`, so a value given as ``"4"`` in an ini file and
as ``4`` in Python is converted and checked the same way, with the same
error message. The table and Settings live here; the converters it names in
``_option_types``, waitress's pass-through options in ``_waitress_options``
(both re-exported where other modules import them from here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ._option_types import (
    as_backend_name,
    as_bind,
    as_block_name,
    as_bool,
    as_config_file,
    as_cpu_affinity,
    as_directory,
    as_host,
    as_log_level,
    as_log_path,
    as_output,
    as_path,
    as_paths,
    as_refork_after,
    as_runtime_address,
    as_search_path,
    as_server_prefix,
    as_upstream_format,
    as_worker_class,
    int_at_least,
    non_negative_seconds,
    one_of,
    optional,
    positive_seconds,
)
from ._os.adoption import why_no_refork
from ._waitress_options import MANAGED_WAITRESS_OPTIONS, waitress_defaults, waitress_options

__all__ = [
    "MANAGED_WAITRESS_OPTIONS",
    "OPTIONS",
    "PROGRAM_OPTIONS",
    "Option",
    "Settings",
    "as_bool",
    "as_log_level",
    "as_paths",
    "make_settings",
    "waitress_defaults",
    "waitress_options",
]


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
    Option(
        "inline_tasks",
        False,
        as_bool,
        "run each request on the worker's I/O thread, not waitress's task thread: less CPU per request "
        "when the cores are the workers' alone, slower under outside CPU load (docs/performance.rst)",
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
