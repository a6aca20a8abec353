"""``prefork-waitress [options] MODULE:APP``: the parser is generated from the option table.

Every master option comes from :data:`prefork_waitress.options.OPTIONS` and
every waitress option from waitress's own list, so there is one definition
of each; values stay strings here and are converted and checked by
:func:`~prefork_waitress.options.make_settings`, with the API's messages.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

from waitress.adjustments import Adjustments, asbool

from .. import __version__
from .._os.loading import FACTORY_SUFFIX, probe
from ..master import Master
from ..options import MANAGED_WAITRESS_OPTIONS, OPTIONS, PROGRAM_OPTIONS, Option, as_bool, convert_option
from .serve import EXIT_USAGE, configure_logging, fail, serve

PROG = "prefork-waitress"
CTL_ACTIONS = "status,reload,upgrade,scale,stop,command,metrics,tracebacks"
USAGE = f"{PROG} [options] MODULE:APP\n       {PROG} ctl --socket PATH {{{CTL_ACTIONS}}} ..."

ALIASES = {"pidfile": ("--pid",)}
METAVARS = {
    "pidfile": "PATH",
    "output": "PATH",
    "control_socket": "PATH",
    "upstream_file": "PATH",
    "upstream_format": "{nginx,haproxy}",
    "on_ports_changed": "CMD",
    "worker_class": "MODULE:CLASS",
    "cpu_affinity": "auto|off|CPUS",
    "bind": "HOST:PORT",
    "chdir": "DIR",
    "pythonpath": "DIRS",
    "metrics_port": "PORT",
    "metrics_host": "HOST",
    "access_log": "PATH|-",
}
DEFAULT_TEXT = {"cpu_affinity": "auto"}
WAITRESS_PREFIX = "waitress:"
WAITRESS_HELP = "see waitress's documentation of its arguments; threads must stay 1"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _help(option: Option) -> str:
    shown = DEFAULT_TEXT.get(option.name, option.default)
    default = "" if shown in (None, False) else f" (default: {shown})"
    return (option.help + default).replace("%", "%%")


def _add_option(group: Any, option: Option) -> None:
    flags = [option.flag, *ALIASES.get(option.name, ())]
    if option.convert is as_bool:
        group.add_argument(*flags, dest=option.name, action="store_const", const="true", help=_help(option))
        if option.default is True:
            group.add_argument("--no-" + option.flag[2:], dest=option.name, action="store_const", const="false")
    else:
        metavar = METAVARS.get(option.name, option.name.upper())
        group.add_argument(*flags, dest=option.name, metavar=metavar, help=_help(option))


def waitress_params() -> List[Tuple[str, Any]]:
    """Waitress's options (name, converter), minus those the master sets itself."""
    params = getattr(Adjustments, "_params", ())
    return [(name, cast) for name, cast in params if name not in MANAGED_WAITRESS_OPTIONS]


def build_parser() -> Parser:
    """The serve parser, one flag per entry of the option tables."""
    parser = Parser(
        prog=PROG,
        usage=USAGE,
        description="Run a WSGI app in single-threaded waitress workers, one port each, under one master.",
        epilog="Signals: TERM/INT stop gracefully, QUIT at once, HUP rolling reload, "
        "TTIN/TTOU one worker more/less, USR1 reopen the output file, "
        "USR2 upgrade (a new master program takes over).",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.add_argument("app", metavar="MODULE:APP", help="the WSGI app, e.g. myproject.wsgi:application")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    ours = parser.add_argument_group("prefork-waitress options")
    for option in OPTIONS + PROGRAM_OPTIONS:
        if option.cli:
            _add_option(ours, option)
    theirs = parser.add_argument_group("waitress options (given to each worker's waitress)", WAITRESS_HELP)
    for name, cast in waitress_params():
        flag, dest = "--" + name.replace("_", "-"), WAITRESS_PREFIX + name
        if cast is asbool:
            theirs.add_argument(flag, dest=dest, action="store_const", const="true")
            theirs.add_argument("--no-" + flag[2:], dest=dest, action="store_const", const="false")
        else:
            theirs.add_argument(flag, dest=dest, metavar="VALUE")
    return parser


def parse(parser: Parser, argv: Sequence[str]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(app spec, master options as strings, runner options converted) from ``argv``."""
    namespace, extra = parser.parse_known_args(list(argv))
    given = vars(namespace)
    app = given.pop("app")
    runner = {option.name: given.pop(option.name, option.default) for option in PROGRAM_OPTIONS}
    options = {name.replace(WAITRESS_PREFIX, "", 1): value for name, value in given.items()}
    for arg in extra:  # --name=value for a waitress option this waitress did not list
        name, equals, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not equals or not name:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        options[name.replace("-", "_")] = value
    try:
        runner = {name: convert_option_of(name, value) for name, value in runner.items()}
    except ValueError as exc:
        parser.error(str(exc))
    if runner["call"] and not app.strip().endswith(FACTORY_SUFFIX):
        app = app.strip() + FACTORY_SUFFIX
    if runner["bind"] is not None:
        if "host" in options or "base_port" in options:
            parser.error("--bind sets the host and the base port: give either --bind or --host/--base-port")
        options["host"], options["base_port"] = runner["bind"]
    return app, options, runner


def enter_directories(runner: Dict[str, Any]) -> None:
    """--chdir first, then the (new) current directory and --pythonpath first on sys.path."""
    if runner["chdir"] is not None:
        os.chdir(runner["chdir"])
    for path in reversed([os.getcwd(), *map(os.path.abspath, runner["pythonpath"] or ())]):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def convert_option_of(name: str, value: Any) -> Any:
    """Convert a runner option with the same messages as the master's options."""
    for option in PROGRAM_OPTIONS:
        if option.name == name:
            try:
                return option.convert(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"option {name}: {exc}") from None
    return convert_option(name, value)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve MODULE:APP until stopped; 0 after a graceful stop, 1 on failure, 2 on bad usage."""
    parser = build_parser()
    app, options, runner = parse(parser, sys.argv[1:] if argv is None else argv)
    enter_directories(runner)
    configure_logging(runner["log_level"])
    try:
        master = Master(app, **options)
    except (ValueError, TypeError, ImportError) as exc:
        parser.error(str(exc))
    if not master.settings.preload:
        problem = probe(app, timeout=master.settings.boot_timeout)
        if problem is not None:
            *details, error = problem.splitlines()
            sys.stderr.write("".join(line + "\n" for line in details))
            return fail(error)
    return serve(master)
