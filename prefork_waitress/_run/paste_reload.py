"""``reload = true`` in a PasteDeploy ini: watch the app's modules and the ini, reload on change.

PasteDeploy has loaded the app in this process (the master) before the
runner is called, so the workers get a loaded callable. On a change the
master reloads the changed modules (and those depending on them) in place,
loads the app from the ini again, and then rolls the workers onto it: the
workers serve through :class:`IniApp`, which forwards to the app loaded last.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Iterable, Mapping, Sequence

from .._core.handle import MasterHandle
from ..integrations.autoreload import CodeReloader
from ..reloading import Project

log = logging.getLogger("prefork_waitress")

DEFAULT_APP_NAME = "main"


class IniApp:
    """The WSGI app the workers serve: the app loaded from the ini last."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    def __call__(self, environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.app(environ, start_response)  # type: ignore[no-any-return]


def factory_module(ini_path: str, name: str, global_conf: Mapping[str, Any]) -> str:
    """The module of the app factory the ini's ``[app:NAME]`` names (the root of the app's code)."""
    loadwsgi = importlib.import_module("paste.deploy.loadwsgi")  # PasteDeploy is there: it called us
    context = loadwsgi.loadcontext(loadwsgi.APP, "config:" + ini_path, name=name, global_conf=dict(global_conf))
    return str(getattr(context.object, "__module__", "") or "")


class _ReloadsThroughIni:
    """The master as the CodeReloader sees it: ``reload()`` loads the new app from the ini first."""

    def __init__(self, master: MasterHandle, reloader: "IniReloader") -> None:
        self._master = master
        self._reloader = reloader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._master, name)

    def reload(self) -> None:
        self._reloader.reload()


class IniReloader(CodeReloader):
    """A CodeReloader whose app is loaded by PasteDeploy from the ini instead of a ``module:attr``."""

    def __init__(
        self,
        master: MasterHandle,
        app: IniApp,
        ini_path: str,
        global_conf: Mapping[str, Any],
        extra_files: Sequence[str] = (),
    ) -> None:
        self.ini_path = ini_path
        self.global_conf = {k: v for k, v in global_conf.items() if k not in ("__file__", "here")}
        module = factory_module(ini_path, DEFAULT_APP_NAME, self.global_conf)
        if not module:
            raise ValueError(f"option reload: cannot tell which module [app:{DEFAULT_APP_NAME}] of {ini_path} is from")
        super().__init__(_ReloadsThroughIni(master, self), f"{module}:app", True, extra_files)
        self.real_master = master
        # the ini is a file of the project too: a change re-runs the factory (its module reloaded first)
        self.project = Project.from_app(f"{module}:app", depends={ini_path: [module]})
        self.project.load()  # adopt what PasteDeploy imported already, so it is watched
        self.ini_app = app

    def load_app(self) -> Any:
        """Reload the modules that changed, then load the app from the ini again."""
        loadapp = importlib.import_module("paste.deploy").loadapp
        reloaded = self.project.load()
        if reloaded:
            log.info("reloaded modules: %s", ", ".join(reloaded))
        return loadapp("config:" + self.ini_path, name=DEFAULT_APP_NAME, global_conf=self.global_conf)

    def reload(self) -> None:
        """Files changed: new code and a new app first, then the rolling reload (old code stays on failure)."""
        try:
            self.ini_app.app = self.load_app()
        except Exception:
            log.exception(
                "reload skipped: the app cannot be loaded from %s; the workers keep the old code", self.ini_path
            )
            return
        self.real_master.reload()
