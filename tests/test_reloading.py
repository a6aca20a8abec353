"""Tests of prefork_waitress.reloading: real files, real imports, real inotify."""

from __future__ import annotations

import importlib
import importlib.util
import os
import select
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork_waitress.reloading import FileWatcher, Project, ReloadError, _inotify
from prefork_waitress.reloading._imports import is_project_local, resolve_relative

pytestmark = pytest.mark.timeout(30)

MODES = ["inotify", "polling"] if _inotify.available() else ["polling"]


# --------------------------------------------------------------------- helpers


def wait_for_change(watcher: FileWatcher, timeout: float = 5.0) -> bool:
    """Act as the master loop: select on the fd, run poll() when it is due."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if now >= deadline:
            return False
        due = watcher.next_poll_deadline()
        wait = deadline - now if due is None else max(0.0, min(deadline, due) - now)
        readable, _, _ = select.select([watcher], [], [], wait)
        if readable:
            return True
        due = watcher.next_poll_deadline()
        if due is not None and time.monotonic() >= due and watcher.poll():
            return True


def collect_until(watcher: FileWatcher, expected: set[str], timeout: float = 5.0) -> set[str]:
    """Gather changed_files() batches until ``expected`` is covered or time is up."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while not expected <= seen and time.monotonic() < deadline:
        if wait_for_change(watcher, deadline - time.monotonic()):
            seen |= watcher.changed_files()
    return seen


def bump_mtime(path: Path, seconds: int = 10) -> None:
    """Move a file's mtime well away from its old value (coarse clocks)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def watch_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "watched"
    directory.mkdir()
    return directory


def make_watcher(mode: str, paths: list[Path], **kwargs: float) -> FileWatcher:
    watcher = FileWatcher(paths, use_polling=(mode == "polling"), poll_interval=0.05, **kwargs)
    assert watcher.polling == (mode == "polling")
    return watcher


class Sandbox:
    """A unique top-level package in tmp_path, and a recorder of module executions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pkg = "rl_" + uuid.uuid4().hex[:10]
        self.rec = types.ModuleType(self.pkg + "_rec")
        self.rec.events = []  # type: ignore[attr-defined]
        sys.modules[self.rec.__name__] = self.rec
        (root / self.pkg).mkdir()
        self.write("__init__.py", "")

    @property
    def events(self) -> list[str]:
        return self.rec.events  # type: ignore[no-any-return]

    def path(self, rel: str) -> Path:
        return self.root / self.pkg / rel

    def write(self, rel: str, source: str, *, record: bool = True) -> Path:
        """Write a module; with ``record`` it logs its execution to ``events``."""
        body = textwrap.dedent(source)
        if record:
            body = f"import {self.rec.__name__} as _rec\n_rec.events.append(__name__)\n" + body
        path = self.path(rel)
        path.write_text(body)
        return path

    def mod(self, name: str) -> str:
        return f"{self.pkg}.{name}"

    def module(self, name: str) -> types.ModuleType:
        return sys.modules[self.mod(name)]

    def cleanup(self) -> None:
        for name in list(sys.modules):
            if name == self.pkg or name.startswith(self.pkg + ".") or name == self.rec.__name__:
                del sys.modules[name]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    root = tmp_path / "src"
    root.mkdir()
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    box = Sandbox(root)
    try:
        yield box
    finally:
        box.cleanup()
        sys.path.remove(str(root))
        importlib.invalidate_caches()


def chain(box: Sandbox) -> Project:
    """leaf <- mid <- top, plus an unrelated module; return the loaded project."""
    box.write("leaf.py", "VALUE = 1\n")
    box.write("mid.py", "from . import leaf\nDOUBLE = leaf.VALUE * 2\n")
    box.write("top.py", "from .mid import DOUBLE\nfrom . import other\nRESULT = DOUBLE + 1\n")
    box.write("other.py", "import json\nTOKEN = object()\n")
    project = Project([box.mod("top")])
    assert project.load() == [box.mod("top")]
    return project


