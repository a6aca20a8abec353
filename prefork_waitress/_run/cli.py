"""``prefork-waitress [options] MODULE:APP``: the parser is generated from the option table.

Every master option comes from :data:`prefork_waitress.options.OPTIONS` and
every waitress option from waitress's own list of arguments, so there is one
definition of each; values stay as given here and are converted and checked by
the option table, with the API's messages. Options also come from a config
file and the environment (``_run/config``); the command line wins.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any, Dict, List, NamedTuple, NoReturn, Optional, Sequence, Set, Tuple

from .. import __version__
from .._os import release
from .._os.loading import FACTORY_SUFFIX, probe
from ..master import Master, handle_of
from ..options import OPTIONS, PROGRAM_OPTION_BY_NAME, PROGRAM_OPTIONS, Option, waitress_defaults
from . import config as _config
from .config import ConfigError, Given
from .serve import EXIT_OK, EXIT_USAGE, check_config, configure_logging, fail, serve

PROG = "prefork-waitress"
CTL_ACTIONS = "status,reload,upgrade,scale,stop,command,metrics,top,tracebacks"
USAGE = f"{PROG} [options] MODULE:APP\n       {PROG} ctl --socket PATH {{{CTL_ACTIONS}}} ..."
WAITRESS_PREFIX = "waitress:"
WAITRESS_HELP = "see waitress's documentation of its arguments; threads must stay 1"
CLI = "cli"


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit with status 2; it knows its flags."""

    flags: Set[str]

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class Resolved(NamedTuple):
    """The options in force, each with its source; hooks from the config file."""

    app: Optional[Given]
    merged: Dict[str, Given]
    hooks: Dict[str, Any]
    warnings: List[str]


def _help(option: Option) -> str:
    shown = option.default_text or option.default
    default = "" if shown in (None, False, ()) else f" (default: {shown})"
    return (option.help + default).replace("%", "%%")


def _add(parser: Parser, group: Any, *flags: str, **kwargs: Any) -> None:
    group.add_argument(*flags, **kwargs)
    parser.flags.update(flags)


def _add_option(parser: Parser, group: Any, option: Option) -> None:
    flags = [option.flag, *option.aliases]
    if option.is_flag:
        _add(parser, group, *flags, dest=option.name, action="store_const", const="true", help=_help(option))
        if option.default is True:
            _add(parser, group, "--no-" + option.flag[2:], dest=option.name, action="store_const", const="false")
    else:
        metavar = option.metavar or option.name.upper()
        action = "append" if option.repeatable else "store"
        _add(parser, group, *flags, dest=option.name, metavar=metavar, action=action, help=_help(option))


