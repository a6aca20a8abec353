"""Master upgrade: a new master program, from another release directory and virtualenv, takes over the sockets.

Each release is a directory with its own app, its own virtualenv (``python -m venv``, its site-packages
pointing at this environment's for waitress) and its own launcher script whose ``#!`` line names that
virtualenv's python, as a deploy would install it. The master runs ``current/serve``; ``current`` is a
symlink moved between releases, so the exec'd new master resolves it anew.
"""

import os
import re
import signal
import site
import subprocess
import sys
import textwrap

import pytest
from clitools import ctl
from conftest import InThread, free_port, get, pid_alive, wait_until
from frontload import FrontendLoad
from procfs import children_of
from test_haproxy import haproxy  # noqa: F401  (the fixture)
from test_systemd import NotifySocket
from test_upstream import nginx  # noqa: F401  (the fixture)

from prefork_waitress.control import request

APP = """
import os, sys, time
gate = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gate")
deadline = time.monotonic() + 50
while {gated} and not os.path.exists(gate) and time.monotonic() < deadline:  # a release slow to import
    time.sleep(0.02)
{broken}
def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    body = f"{name} {{sys.prefix}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""

LAUNCHER = """#!{python}
import os, sys
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
from prefork_waitress.__main__ import main
sys.exit(main(sys.argv[1:] + {extra!r}))
"""


def make_release(root, name, extra=(), broken=False, gated=False):
    """releases/NAME: app.py, its own virtualenv, and the launcher ``serve`` running prefork-waitress there."""
    release = root / "releases" / name
    release.mkdir(parents=True)
    venv = release / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    packages = next((venv / "lib").glob("python*/site-packages"))
    (packages / "base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    raise_line = f"raise ImportError('{name} is broken')" if broken else ""
    (release / "app.py").write_text(APP.format(name=name, broken=raise_line, gated=gated))
    launcher = release / "serve"
    launcher.write_text(LAUNCHER.format(python=venv / "bin" / "python", extra=list(extra)))
    launcher.chmod(0o755)
    return release


def switch(root, release):
    """Point ``current`` at ``release`` atomically, as a deploy does (ln -sfn + rename)."""
    link = root / "current.new"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(release)
    os.replace(link, root / "current")


def start(server, tmp_path, *extra, env=None):
    sock, pidfile = tmp_path / "ctl.sock", tmp_path / "master.pid"
    master = server(
        "--workers",
        "2",
        "--base-port",
        "0",
        "--control-socket",
        sock,
        "--pid",
        pidfile,
        *extra,
        "app:app",
        env=env,
        program=(str(tmp_path / "current" / "serve"),),
    )
    master.sock, master.pidfile = sock, pidfile
    return master, master.status(sock, timeout=30)


def bodies(ports):
    """(release name, sys.prefix) of one answer from each port."""
    seen = []
    for port in ports:
        status, body, _ = get(port)
        assert status == 200, body
        name, prefix, _pid = body.split()
        seen.append((name, prefix))
    return seen


def served_by(sock):
    return request(str(sock), {"action": "status"})["result"]


def upgrade(sock, timeout=90):
    return ctl(str(sock), "upgrade", timeout=timeout)


@pytest.mark.timeout(180)
def test_two_upgrades_under_nginx_load_lose_nothing_and_serve_the_new_release_venv_and_options(
    server,
    tmp_path,
    nginx,  # noqa: F811
):
    one = make_release(tmp_path, "one")
    two = make_release(tmp_path, "two", extra=["--max-requests", "15"])  # another prefork_waitress option
    three = make_release(tmp_path, "three")
    switch(tmp_path, one)
    metrics_port = free_port()  # passed on too: the new master could not bind it while the old one holds it
    master, status = start(
        server, tmp_path, "--upstream-file", tmp_path / "upstream.conf", "--metrics-port", metrics_port
    )
    old_pid, ports = status["master"]["pid"], status["master"]["ports"]
    first_workers = [w["pid"] for w in status["workers"]]
    nginx.start()
    upstream = (tmp_path / "upstream.conf").read_text()
    with FrontendLoad(nginx.port, threads=4, max_seconds=120) as load:
        load.wait_for_requests(200)
        assert [w["pid"] for w in served_by(master.sock)["workers"]] == first_workers  # release one never recycles
        assert bodies(ports) == [("one", str(one / "venv"))] * 2

        switch(tmp_path, two)
        result = upgrade(master.sock)
        assert result.returncode == 0, result.stderr + master.log()
        new_pid = int(re.search(r"upgraded: master (\d+)", result.stdout).group(1))
        assert master.pidfile.read_text().strip() == str(new_pid)
        assert served_by(master.sock)["master"]["pid"] == new_pid  # the control socket is the new master's
        assert master.wait(30) == 0  # the old master drained and exited
        assert bodies(ports) == [("two", str(two / "venv"))] * 2  # every port: new code, new virtualenv
        assert not any(pid_alive(pid) for pid in first_workers)
        load.wait_for_requests(200)
        after = [w["pid"] for w in served_by(master.sock)["workers"]]
        load.wait_for_requests(300)
        recycled = wait_until(
            lambda: all(w["pid"] not in after for w in served_by(master.sock)["workers"]),
            30,
            message="release two's --max-requests 15 recycling every worker",
        )
        assert recycled

        switch(tmp_path, three)  # a second upgrade, from the master an upgrade started
        result = upgrade(master.sock)
        assert result.returncode == 0, result.stderr + master.log()
        third_pid = int(re.search(r"upgraded: master (\d+)", result.stdout).group(1))
        assert master.pidfile.read_text().strip() == str(third_pid)
        assert served_by(master.sock)["master"]["pid"] == third_pid
        wait_until(lambda: not pid_alive(new_pid), 30, message="the second master drained and exited")
        assert bodies(ports) == [("three", str(three / "venv"))] * 2
        assert get(metrics_port, "/metrics")[0] == 200
        load.wait_for_requests(200)
    assert load.failures == [], load.failures[:5]
    assert load.posts > 100
    assert (tmp_path / "upstream.conf").read_text() == upstream  # the frontend was never touched
    errors = [line for line in (nginx.prefix / "error.log").read_text().splitlines() if "upstream" in line]
    assert errors == []  # not even a connection nginx had to retry on another worker
    assert old_pid != new_pid != third_pid


@pytest.mark.timeout(120)
def test_an_upgrade_to_a_release_that_cannot_import_fails_and_the_old_one_serves_on(server, tmp_path, nginx):  # noqa: F811
    one = make_release(tmp_path, "one")
    broken = make_release(tmp_path, "broken", broken=True)
    switch(tmp_path, one)
    master, status = start(server, tmp_path, "--upstream-file", tmp_path / "upstream.conf")
    old_pid, ports = status["master"]["pid"], status["master"]["ports"]
    nginx.start()
    with FrontendLoad(nginx.port, threads=4, max_seconds=60) as load:
        load.wait_for_requests(100)
        switch(tmp_path, broken)
        result = upgrade(master.sock)
        assert result.returncode == 1, result.stdout + master.log()
        assert "ImportError: broken is broken" in result.stderr
        failed_pid = int(re.search(r"new master \(pid (\d+)\)", result.stderr).group(1))
        load.wait_for_requests(100)
    assert load.failures == [], load.failures[:5]
    assert not pid_alive(failed_pid) and failed_pid not in children_of(old_pid)  # reaped, not a zombie
    assert bodies(ports) == [("one", str(one / "venv"))] * 2
    assert master.pidfile.read_text().strip() == str(old_pid)
    assert served_by(master.sock)["master"]["pid"] == old_pid
    assert "upgrade failed" in master.log() and "keeps serving" in master.log()
    switch(tmp_path, one)  # fixed: the next upgrade works
    assert upgrade(master.sock).returncode == 0


@pytest.mark.timeout(120)
def test_the_new_master_tells_systemd_its_pid_and_the_old_one_never_says_stopping(server, tmp_path):
    switch(tmp_path, make_release(tmp_path, "one"))
    listener = NotifySocket(str(tmp_path / "notify"))
    try:
        master, status = start(server, tmp_path, env={"NOTIFY_SOCKET": listener.address})
        assert listener.next()["READY"] == "1"
        result = upgrade(master.sock)
        assert result.returncode == 0, result.stderr + master.log()
        new_pid = int(re.search(r"upgraded: master (\d+)", result.stdout).group(1))
        assert listener.next() == {"MAINPID": str(new_pid), "READY": "1", "STATUS": listener_status(status)}
        assert master.wait(30) == 0
        listener.sock.setblocking(False)
        later = []
        while True:
            try:
                later.append(listener.sock.recv(4096).decode())
            except BlockingIOError:
                break
        assert not any("STOPPING" in message for message in later), later  # the service did not stop
    finally:
        listener.close()


def listener_status(status):
    return f"upgraded: serving on ports {status['master']['ports']}"


def _started_pid(master):
    found = re.search(r"upgrade: started a new master \(pid (\d+)\)", master.log())
    return int(found.group(1)) if found else None


@pytest.mark.timeout(120)
def test_sigkill_of_the_old_master_mid_upgrade_leaves_the_new_one_serving_and_no_orphan(server, tmp_path):
    switch(tmp_path, make_release(tmp_path, "one"))
    two = make_release(tmp_path, "two", gated=True)
    master, status = start(server, tmp_path)
    old_workers = [w["pid"] for w in status["workers"]]
    ports = status["master"]["ports"]
    switch(tmp_path, two)
    master.signal(signal.SIGUSR2)  # the conventional upgrade signal
    new_pid = wait_until(lambda: _started_pid(master), 20, message="the new master started")
    master.signal(signal.SIGKILL)  # while the new one is still importing its app
    assert master.wait(10) == -signal.SIGKILL
    wait_until(lambda: not any(pid_alive(pid) for pid in old_workers), 20, message="the old workers gone")
    assert pid_alive(new_pid)
    waiting = [InThread(lambda port=port: get(port, timeout=40)) for port in ports]  # queued, not refused
    (two / "gate").write_text("")
    assert [(w.result(45)[0], w.result()[1].split()[0]) for w in waiting] == [(200, "two")] * 2
    assert bodies(ports) == [("two", str(two / "venv"))] * 2
    wait_until(lambda: master.pidfile.read_text().strip() == str(new_pid), 30, message="the pid file moved")
    assert served_by(master.sock)["master"]["pid"] == new_pid


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["sigterm-to-the-old-master", "ctrl-c-to-the-group"])
def test_a_stop_during_an_upgrade_stops_both_masters_gracefully(server, tmp_path, how):
    switch(tmp_path, make_release(tmp_path, "one"))
    two = make_release(tmp_path, "two", gated=True)
    master, status = start(server, tmp_path)
    switch(tmp_path, two)
    pending = InThread(lambda: upgrade(master.sock))
    new_pid = wait_until(lambda: _started_pid(master), 20, message="the new master started")
    if how == "sigterm-to-the-old-master":
        master.signal(signal.SIGTERM)
    else:
        os.killpg(master.proc.pid, signal.SIGINT)  # what a terminal sends to its foreground group
    assert master.wait(30) == 0
    assert not pid_alive(new_pid)  # stopped and reaped by the old master
    result = pending.result(30)
    assert result.returncode == 1 and "upgrade" in result.stderr, result.stderr
    assert not master.pidfile.exists() and not master.sock.exists()
    assert not any(pid_alive(w["pid"]) for w in status["workers"])


def test_ctl_tracebacks_and_upgrade_are_in_the_help():
    from clitools import run_cli

    text = run_cli("ctl", "--socket", "x", "--help").stdout
    assert "upgrade" in textwrap.dedent(text) and "tracebacks" in text


@pytest.mark.timeout(120)
def test_an_upgrade_behind_haproxy_keeps_its_servers_and_loses_nothing(server, tmp_path, haproxy):  # noqa: F811
    switch(tmp_path, make_release(tmp_path, "one"))
    two = make_release(tmp_path, "two")
    api = ["--haproxy-socket", haproxy.sock, "--haproxy-backend", "app"]
    master, status = start(server, tmp_path, *api)
    ports = sorted(status["master"]["ports"])
    wait_until(lambda: haproxy.live() == ports, message="the servers in haproxy")
    servers = haproxy.servers()
    with FrontendLoad(haproxy.port, threads=4, max_seconds=60) as load:
        load.wait_for_requests(100)
        switch(tmp_path, two)
        result = upgrade(master.sock)
        assert result.returncode == 0, result.stderr + master.log()
        assert master.wait(30) == 0
        load.wait_for_requests(100)
    assert load.failures == [] and load.posts > 50, load.failures[:5]
    assert haproxy.servers() == servers  # neither drained nor deleted by the old master, nor re-added
    assert haproxy.backend_errors() == {"econ": "0", "eresp": "0", "wretr": "0", "wredis": "0", "hrsp_5xx": "0"}
    assert bodies(ports) == [("two", str(two / "venv"))] * 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["killed", "boot-timeout"])
def test_a_new_master_killed_or_too_slow_to_boot_fails_the_upgrade_and_the_old_one_serves_on(server, tmp_path, how):
    one = make_release(tmp_path, "one")
    two = make_release(tmp_path, "two", extra=["--boot-timeout", "1"] if how == "boot-timeout" else [], gated=True)
    switch(tmp_path, one)
    master, status = start(server, tmp_path)
    old_pid, ports = status["master"]["pid"], status["master"]["ports"]
    switch(tmp_path, two)
    pending = InThread(lambda: upgrade(master.sock))
    new_pid = wait_until(lambda: _started_pid(master), 20, message="the new master started")
    if how == "killed":
        os.kill(new_pid, signal.SIGKILL)  # its app probe, a child holding its pipe, goes on importing
    result = pending.result(60)
    assert result.returncode == 1, result.stdout + master.log()
    expected = "signal SIGKILL" if how == "killed" else "took longer than 1 s"
    assert expected in result.stderr, result.stderr
    assert not pid_alive(new_pid) and new_pid not in children_of(old_pid)
    assert bodies(ports) == [("one", str(one / "venv"))] * 2
    assert served_by(master.sock)["master"]["pid"] == old_pid
    assert master.pidfile.read_text().strip() == str(old_pid)
    (two / "gate").write_text("")  # let an orphaned probe finish


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0")


@pytest.mark.timeout(60)
def test_python_m_prefork_waitress_is_run_again_with_the_same_command_line(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    master = server("--workers", "1", "--base-port", "0", "--control-socket", sock, "apps:hello")
    status = master.status(sock)
    before = _cmdline(status["master"]["pid"])
    result = upgrade(sock)
    assert result.returncode == 0, result.stderr + master.log()
    new_pid = int(re.search(r"upgraded: master (\d+)", result.stdout).group(1))
    assert _cmdline(new_pid) == before  # python -m prefork_waitress ..., the interpreter's own path
    assert master.wait(30) == 0
    assert get(status["master"]["ports"][0])[1].split()[0] != str(status["workers"][0]["pid"])
