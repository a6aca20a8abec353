"""The PasteDeploy server runner, loaded by the real PasteDeploy from an ini file."""

import re
import signal
import socket
import sys
from importlib import metadata

import pytest
from conftest import get, missing, wait_until

try:
    import paste.deploy  # noqa: F401
except ImportError:
    missing("PasteDeploy is not installed (the testing extra has it)")

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
        missing("prefork_waitress is not installed, so its egg: entry point cannot resolve")
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
        missing("prefork_waitress is not installed, so its egg: entry point cannot resolve")
    s = run_ini(server, tmp_path, use, workers="many")
    assert s.wait() == 1
    assert s.log().strip() == "prefork-waitress: error: option workers: expected a number, got 'many'"


PSERVE = (sys.executable, "-c", "import sys; from pyramid.scripts.pserve import main; sys.exit(main())")


def run_pserve(server, tmp_path, *pserve_args, env=None, **server_options):
    try:
        import pyramid  # noqa: F401
    except ImportError:
        missing("pyramid is not installed (the testing extra has it)")
    ini = tmp_path / "site.ini"
    text = INI.format(use="call:prefork_waitress.paste:server_factory", workers="2")
    for name, value in server_options.items():
        text = re.sub(rf"^{name} = .*$", "", text, flags=re.M) + f"{name} = {value}\n"
    ini.write_text(text)
    return server(*pserve_args, ini, program=PSERVE, env=env)


def test_pserve_serves_and_exits_zero_after_sigterm(server, tmp_path):
    s = run_pserve(server, tmp_path)
    for worker in s.status(tmp_path / "ctl.sock")["workers"]:
        assert get(worker["port"])[0] == 200
    assert "all 2 workers serving" in s.log()  # no [loggers] in the ini: pserve's WARNING default does not hide it
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_pserve_failed_start_exits_nonzero(server, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s = run_pserve(server, tmp_path, base_port=busy.getsockname()[1])
        assert s.wait() == 1
    assert "address already in use" in s.log()


RELOADABLE_APP = """
def make(global_conf, greeting="hi"):
    def app(environ, start_response):
        body = ("{version} " + greeting).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return app
"""


def test_pserve_with_reload_true_follows_edits_of_the_app_and_of_the_ini(server, tmp_path):
    (tmp_path / "iniapp.py").write_text(RELOADABLE_APP.format(version="v1"))
    ini = tmp_path / "site.ini"
    text = INI.format(use="call:prefork_waitress.paste:server_factory", workers="2")
    ini.write_text(
        text.replace("use = call:apps:paste_app", "use = call:iniapp:make") + "reload = true\nlog_level = info\n"
    )
    s = server(ini, program=PSERVE)
    ports = [w["port"] for w in s.status(tmp_path / "ctl.sock")["workers"]]
    assert [get(port)[1] for port in ports] == ["v1 hi", "v1 hi"]

    def every_port_says(body):
        return lambda: all(get(port)[1] == body for port in ports)

    (tmp_path / "iniapp.py").write_text(RELOADABLE_APP.format(version="v2"))
    wait_until(every_port_says("v2 hi"), 20, message="every port on the edited code")
    assert "reloaded modules: iniapp" in s.log()
    ini.write_text(ini.read_text().replace("greeting = hi", "greeting = hello"))
    wait_until(every_port_says("v2 hello"), 20, message="every port on the edited ini")
    assert "Traceback" not in s.log()
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_pserve_reload_is_detected_and_explained(server, tmp_path):
    s = run_pserve(server, tmp_path, "--reload")
    wait_until(lambda: "pserve --reload (hupper) restarts the whole cluster" in s.log(), 20, message="the advice")
    assert not (tmp_path / "ctl.sock").exists()  # no cluster was started


def _json_records(text, allow=()):
    """Every line as a JSON object, but those starting with one of ``allow`` (a program's own prints)."""
    import json

    return [json.loads(line) for line in text.splitlines() if line and not line.startswith(tuple(allow))]


@pytest.mark.parametrize("under_pserve", [False, True])
def test_log_format_and_access_log_format_json_from_the_ini(server, tmp_path, under_pserve):
    options = {"log_format": "json", "access_log": "%(here)s/access.log", "access_log_format": "json"}
    if under_pserve:  # pserve set up its own handler (no [loggers]): log_format = json formats it too
        # pyramid's own import warning (pkg_resources, with setuptools < 81) is no log record
        s = run_pserve(server, tmp_path, env={"PYTHONWARNINGS": "ignore::UserWarning"}, **options)
    else:
        ini = tmp_path / "site.ini"
        ini.write_text(
            INI.format(use="call:prefork_waitress.paste:server_factory", workers="2")
            + "".join(f"{name} = {value}\n" for name, value in options.items())
        )
        s = server(ini, program=(sys.executable, "-c", RUN))
    worker = s.status(tmp_path / "ctl.sock")["workers"][1]
    assert get(worker["port"], "/x?y=1", headers={"X-Request-ID": "req-7"})[0] == 200
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    records = _json_records(s.log(), allow=("Starting server in PID",))
    ready = [r for r in records if r.get("event") == "worker_ready"]
    assert sorted(r["slot"] for r in ready) == [0, 1] and all(r["logger"] == "prefork_waitress" for r in ready)
    assert [r for r in records if r.get("event") == "stop"]
    (line,) = _json_records((tmp_path / "access.log").read_text())
    assert (line["path"], line["query"], line["request_id"], line["slot"]) == ("/x", "y=1", "req-7", 1)
    assert line["pid"] == worker["pid"] and line["status"] == 200


def test_a_bad_log_format_in_the_ini_is_a_one_line_error(server, tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text(INI.format(use="call:prefork_waitress.paste:server_factory", workers="2") + "log_format = yaml\n")
    s = server(ini, program=(sys.executable, "-c", RUN))
    assert s.wait() == 1
    assert s.log().strip() == "prefork-waitress: error: option log_format: expected 'text' or 'json', got 'yaml'"