def build_parser() -> Parser:
    """The serve parser, one flag per entry of the option tables."""
    parser = Parser(
        prog=PROG,
        usage=USAGE,
        description="Run a WSGI app in single-threaded waitress workers, one port each, under one master.",
        epilog="Signals: TERM/INT stop gracefully, QUIT at once, HUP rolling reload, "
        "TTIN/TTOU one worker more/less, USR1 reopen the output file, USR2 upgrade (a new master program takes over). "
        "Options also come from PREFORK_WAITRESS_<OPTION> variables, PREFORK_WAITRESS_ARGS and --config FILE "
        "(the command line wins, then the environment, then the file).",
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    parser.flags = {"-h", "--help", "--version"}
    parser.add_argument("app", metavar="MODULE:APP", nargs="?", help="the WSGI app, e.g. myproject.wsgi:application")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    ours = parser.add_argument_group("prefork-waitress options")
    for option in OPTIONS + PROGRAM_OPTIONS:
        if option.cli:
            _add_option(parser, ours, option)
    theirs = parser.add_argument_group("waitress options (given to each worker's waitress)", WAITRESS_HELP)
    for name, default in waitress_defaults().items():
        flag, dest = "--" + name.replace("_", "-"), WAITRESS_PREFIX + name
        if isinstance(default, bool):
            _add(parser, theirs, flag, dest=dest, action="store_const", const="true")
            _add(parser, theirs, "--no-" + flag[2:], dest=dest, action="store_const", const="false")
        else:
            _add(parser, theirs, flag, dest=dest, metavar="VALUE")
    return parser


def unknown_flag(parser: Parser, argv: Sequence[str]) -> Optional[str]:
    """The first ``--name`` in ``argv`` that is no option, as an error message (argparse alone would
    take the value after it for MODULE:APP and blame that)."""
    for arg in argv:
        if arg == "--":
            return None
        flag = arg.partition("=")[0]
        if flag.startswith("--") and flag not in parser.flags:
            return (
                f"unknown option {flag}: not a prefork-waitress or waitress option"
                f"{_config.close_match(flag, sorted(parser.flags))}"
            )
    return None


def parse_argv(parser: Parser, argv: Sequence[str], source: str = CLI) -> Tuple[Optional[Given], Dict[str, Given]]:
    """(the app, the options as given) from an argument list; every value keeps ``source``."""
    problem = unknown_flag(parser, argv)
    if problem:
        raise ConfigError(problem if source == CLI else f"{problem} (in {source})")
    if source != CLI:  # argparse exits on its own errors: say where the arguments came from
        parser = _parser_for(source)
    given = vars(parser.parse_args(list(argv)))
    app = given.pop("app", None)
    options = {name.replace(WAITRESS_PREFIX, "", 1): Given(value, source) for name, value in given.items()}
    return (Given(app, source) if app is not None else None), options


def _parser_for(source: str) -> Parser:
    parser = build_parser()
    parser.prog = f"{PROG} ({source})"
    return parser


def gather(parser: Parser, argv: Sequence[str], environ: Dict[str, str]) -> Resolved:
    """The command line, the environment and the config file, merged by precedence."""
    app, cli = parse_argv(parser, argv)
    env_vars, warnings = _config.read_environment(environ)
    env_args: Dict[str, Given] = {}
    if _config.ENV_ARGS in environ:
        try:
            words = shlex.split(environ[_config.ENV_ARGS])
        except ValueError as exc:
            raise ConfigError(f"{_config.ENV_ARGS}: {exc}") from None
        args_app, env_args = parse_argv(parser, words, f"env {_config.ENV_ARGS}")
        app = app or args_app
    layers: List[Dict[str, Given]] = [cli, env_vars, env_args]
    hooks: Dict[str, Any] = {}
    config = _config.config_path(layers)
    if config is not None:
        path = _config.convert("config", config)
        found = _config.read_config_file(path)
        layers.append(found.options)
        hooks = found.hooks
    return Resolved(app, _config.merge(layers, environ), hooks, warnings)


def runner_options(resolved: Resolved) -> Dict[str, Any]:
    """The programs' options (call, log_level, bind, chdir, pythonpath, config), converted."""
    return {o.name: _config.convert(o.name, resolved.merged[o.name]) for o in PROGRAM_OPTIONS}


def master_options(resolved: Resolved, runner: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the Master's keyword arguments as given, the same converted) of every option not left at its default."""
    merged = resolved.merged
    given = {
        name: g.value
        for name, g in merged.items()
        if g.source != _config.DEFAULT and name not in PROGRAM_OPTION_BY_NAME
    }
    converted = {name: _config.convert(name, merged[name]) for name in given}
    if runner["bind"] is not None:
        bind = merged["bind"]
        for name, value in zip(("host", "base_port"), runner["bind"]):
            if name in given and _config.rank(merged[name]) == _config.rank(bind):
                raise ConfigError(
                    f"--bind sets the host and the base port: give either --bind or --host/--base-port "
                    f"(both from {bind.source})"
                )
            if name not in given or _config.rank(merged[name]) > _config.rank(bind):
                given[name] = converted[name] = value
                merged[name] = Given(value, f"{bind.source}, as bind")
    return given, converted


def enter_directories(runner: Dict[str, Any], resolved: Resolved) -> release.ReleasePaths:
    """--chdir first, then the (new) current directory and --pythonpath first on sys.path.

    The paths are kept as given (a ``current`` symlink stays a symlink) and entered
    again at each reload: see ``_os.release``.
    """
    try:
        preload = bool(_config.convert("preload", resolved.merged["preload"]))
    except ConfigError:
        preload = False  # master_options reports it
    return release.enter(runner["chdir"], runner["pythonpath"] or (), resolve_links=not preload)


def master_class(hooks: Dict[str, Any]) -> Any:
    """Master, or a subclass whose hooks are the config file's functions (``def when_ready(master): ...``)."""
    if not hooks:
        return Master
    return type("ConfiguredMaster", (Master,), {"__module__": __name__, **hooks})


def parse(parser: Parser, argv: Sequence[str]) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(app spec, master options as given, runner options converted) from ``argv`` alone (no environment)."""
    try:
        resolved = gather(parser, argv, {})
        runner = runner_options(resolved)
        options, _ = master_options(resolved, runner)
    except ConfigError as exc:
        parser.error(str(exc))
    if resolved.app is None:
        parser.error("the app to serve, MODULE:APP, is missing")
    return _app_spec(resolved.app.value, runner), options, runner


def _app_spec(app: str, runner: Dict[str, Any]) -> str:
    if runner["call"] and not app.strip().endswith(FACTORY_SUFFIX):
        return app.strip() + FACTORY_SUFFIX
    return app


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve MODULE:APP until stopped; 0 after a graceful stop, 1 on failure, 2 on bad usage."""
    parser = build_parser()
    try:
        resolved = gather(parser, sys.argv[1:] if argv is None else argv, dict(os.environ))
        for warning in resolved.warnings:
            sys.stderr.write(f"{PROG}: warning: {warning}\n")
        runner = runner_options(resolved)
        paths = enter_directories(runner, resolved)
        options, converted = master_options(resolved, runner)
    except ConfigError as exc:
        parser.error(str(exc))
    if runner["print_config"]:
        merged = {name: g for name, g in resolved.merged.items() if name not in ("print_config",)}
        sys.stdout.write(_config.describe(resolved.app, merged, {**runner, **converted}))
        return EXIT_OK
    if resolved.app is None:
        parser.error("the app to serve, MODULE:APP, is missing")
    app = _app_spec(resolved.app.value, runner)
    configure_logging(runner["log_level"], log_format=runner["log_format"])
    try:
        master = master_class(resolved.hooks)(app, **options)
    except (ValueError, TypeError, ImportError) as exc:
        parser.error(str(exc))
    if runner["check_config"]:
        return check_config(app, master)
    handle_of(master).add_listener(paths)  # each reload enters the release the paths name then
    if not master.settings.preload:
        problem = probe(app, timeout=master.settings.boot_timeout)
        if problem is not None:
            *details, error = problem.splitlines()
            sys.stderr.write("".join(line + "\n" for line in details))
            return fail(error)
    return serve(master)
