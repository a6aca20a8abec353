"""PasteDeploy server runner: ``[server:main]`` / ``use = egg:prefork_waitress``.

(``use = call:prefork_waitress.paste:server_factory`` works without the entry
point: PasteDeploy's ``call:`` speaks the server-factory protocol.)

Options arrive as strings from the ini file and go through the same option
table as the API and the CLI. The app is already loaded by PasteDeploy in
this process, so the workers get the loaded callable (effectively preload):
a rolling reload (SIGHUP) restarts the workers but does not re-read the code.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from ._run.serve import configure_logging, serve
from .master import Master
from .options import as_log_level, make_settings

__all__ = ["serve_paste", "server_factory"]


def serve_paste(wsgi_app: Any, global_conf: Mapping[str, Any], **kw: Any) -> None:
    """Serve ``wsgi_app`` until the master stops; SystemExit with a one-line message on failure."""
    log_level = kw.pop("log_level", None)
    try:
        level = as_log_level(log_level) if log_level is not None else "INFO"
        master = Master(wsgi_app, **kw)
    except (ValueError, TypeError, ImportError) as exc:
        raise SystemExit(f"prefork-waitress: error: {exc}") from None
    if not logging.getLogger().handlers:  # pserve configures logging when the ini has a [loggers] section
        configure_logging(level)
    elif log_level is not None:
        logging.getLogger("prefork_waitress").setLevel(level)
    code = serve(master)
    if code:
        raise SystemExit(code)


def server_factory(global_conf: Mapping[str, Any], **kw: Any) -> Callable[[Any], None]:
    """PasteDeploy server factory: check the options now, serve the app when called with it."""
    checked = {k: v for k, v in kw.items() if k != "log_level"}
    try:
        make_settings(**checked)
    except (ValueError, TypeError, ImportError) as exc:
        raise SystemExit(f"prefork-waitress: error: {exc}") from None
    return lambda wsgi_app: serve_paste(wsgi_app, global_conf, **kw)
