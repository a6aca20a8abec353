"""What a worker reports it imported (NewModules) and what the master's Project adopts of it."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import waitress

from prefork_waitress.reloading import NewModules, Project

pytestmark = pytest.mark.timeout(30)


def load_from_file(name: str, path: Path) -> None:
    """Import a file as a top-level module without sys.path, as Trac loads env plugins."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Unique module names; removed from sys.modules afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        sys.modules.pop(name, None)


def unique(names: list[str], prefix: str) -> str:
    names.append(f"{prefix}_{uuid.uuid4().hex[:10]}")
    return names[-1]


def test_reports_everything_once_then_only_what_was_imported_since(tmp_path: Path, names: list[str]) -> None:
    seen = NewModules()
    first = seen.since_last()
    assert first["json"] == json.__file__
    assert "sys" not in first, "no source file: nothing to watch"
    assert seen.since_last() == {}
    plugin = tmp_path / "plugin.py"
    plugin.write_text("VALUE = 1\n")
    name = unique(names, "plugin")
    load_from_file(name, plugin)
    assert seen.since_last() == {name: str(plugin)}
    assert seen.since_last() == {}


def app_project(tmp_path: Path, names: list[str]) -> tuple[Project, str]:
    """A one-module app on sys.path (imported), its Project loaded."""
    app = unique(names, "app")
    (tmp_path / f"{app}.py").write_text("def app(environ, start_response):\n    return []\n")
    sys.path.insert(0, str(tmp_path))
    try:
        project = Project.from_app(f"{app}:app")
        assert project.load() == [app]
    finally:
        sys.path.remove(str(tmp_path))
    return project, app


def test_adopts_reported_modules_from_outside_sys_path_but_not_libraries(tmp_path: Path, names: list[str]) -> None:
    project, _ = app_project(tmp_path, names)
    elsewhere = tmp_path / "env" / "plugins"
    elsewhere.mkdir(parents=True)
    plugin = elsewhere / "hello.py"
    plugin.write_text("VALUE = 1\n")
    name = unique(names, "hello")
    added = project.adopt({name: str(plugin), "json": json.__file__, "waitress": waitress.__file__})
    assert added == [name]
    assert str(plugin) in project.files()
    assert {"json", "waitress"}.isdisjoint(project.modules)
    with project.watch_changes() as watcher:
        assert str(plugin) in watcher.paths


def test_load_reloads_a_reported_module_it_has_but_never_imports_one_it_lacks(tmp_path: Path, names: list[str]) -> None:
    project, app = app_project(tmp_path, names)
    here = tmp_path / "imported_here.py"
    here.write_text("VALUE = 1\n")
    here_name = unique(names, "here")
    load_from_file(here_name, here)
    worker_only = tmp_path / "worker_only.py"
    worker_only.write_text("raise RuntimeError('imported in the master')\n")
    worker_name = unique(names, "worker")
    project.adopt({here_name: str(here), worker_name: str(worker_only)})
    assert project.load() == []
    here.write_text("VALUE = 2\n\n")
    worker_only.write_text("raise RuntimeError('still not for the master')\n\n")
    assert project.load() == [here_name, app], "the app module is built again, last"
    assert sys.modules[here_name].VALUE == 2
    assert worker_name not in sys.modules
