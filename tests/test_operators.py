"""Smaller things operators hit: restarts per slot, extra reload files, ctl reload's reason, haproxy_prefix."""

import os
import signal
import sys

import pytest
from clitools import ctl
from conftest import Cluster, get, wait_until
from test_haproxy import HAPROXY, HAProxy
from test_metrics import scrape, value
from test_metrics import start as start_with_metrics

from prefork_waitress import Master


def slot_restarts(port, slot, reason):
    return value(scrape(port), "prefork_waitress_slot_restarts_total", slot=str(slot), reason=reason)


def test_restarts_are_counted_per_slot_and_the_cluster_series_stays(cluster):
    c, ready, port = start_with_metrics(cluster)
    assert slot_restarts(port, 0, "killed") == 0 and slot_restarts(port, 1, "killed") == 0
    os.kill(ready["workers"][1]["pid"], signal.SIGKILL)
    c.wait_event("worker_started", where=lambda e: e["info"]["id"] == 1 and e["info"]["generation"] > 1)
    assert slot_restarts(port, 1, "killed") == 1 and slot_restarts(port, 0, "killed") == 0
    assert value(scrape(port), "prefork_waitress_worker_restarts_total", reason="killed") == 1
    c.order("reload")
    assert c.wait_event("reloaded")["ok"] is True
    assert [slot_restarts(port, slot, "reload") for slot in (0, 1)] == [1, 1]


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_a_reload_extra_file_reloads_every_worker_when_saved(cluster, tmp_path, preload):
    templates = tmp_path / "templates"
    templates.mkdir()
    page, other = templates / "page.html", templates / "other.html"
    page.write_text("<p>one</p>\n")
    other.write_text("<p>other</p>\n")
    c = cluster(
        f"""
        RecordingMaster("apps:app", workers=2, base_port=0, reload=True, preload={preload},
                        reload_extra_file=[{str(page)!r}], graceful_timeout=5).start()
        """
    )
    ready = c.ready()
    wait_until(lambda: "watching" in c.log(), message="the watcher started")
    other.write_text("<p>changed, not watched</p>\n")  # not an extra file: nothing happens
    page.write_text("<p>two</p>\n")
    reloaded = c.wait_event("reloaded", 15)
    assert reloaded["ok"] is True
    assert {w["generation"] for w in reloaded["workers"]} == {2}
    assert "changed: " + str(page) in c.log() and str(other) not in c.log()
    assert all(get(port)[0] == 200 for port in ready["ports"])


def test_reload_extra_file_without_reload_is_refused():
    with pytest.raises(ValueError, match="option reload_extra_file: its files are watched only with reload on"):
        Master("apps:app", reload_extra_file=["templates/page.html"])


def test_ctl_reload_prints_why_an_incomplete_reload_failed(cluster, tmp_path):
    prefix = str(tmp_path / "broken-")
    c = cluster(
        """
        RecordingMaster("apps:app", workers=2, base_port=0, worker_class=apps.BreakableWorker,
                        control_socket="ctl.sock").start()
        """,
        env={"PW_TEST_BROKEN_PREFIX": prefix},
    )
    ready = c.ready()
    open(prefix + "1", "w").close()
    os.kill(ready["workers"][1]["pid"], signal.SIGKILL)
    wait_until(lambda: "slot 1 is broken" in c.log(), message="slot 1 crash-looping")
    result = ctl(tmp_path / "ctl.sock", "reload", timeout=40)
    assert result.returncode == 1
    assert "rolling reload incomplete: slots [1] have no serving worker" in result.stderr, result.stderr
    assert "slot 1: RuntimeError: slot 1 is broken; the others serve the new code" in result.stderr, result.stderr
    assert get(ready["ports"][0])[0] == 200


