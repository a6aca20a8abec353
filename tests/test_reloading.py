"""Tests of prefork_waitress.reloading: real files, real imports, real inotify."""

from __future__ import annotations

import os
import select
import threading
import time
from pathlib import Path

import pytest

from prefork_waitress.reloading import FileWatcher, _inotify

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
