"""PasteDeploy server runner: ``[server:main]`` / ``use = egg:prefork_waitress``.

(``use = call:prefork_waitress.paste:server_factory`` works without the entry
point: PasteDeploy's ``call:`` speaks the server-factory protocol.)

Options arrive as strings from the ini file and go through the same option
table as the API and the CLI. The app is already loaded by PasteDeploy in
this process, so the workers get the loaded callable (effectively preload):
a rolling reload (SIGHUP) restarts the workers but does not re-read the code.
``reload = true`` watches the app's modules and the ini file: a change
reloads them in the master, loads the app again and rolls the workers onto
it (see ``_run/paste_reload``). Under ``pserve``, which catches SystemExit
and exits 0, a failure leaves through ``os._exit`` with its code.
"""

from __future__ import annotations

import configparser
import logging
import os
import sys
from typing import Any, Callable, Mapping, NoReturn

from ._os.output import flush_stdio
from ._run.paste_reload import IniApp, IniReloader
from ._run.serve import configure_logging, log_formatter, serve
from .master import Master, handle_of
from .options import PROGRAM_OPTIONS, as_bool, as_log_level, as_paths, make_settings

__all__ = ["serve_paste", "server_factory"]


PROGRAM = "prefork-waitress"
UNDER_HUPPER = (
    "pserve --reload (hupper) restarts the whole cluster on every change, refusing connections meanwhile; "
    "run pserve without --reload and set reload = true in [server:main] (a rolling reload on every change)"
)


def _under_pserve() -> bool:
    """pserve catches SystemExit around ``server(app)`` and exits 0: a failure must leave otherwise."""
    return "pyramid.scripts.pserve" in sys.modules


def _under_hupper() -> bool:
    hupper = sys.modules.get("hupper")
    return bool(hupper is not None and getattr(hupper, "is_active", lambda: False)())


def _configures_logging(ini_path: Any) -> bool:
    """True if the ini file has a ``[loggers]`` section (then its levels are the user's)."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(str(ini_path), encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return True
    return bool(ini_path) and parser.has_section("loggers")


def _fail(message: str, code: int = 1) -> NoReturn:
    """Leave with ``code``: SystemExit, or (under pserve, which swallows it) os._exit after a flush."""
    if not _under_pserve():
        raise SystemExit(f"{PROGRAM}: error: {message}" if message else code)
    if message:
        sys.stderr.write(f"{PROGRAM}: error: {message}\n")
    flush_stdio()
    os._exit(code)


RUNNER_OPTIONS = ("log_level", "log_format")  # the runner's, not the master's


def _log_format(kw: Mapping[str, Any]) -> str:
    """The converted ``log_format`` option (text when not given)."""
    option = next(option for option in PROGRAM_OPTIONS if option.name == "log_format")
    try:
        return str(option.convert(kw.get("log_format", option.default)))
    except ValueError as exc:
        raise ValueError(f"option log_format: {exc}") from None


def _check(kw: Mapping[str, Any]) -> str:
    """Check the options (the master's and the runner's) as the master will; the converted log level."""
    options = {k: v for k, v in kw.items() if k not in RUNNER_OPTIONS}
    try:
        level: str = as_log_level(kw["log_level"]) if "log_level" in kw else "INFO"
        _log_format(kw)
        make_settings(**options)
    except (ValueError, TypeError, ImportError) as exc:
        _fail(str(exc))
    if _under_hupper():
        _fail(UNDER_HUPPER)
    return level


def serve_paste(wsgi_app: Any, global_conf: Mapping[str, Any], **kw: Any) -> None:
    """Serve ``wsgi_app`` until the master stops; a non-zero exit with a one-line message on failure."""
    level = _check(kw)
    log_format = _log_format(kw)
    log_level = kw.pop("log_level", None)
    asked_format = kw.pop("log_format", None) is not None
    root = logging.getLogger()
    if not root.handlers:  # pserve configures logging when the ini has a [loggers] section
        configure_logging(level, log_format=log_format)
    else:
        if log_level is not None or not _configures_logging(global_conf.get("__file__")):
            # pserve calls logging.basicConfig() (WARNING) when the ini has no [loggers]: show our INFO anyway
            logging.getLogger("prefork_waitress").setLevel(level)
        if asked_format:  # given in [server:main]: the handlers pserve set up write that format
            for handler in root.handlers:
                handler.setFormatter(log_formatter(log_format))
    reload = as_bool(kw.pop("reload", False))
    extra_files = as_paths(kw.pop("reload_extra_file", ()))  # watched by the ini's reloader, not the master's
    ini_path = global_conf.get("__file__")
    reloader = None
    try:
        if reload and not ini_path:
            raise ValueError("option reload: needs the app loaded from an ini file (PasteDeploy's __file__)")
        if extra_files and not reload:
            raise ValueError("option reload_extra_file: its files are watched only with reload = true")
        app = IniApp(wsgi_app) if reload else wsgi_app
        master = Master(app, **kw)
        if reload:
            reloader = IniReloader(handle_of(master), app, str(ini_path), global_conf, extra_files)
    except (ValueError, TypeError, ImportError) as exc:
        _fail(str(exc))
    if reloader is not None:
        reloader.start_watching()
    try:
        code = serve(master)  # it has printed the failure already
    finally:
        if reloader is not None:
            reloader.stop_watching()
    if code:
        _fail("", code)


def server_factory(global_conf: Mapping[str, Any], **kw: Any) -> Callable[[Any], None]:
    """PasteDeploy server factory: check the options now, serve the app when called with it."""
    _check(kw)
    return lambda wsgi_app: serve_paste(wsgi_app, global_conf, **kw)