def test_ctl_reload_prints_why_the_new_code_could_not_load(cluster, tmp_path):
    (tmp_path / "changing.py").write_text("from apps import app\n")
    c = cluster(
        """
        RecordingMaster("changing:app", workers=1, base_port=0, preload=True, control_socket="ctl.sock").start()
        """
    )
    ready = c.ready()
    (tmp_path / "changing.py").write_text("def app(:\n")
    result = ctl(tmp_path / "ctl.sock", "reload")
    assert result.returncode == 1
    assert "the new code cannot be loaded: reloading 'changing' failed: SyntaxError" in result.stderr, result.stderr
    assert get(ready["ports"][0])[0] == 200


MASTER = """
RecordingMaster("apps:app", workers={workers}, base_port=0, graceful_timeout=10,
                haproxy_socket={api!r}, haproxy_backend="app", haproxy_prefix={prefix!r}).start()
emit("exited")
"""


@pytest.fixture
def haproxy(tmp_path):
    if HAPROXY is None:
        pytest.skip("no haproxy binary (CI installs Debian's haproxy)")
    server = HAProxy(tmp_path / "haproxy")
    yield server
    server.stop()


def test_two_masters_on_one_host_share_a_backend_by_prefix(tmp_path, haproxy):
    started = []
    try:
        for name, workers in (("blue", 2), ("green", 2)):
            (tmp_path / name).mkdir()
            body = MASTER.format(workers=workers, api=str(haproxy.sock), prefix=name)
            started.append(Cluster(tmp_path / name, body))
        blue, green = (c.ready() for c in started)
        wait_until(lambda: len(haproxy.live()) == 4, timeout=20, message="four servers from two masters")
        names = set(haproxy.servers())
        assert names == {f"blue-127.0.0.1-{p}" for p in blue["ports"]} | {
            f"green-127.0.0.1-{p}" for p in green["ports"]
        }
        started[1].order("scale", 1)
        wait_until(lambda: haproxy.live("green-") == green["ports"][:1], timeout=20, message="green at one server")
        assert haproxy.live("blue-") == sorted(blue["ports"])  # the other prefix is not touched
        started[0].signal(signal.SIGTERM)
        assert started[0].wait_exit() == 0
        assert [n for n in haproxy.servers() if n.startswith("blue-")] == []
        assert haproxy.live("green-") == green["ports"][:1]
    finally:
        for c in started:
            c.close()


def test_a_bad_haproxy_prefix_says_what_is_accepted():
    with pytest.raises(ValueError, match="option haproxy_prefix: expected a name prefix of letters, digits"):
        Master("apps:app", haproxy_prefix="blue green")


PAGE_APP = """
import os


def make(global_conf):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.txt")) as f:
        text = f.read().strip()

    def app(environ, start_response):
        body = text.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app
"""

PASTE_RUN = (
    "import sys; from paste.deploy import loadapp, loadserver; u = 'config:' + sys.argv[1]; loadserver(u)(loadapp(u))"
)

PAGE_INI = """
[app:main]
use = call:pageapp:make

[server:main]
use = call:prefork_waitress.paste:server_factory
workers = 2
base_port = 0
control_socket = %(here)s/ctl.sock
graceful_timeout = 5
reload = true
reload_extra_file = %(here)s/page.txt
"""


def test_the_paste_runner_reloads_on_a_reload_extra_file(server, tmp_path):
    pytest.importorskip("paste.deploy")
    (tmp_path / "pageapp.py").write_text(PAGE_APP)
    (tmp_path / "page.txt").write_text("first\n")
    ini = tmp_path / "site.ini"
    ini.write_text(PAGE_INI)
    s = server(ini, program=(sys.executable, "-c", PASTE_RUN))
    ports = [w["port"] for w in s.status(tmp_path / "ctl.sock")["workers"]]
    assert [get(port)[1] for port in ports] == ["first", "first"]
    (tmp_path / "page.txt").write_text("second\n")
    wait_until(lambda: all(get(port)[1] == "second" for port in ports), 20, message="every port on the new page")
