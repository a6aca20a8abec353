"""The PasteDeploy server runner, loaded by the real PasteDeploy from an ini file."""

import signal
import sys
from importlib import metadata

import pytest
from conftest import get

pytest.importorskip("paste.deploy")

INI = """
[app:main]
use = call:apps:paste_app
greeting = hi

[server:main]
use = {use}
workers = {workers}
host = 127.0.0.1
base_port = 0
pidfile = %(here)s/master.pid
control_socket = %(here)s/ctl.sock
graceful_timeout = 5
preload = true
channel_timeout = 30
"""

RUN = (
    "import sys; from paste.deploy import loadapp, loadserver; "
    "uri = 'config:' + sys.argv[1]; loadserver(uri)(loadapp(uri))"
)


def _installed_entry_point():
    try:
        groups = metadata.entry_points()
        points = (
            groups.select(group="paste.server_runner")
            if hasattr(groups, "select")
            else groups.get("paste.server_runner", [])
        )
    except Exception:
        return False
    return any(p.value.startswith("prefork_waitress.paste") for p in points)


def run_ini(server, tmp_path, use, workers="2"):
    ini = tmp_path / "site.ini"
    ini.write_text(INI.format(use=use, workers=workers))
    return server(ini, program=(sys.executable, "-c", RUN))


@pytest.mark.parametrize("use", ["egg:prefork_waitress", "call:prefork_waitress.paste:server_factory"])
def test_ini_file_serves_the_paste_app_with_string_options(server, tmp_path, use):
    if use.startswith("egg:") and not _installed_entry_point():
        pytest.skip("prefork_waitress is not installed, so its egg: entry point cannot resolve")
    s = run_ini(server, tmp_path, use)
    status = s.status(tmp_path / "ctl.sock")
    assert len(status["workers"]) == 2
    assert (tmp_path / "master.pid").read_text().strip() == str(s.proc.pid)
    for worker in status["workers"]:
        assert get(worker["port"])[1] == f"hi {worker['pid']}"
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


@pytest.mark.parametrize("use", ["egg:prefork_waitress", "call:prefork_waitress.paste:server_factory"])
def test_bad_ini_value_is_a_one_line_error(server, tmp_path, use):
    if use.startswith("egg:") and not _installed_entry_point():
        pytest.skip("prefork_waitress is not installed, so its egg: entry point cannot resolve")
    s = run_ini(server, tmp_path, use, workers="many")
    assert s.wait() == 1
    assert s.log().strip() == "prefork-waitress: error: option workers: expected a number, got 'many'"
