"""Release directories behind a ``current`` symlink (--chdir/--pythonpath kept as given, entered again
at each reload), and --check-config: the real command line, real processes, a real HUP."""

import os
import signal
import socket

import pytest
from clitools import ctl, run_cli
from conftest import get, wait_until

pytestmark = pytest.mark.timeout(90)

APP = """
import os
from helper import LIB

VERSION = {version!r}


def app(environ, start_response):
    with open("data.txt") as f:  # relative: read from the working directory
        data = f.read().strip()
    body = f"{{VERSION}} {{data}} {{LIB}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def make_release(tmp_path, name):
    release = tmp_path / name
    (release / "lib").mkdir(parents=True)
    (release / "relapp.py").write_text(APP.format(version=name))
    (release / "data.txt").write_text(f"data-{name}")
    (release / "lib" / "helper.py").write_text(f"LIB = 'lib-{name}'\n")
    return release


def point_current(tmp_path, name):
    """``ln -sfn NAME current``: a new link renamed over the old one (atomic)."""
    link = tmp_path / "current.new"
    os.symlink(name, link)
    os.replace(link, tmp_path / "current")


def answers(ports):
    """What each port serves, without the pid: e.g. ["r1 data-r1 lib-r1", ...]."""
    return [get(port)[1].rsplit(" ", 1)[0] for port in ports]


def serve_current_r1(server, tmp_path, *extra):
    """Release r1 behind ``current``, served by 2 workers started with --chdir current --pythonpath lib."""
    make_release(tmp_path, "r1")
    point_current(tmp_path, "r1")
    return server(
        *extra,
        *("--workers", "2", "--base-port", "0", "--control-socket", tmp_path / "ctl.sock"),
        *("--chdir", tmp_path / "current", "--pythonpath", "lib", "relapp:app"),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_a_hup_after_the_symlink_moved_serves_the_new_release_on_every_port(server, tmp_path, preload):
    make_release(tmp_path, "r2")
    s = serve_current_r1(server, tmp_path, *(["--preload"] if preload else []))
    status = s.status(tmp_path / "ctl.sock")
    ports = status["master"]["ports"]
    assert answers(ports) == ["r1 data-r1 lib-r1"] * 2

    point_current(tmp_path, "r2")
    if not preload:  # a worker respawned before the reload keeps the release the last reload chose
        os.kill(status["workers"][0]["pid"], signal.SIGKILL)
        wait_until(lambda: s.status(tmp_path / "ctl.sock")["workers"][0]["generation"] == 2, message="respawn")
        assert answers(ports) == ["r1 data-r1 lib-r1"] * 2
    s.signal(signal.SIGHUP)
    wait_until(lambda: "rolling reload done" in s.log(), timeout=30, message="the reload to finish")
    assert answers(ports) == ["r2 data-r2 lib-r2"] * 2
    assert "release paths now resolve to " + str(tmp_path / "r2") in s.log()

    point_current(tmp_path, "r1")  # and back (a rollback is a switch like any other)
    s.signal(signal.SIGHUP)
    wait_until(lambda: s.log().count("rolling reload done") == 2, timeout=30, message="the second reload")
    assert answers(ports) == ["r1 data-r1 lib-r1"] * 2


# -- --check-config ---------------------------------------------------------------------


def test_check_config_loads_the_app_in_a_child_and_binds_nothing(tmp_path):
    with socket.socket() as busy:  # the port a real start would need: in use, and it does not matter
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        (tmp_path / "okapp.py").write_text(
            "import os\nLOADED_IN = os.getpid()\ndef make():\n    return lambda environ, start_response: [b'']\n"
        )
        done = run_cli("--check-config", "--base-port", port, "--workers", "2", "--call", "okapp:make", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert f"config ok: okapp:make() loads; 2 workers on 127.0.0.1, ports {port}-{port + 1}" in done.stdout
        assert "serving" not in done.stderr


def test_check_config_fails_with_the_import_error(tmp_path):
    (tmp_path / "badapp.py").write_text("import os\nraise RuntimeError('database settings missing')\n")
    done = run_cli("--check-config", "--preload", "badapp:app", cwd=tmp_path)
    assert done.returncode == 1
    assert "RuntimeError: database settings missing" in done.stderr
    assert 'badapp.py", line 2' in done.stderr  # the app's own frame
    assert "prefork-waitress: error: cannot load 'badapp:app'" in done.stderr
    missing = run_cli("--check-config", "nosuchmodule:app", cwd=tmp_path)
    assert missing.returncode == 1 and "no module named 'nosuchmodule'" in missing.stderr
    not_callable = run_cli("--check-config", "--call", "badapp:nothing", cwd=tmp_path)
    assert not_callable.returncode == 1


def test_check_config_reports_a_bad_option_as_usage(tmp_path):
    done = run_cli("--check-config", "--workers", "zero", "apps:app", cwd=tmp_path)
    assert done.returncode == 2 and "option workers: expected a number" in done.stderr


def test_a_link_that_names_nothing_abandons_the_reload_and_the_old_release_serves_on(server, tmp_path):
    s = serve_current_r1(server, tmp_path)
    before = s.status(tmp_path / "ctl.sock")
    ports = before["master"]["ports"]
    point_current(tmp_path, "r2")  # a deploy that moved the link before unpacking the release
    reply = ctl(tmp_path / "ctl.sock", "reload")
    assert reply.returncode != 0 and f"cannot enter {tmp_path / 'current'}" in reply.stderr, reply
    assert f"reload abandoned: cannot enter {tmp_path / 'current'}" in s.log()
    assert "rolling reload done" not in s.log()
    after = s.status(tmp_path / "ctl.sock")
    assert [w["pid"] for w in after["workers"]] == [w["pid"] for w in before["workers"]], "the old workers serve on"
    assert answers(ports) == ["r1 data-r1 lib-r1"] * 2

    make_release(tmp_path, "r2")  # the release arrives: the next reload takes it
    s.signal(signal.SIGHUP)
    wait_until(lambda: "rolling reload done" in s.log(), timeout=30, message="the reload to finish")
    assert answers(ports) == ["r2 data-r2 lib-r2"] * 2