# --------------------------------------------------------------------- watcher


def test_watcher_sees_write(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "a.py"
    target.write_text("x = 1\n")
    with make_watcher(mode, [target]) as watcher:
        target.write_text("x = 22\n")
        bump_mtime(target)
        assert collect_until(watcher, {str(target)}) == {str(target)}


def test_watcher_sees_rename_save(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "a.py"
    target.write_text("x = 1\n")
    with make_watcher(mode, [target]) as watcher:
        tmp = watch_dir / ".a.py.swp"
        tmp.write_text("x = 2\n")
        bump_mtime(tmp)
        os.replace(tmp, target)
        assert collect_until(watcher, {str(target)}) == {str(target)}


def test_watcher_sees_creation_of_missing_file(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "later.txt"
    with make_watcher(mode, [target]) as watcher:
        assert watcher.changed_files() == set()
        target.write_text("now\n")
        assert collect_until(watcher, {str(target)}) == {str(target)}


def test_watcher_sees_deletion(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "gone.txt"
    target.write_text("x")
    with make_watcher(mode, [target]) as watcher:
        target.unlink()
        assert collect_until(watcher, {str(target)}) == {str(target)}


def test_watcher_quiet_when_nothing_happens(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "a.py"
    target.write_text("x = 1\n")
    with make_watcher(mode, [target]) as watcher:
        assert watcher.changed_files() == set()
        assert watcher.poll() is False
        assert select.select([watcher], [], [], 0.1)[0] == []
        assert watcher.changed_files() == set()


def test_watcher_ignores_other_files_in_directory(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "a.py"
    target.write_text("x = 1\n")
    with make_watcher(mode, [target]) as watcher:
        (watch_dir / "b.py").write_text("y = 1\n")
        (watch_dir / ".a.py.swp").write_text("z")
        target.write_text("x = 2\n")  # queued after the others: seeing it means they were seen
        bump_mtime(target)
        assert collect_until(watcher, {str(target)}) == {str(target)}


def test_watcher_debounces_one_save_into_one_batch(mode: str, watch_dir: Path) -> None:
    first, second = watch_dir / "a.py", watch_dir / "b.py"
    for path in (first, second):
        path.write_text("x = 1\n")
    with make_watcher(mode, [first, second], debounce=0.2) as watcher:
        first.write_text("x = 2\n")
        bump_mtime(first)
        assert wait_for_change(watcher)
        second.write_text("x = 3\n")  # within the debounce window
        bump_mtime(second)
        assert watcher.changed_files() == {str(first), str(second)}


def test_watcher_add_later(mode: str, watch_dir: Path) -> None:
    first, second = watch_dir / "a.py", watch_dir / "sub" / "b.py"
    second.parent.mkdir()
    first.write_text("x = 1\n")
    second.write_text("x = 1\n")
    with make_watcher(mode, [first]) as watcher:
        watcher.update([second])
        assert watcher.paths == {str(first), str(second)}
        second.write_text("x = 2\n")
        bump_mtime(second)
        assert collect_until(watcher, {str(second)}) == {str(second)}


def test_watcher_requires_existing_directory(mode: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_watcher(mode, [tmp_path / "nope" / "a.py"])


def test_watcher_poll_schedule_and_close(mode: str, watch_dir: Path) -> None:
    target = watch_dir / "a.py"
    watcher = make_watcher(mode, [target])
    deadline = watcher.next_poll_deadline()
    if mode == "polling":
        assert deadline is not None and deadline <= time.monotonic() + 0.05 + 0.01
    else:
        assert deadline is None
    watcher.close()
    watcher.close()
    assert watcher.closed
    with pytest.raises(ValueError):
        watcher.fileno()


def test_watcher_starts_no_thread(mode: str, watch_dir: Path) -> None:
    before = threading.active_count()
    target = watch_dir / "a.py"
    with make_watcher(mode, [target]) as watcher:
        target.write_text("x")
        collect_until(watcher, {str(target)})
        assert threading.active_count() == before


@pytest.mark.skipif("inotify" not in MODES, reason="needs inotify")
def test_inotify_rewatches_a_recreated_directory(tmp_path: Path) -> None:
    directory = tmp_path / "pkg"
    directory.mkdir()
    target = directory / "a.py"
    target.write_text("x")
    with FileWatcher([target], poll_interval=0.05) as watcher:
        target.unlink()
        directory.rmdir()
        assert str(target) in collect_until(watcher, {str(target)})
        deadline = time.monotonic() + 5
        while watcher.next_poll_deadline() is None and time.monotonic() < deadline:
            select.select([watcher], [], [], deadline - time.monotonic())
            watcher.changed_files()  # the IN_IGNORED may come in a later read
        assert watcher.next_poll_deadline() is not None
        directory.mkdir()
        target.write_text("y")
        assert collect_until(watcher, {str(target)}) == {str(target)}
        assert watcher.next_poll_deadline() is None
        target.write_text("z")
        assert collect_until(watcher, {str(target)}) == {str(target)}


# --------------------------------------------------------------------- project


def test_leaf_edit_reloads_importers_in_order(sandbox: Sandbox) -> None:
    project = chain(sandbox)
    assert project.modules == {sandbox.pkg, *(sandbox.mod(n) for n in ("leaf", "mid", "top", "other"))}
    other = sandbox.module("other")
    token = other.TOKEN
    sandbox.events.clear()
    sandbox.write("leaf.py", "VALUE = 5\n")
    expected = [sandbox.mod("leaf"), sandbox.mod("mid"), sandbox.mod("top")]
    assert project.load() == expected
    assert sandbox.events == expected
    assert sandbox.module("top").RESULT == 11
    assert sandbox.module("other") is other and other.TOKEN is token
    assert project.load() == []


def test_same_size_edit_in_same_timestamp_tick(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal stat results (coarse clock) and a still-valid-looking .pyc must not hide an edit."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    project = chain(sandbox)
    leaf = sandbox.path("leaf.py")
    assert os.path.exists(importlib.util.cache_from_source(str(leaf)))
    before = leaf.stat()
    sandbox.write("leaf.py", "VALUE = 4\n")
    os.utime(leaf, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert project.load() == [sandbox.mod("leaf"), sandbox.mod("mid"), sandbox.mod("top")]
    assert sandbox.module("top").RESULT == 9


def test_dependents(sandbox: Sandbox) -> None:
    project = chain(sandbox)
    assert project.dependents(sandbox.mod("leaf")) == {sandbox.mod("mid"), sandbox.mod("top")}
    assert project.dependents(str(sandbox.path("leaf.py"))) == {sandbox.mod("mid"), sandbox.mod("top")}
    assert project.dependents(sandbox.mod("top")) == set()
    assert project.dependents(sandbox.mod("other")) == {sandbox.mod("top")}
    assert str(sandbox.path("leaf.py")) in project.files()


def test_depends_on_data_file(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sandbox.root)
    template = sandbox.root / "templates" / "page.txt"
    template.parent.mkdir()
    template.write_text("hello")
    sandbox.write("view.py", f"PAGE = open({str(template)!r}).read()\n")
    sandbox.write("app.py", "from .view import PAGE\n")
    project = Project([sandbox.mod("app")], depends={"templates/page.txt": [sandbox.mod("view")]})
    assert str(template) in project.files()
    assert project.dependents(template) == {sandbox.mod("view"), sandbox.mod("app")}
    project.load()
    template.write_text("bye")
    assert project.load() == [sandbox.mod("view"), sandbox.mod("app")]
    assert sandbox.module("app").PAGE == "bye"


def test_depends_on_module(sandbox: Sandbox) -> None:
    sandbox.write("config.py", "NAME = 'a'\n")
    sandbox.write("registry.py", "import importlib\nNAME = 'registry'\n")
    project = Project([sandbox.mod("registry")], depends={sandbox.mod("config"): sandbox.mod("registry")})
    assert sandbox.mod("config") in project.modules
    project.load()
    importlib.import_module(sandbox.mod("config"))
    sandbox.write("config.py", "NAME = 'b'\n")
    assert project.load() == [sandbox.mod("config"), sandbox.mod("registry")]


def test_syntax_error_then_fix(sandbox: Sandbox) -> None:
    project = chain(sandbox)
    mid, top = sandbox.module("mid"), sandbox.module("top")
    sandbox.write("leaf.py", "VALUE = (\n")
    with pytest.raises(ReloadError) as info:
        project.load()
    error = info.value
    assert error.module == sandbox.mod("leaf")
    assert isinstance(error.__cause__, SyntaxError)
    assert "SyntaxError" in str(error) and "SyntaxError" in error.traceback
    assert sandbox.module("leaf").VALUE == 1 and mid.DOUBLE == 2 and top.RESULT == 3
    with pytest.raises(ReloadError):
        project.load()  # still pending, still broken
    sandbox.write("leaf.py", "VALUE = 10\n")
    assert project.load() == [sandbox.mod("leaf"), sandbox.mod("mid"), sandbox.mod("top")]
    assert sandbox.module("top") is top and top.RESULT == 21


def test_failure_midway_keeps_rest_pending(sandbox: Sandbox) -> None:
    project = chain(sandbox)
    mid = sandbox.module("mid")
    sandbox.write("leaf.py", "VALUE = 2\n")
    sandbox.write("mid.py", "from . import leaf\nDOUBLE = 'new'\nraise RuntimeError('boom')\n")
    with pytest.raises(ReloadError, match="boom") as info:
        project.load()
    assert info.value.module == sandbox.mod("mid")
    assert info.value.reloaded == [sandbox.mod("leaf")]
    assert isinstance(info.value.__cause__, RuntimeError)
    assert sandbox.module("mid") is mid and mid.DOUBLE == 2  # namespace restored
    assert sandbox.module("top").RESULT == 3
    sandbox.write("mid.py", "from . import leaf\nDOUBLE = leaf.VALUE * 100\n")
    assert project.load() == [sandbox.mod("mid"), sandbox.mod("top")]
    assert sandbox.module("top").RESULT == 201


def test_new_import_is_tracked(sandbox: Sandbox) -> None:
    project = chain(sandbox)
    watcher = project.watch_changes(use_polling=True)
    extra = sandbox.write("extra.py", "BONUS = 7\n")
    sandbox.write("top.py", "from .mid import DOUBLE\nfrom .extra import BONUS\nRESULT = DOUBLE + BONUS\n")
    assert project.load() == [sandbox.mod("top")]
    assert sandbox.mod("extra") in project.modules
    assert str(extra) in project.files() and str(extra) in watcher.paths
    assert sandbox.module("top").RESULT == 9
    sandbox.write("extra.py", "BONUS = 8\n")
    assert project.load() == [sandbox.mod("extra"), sandbox.mod("top")]
    assert sandbox.module("top").RESULT == 10
    watcher.close()


def test_stdlib_and_site_packages_are_not_project_modules(sandbox: Sandbox) -> None:
    sandbox.write(
        "app.py",
        """\
        import os, json.decoder, collections.abc
        from email import message
        from typing import TYPE_CHECKING
        import waitress, pytest
        import prefork_waitress.reloading
        if TYPE_CHECKING:
            from . import typing_only
        from . import helper
        """,
    )
    sandbox.write("helper.py", "import importlib\nmod = importlib.import_module('http.client')\n")
    sandbox.write("typing_only.py", "X = 1\n")
    project = Project([sandbox.mod("app")])
    assert project.modules == {sandbox.pkg, sandbox.mod("app"), sandbox.mod("helper")}
    assert all(f.startswith(str(sandbox.root)) for f in project.files())
    assert not is_project_local(os.__file__, [])
    assert not is_project_local(pytest.__file__, [])
    assert is_project_local(str(sandbox.path("app.py")), [])


def test_given_module_installed_in_site_packages_is_local() -> None:
    import waitress

    root = os.path.dirname(waitress.__file__)
    assert is_project_local(os.path.join(root, "server.py"), [root])
    assert not is_project_local(os.path.join(root, "server.py"), [])


def test_resolve_relative() -> None:
    assert resolve_relative("x", 0, "a.b") == "x"
    assert resolve_relative(None, 1, "a.b") == "a.b"
    assert resolve_relative("c", 2, "a.b") == "a.c"
    assert resolve_relative("c", 3, "a.b") is None


def test_package_init_importing_its_submodules(sandbox: Sandbox) -> None:
    sandbox.write("settings.py", "DEBUG = False\n")
    sandbox.write("views.py", "from . import settings\nfrom . import NAME\nSHOWN = (NAME, settings.DEBUG)\n")
    sandbox.write("__init__.py", "NAME = 'app'\nfrom .views import SHOWN\n")
    project = Project([sandbox.pkg])
    project.load()
    sandbox.write("settings.py", "DEBUG = True\n")
    assert project.load() == [sandbox.mod("settings"), sandbox.mod("views"), sandbox.pkg]
    assert sys.modules[sandbox.pkg].SHOWN == ("app", True)


def test_first_load_failure_then_fix(sandbox: Sandbox) -> None:
    sandbox.write("leaf.py", "VALUE = 1\n")
    sandbox.write("app.py", "from .leaf import VALUE\nRESULT = VALUE + MISSING\n")
    project = Project(sandbox.mod("app"))
    with pytest.raises(ReloadError, match="importing .*NameError"):
        project.load()
    assert sandbox.mod("app") not in sys.modules and sandbox.mod("leaf") in sys.modules
    sandbox.write("leaf.py", "VALUE = 2\n")
    sandbox.write("app.py", "from .leaf import VALUE\nRESULT = VALUE + 1\n")
    assert project.load() == [sandbox.mod("leaf"), sandbox.mod("app")]
    assert sandbox.module("app").RESULT == 3


def test_from_app_adopts_dynamically_imported_modules(sandbox: Sandbox) -> None:
    sandbox.write("plugin.py", "HOOK = 1\n")
    sandbox.write(
        "web.py",
        f"""\
        import importlib
        name = {sandbox.pkg!r} + '.plug' + 'in'
        plugin = importlib.import_module(name)
        def app(environ, start_response):
            return []
        """,
    )
    project = Project.from_app(sandbox.mod("web") + ":app")
    assert sandbox.mod("plugin") not in project.modules
    assert project.load() == [sandbox.mod("web")]
    assert sandbox.mod("plugin") in project.modules
    sandbox.write("plugin.py", "HOOK = 2\n")
    # the app module is run again, last: it holds the plugin no import shows
    assert project.load() == [sandbox.mod("plugin"), sandbox.mod("web")]
    assert sandbox.module("web").plugin.HOOK == 2


def test_watch_changes_then_load(sandbox: Sandbox, mode: str) -> None:
    project = chain(sandbox)
    leaf = sandbox.path("leaf.py")
    with project.watch_changes(use_polling=(mode == "polling"), poll_interval=0.05) as watcher:
        assert watcher.paths == project.files()
        sandbox.write("leaf.py", "VALUE = 3\n")
        bump_mtime(leaf)
        assert str(leaf) in collect_until(watcher, {str(leaf)})
        assert project.load()[0] == sandbox.mod("leaf")


def test_bad_module_name() -> None:
    with pytest.raises(ValueError):
        Project(["not a module"])
