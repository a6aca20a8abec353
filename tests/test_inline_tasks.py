"""The inline_tasks option: every interface reaches the worker, and the heartbeat lets a long inline request live.

With inline tasks the app runs on the worker's I/O thread (its main thread), which cannot beat while it
does: a request in flight counts as the I/O loop's beat from its start (issue 23, point 1).
"""

import signal
import sys
import threading

import pytest
from conftest import free_port, get, suite_runs_inline, wait_until
from test_wedge import frozen

MASTER = """
RecordingMaster("apps:app", workers={workers}, base_port=0, graceful_timeout=3{extra}).start()
"""

BOTH = pytest.mark.parametrize("inline", [False, True], ids=["task-thread", "inline"])


def _thread_of(port):
    status, body, _ = get(port, "/thread")
    assert status == 200
    return body


@BOTH
def test_the_api_option_picks_the_thread_the_app_runs_on(cluster, inline):
    c = cluster(MASTER.format(workers=1, extra=f", inline_tasks={inline}"))
    port = c.ready()["ports"][0]
    name = _thread_of(port)
    assert (name == "MainThread") is inline, name


@pytest.mark.parametrize(
    "how",
    ["flag", "env", "config"],
)
def test_the_command_line_flag_environment_and_config_file_turn_it_on(server, tmp_path, how):
    port = free_port()
    sock = tmp_path / "ctl.sock"
    args = ["--workers", "1", "--base-port", str(port), "--control-socket", str(sock)]
    env = {"PREFORK_WAITRESS_INLINE_TASKS": "0"}  # off unless this test's way turns it on
    if how == "flag":
        args.append("--inline-tasks")
    elif how == "env":
        env["PREFORK_WAITRESS_INLINE_TASKS"] = "true"
    else:
        (tmp_path / "site.py").write_text("inline_tasks = True\n")
        env["PREFORK_WAITRESS_INLINE_TASKS"] = None  # the environment outranks the file
        args += ["--config", str(tmp_path / "site.py")]
    s = server(*args, "apps:app", env=env)
    s.status(sock)
    assert _thread_of(port) == "MainThread"


def test_the_paste_runner_takes_it_from_the_ini(server, tmp_path):
    pytest.importorskip("paste.deploy")
    ini = tmp_path / "site.ini"
    ini.write_text(
        "[app:main]\nuse = call:apps:paste_thread_app\n\n"
        "[server:main]\nuse = call:prefork_waitress.paste:server_factory\n"
        f"workers = 1\nbase_port = 0\ncontrol_socket = {tmp_path / 'ctl.sock'}\ninline_tasks = true\n"
    )
    run = (
        "import sys; from paste.deploy import loadapp, loadserver; u = 'config:' + sys.argv[1]; "
        "loadserver(u)(loadapp(u))"
    )
    s = server(ini, program=(sys.executable, "-c", run), env={"PREFORK_WAITRESS_INLINE_TASKS": "0"})
    status = s.status(tmp_path / "ctl.sock")
    assert _thread_of(status["workers"][0]["port"]) == "MainThread"


@BOTH
def test_a_request_longer_than_heartbeat_timeout_is_answered_and_its_worker_kept(cluster, inline):
    c = cluster(MASTER.format(workers=1, extra=f", inline_tasks={inline}, heartbeat_timeout=2"))
    ready = c.ready()
    port, pid = ready["ports"][0], ready["workers"][0]["pid"]
    # 5 s: two and a half heartbeat_timeouts, ten sweeps of the master's watch. (2 s, not 1: an idle
    # loop beats once a second, so heartbeat_timeout=1 would leave a loaded box no slack between beats.)
    status, body, _ = get(port, "/slow?s=5", timeout=15)
    assert status == 200 and int(body.split()[0]) == pid
    assert get(port)[1].split()[0] == str(pid)
    assert not [e for e in c.events if e["event"] == "worker_exited"], c.events
    assert "heartbeat" not in c.log()


@BOTH
def test_a_worker_frozen_in_a_long_request_is_still_replaced(cluster, inline):
    """SIGSTOP mid-request: the I/O loop's silence is forgiven, the command thread's is not."""
    c = cluster(MASTER.format(workers=1, extra=f", inline_tasks={inline}, heartbeat_timeout=2"))
    ready = c.ready()
    port, pid = ready["ports"][0], ready["workers"][0]["pid"]
    answered = []
    client = threading.Thread(target=lambda: answered.append(_slow_or_cut(port)), daemon=True)
    client.start()

    def running():
        activity = c.order("activity")["result"]
        return any(slot.get("request") for slot in activity.values())

    wait_until(running, 5, message="the /slow request running")
    with frozen(pid):
        exited = c.wait_event("worker_exited", 8, where=lambda e: e["info"]["pid"] == pid)
        assert exited["exitcode"] == -signal.SIGKILL
        c.wait_event("worker_started", 8, where=lambda e: e["info"]["id"] == 0 and e["info"]["pid"] != pid)
    assert "command thread silent" in c.log()
    client.join(10)
    assert get(port)[0] == 200


def _slow_or_cut(port):
    try:
        return get(port, "/slow?s=30", timeout=20)[0]
    except OSError:
        return None


@pytest.mark.timeout(90)
def test_an_upgrade_takes_a_value_changed_in_the_config_file(server, tmp_path):
    """Read when a master starts, like every option: the new master of an upgrade reads the file again."""
    from clitools import ctl

    config, sock, port = tmp_path / "site.py", tmp_path / "ctl.sock", free_port()
    config.write_text("inline_tasks = False\n")
    args = ["--workers", "1", "--base-port", str(port), "--control-socket", sock, "--config", config, "apps:app"]
    master = server(*args, env={"PREFORK_WAITRESS_INLINE_TASKS": None})
    master.status(sock)
    assert _thread_of(port) != "MainThread"
    config.write_text("inline_tasks = True\n")
    result = ctl(str(sock), "upgrade", timeout=60)
    assert result.returncode == 0, result.stderr + master.log()
    assert master.wait(30) == 0
    assert _thread_of(port) == "MainThread"


def test_the_suite_runs_on_the_path_it_says(cluster, server, tmp_path):
    """``pytest --inline-tasks`` (tox's inline pass) reaches the test masters, API and command line alike."""
    expected = suite_runs_inline()
    c = cluster(MASTER.format(workers=1, extra=""))
    assert (_thread_of(c.ready()["ports"][0]) == "MainThread") is expected
    port, sock = free_port(), tmp_path / "ctl.sock"
    server("--workers", "1", "--base-port", str(port), "--control-socket", str(sock), "apps:app").status(sock)
    assert (_thread_of(port) == "MainThread") is expected
