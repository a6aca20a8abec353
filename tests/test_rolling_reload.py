"""Rolling reload: new code served, zero failed requests under load, failures contained."""

import pytest
from conftest import LoadLoop, get

APP = """
VERSION = {version!r}


def app(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""

MASTER = """
RecordingMaster("versioned:app", workers=2, base_port=0, preload={preload}, graceful_timeout=10).start()
"""


def write_app(tmp_path, version):
    (tmp_path / "versioned.py").write_text(APP.format(version=version))


def start(cluster, tmp_path, preload):
    write_app(tmp_path, "v1")
    c = cluster(MASTER.format(preload=preload), env={"PYTHONDONTWRITEBYTECODE": "1"})
    return c, c.ready()


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_reload_under_load_serves_new_code_with_no_failed_request(cluster, tmp_path, preload):
    c, ready = start(cluster, tmp_path, preload)
    with LoadLoop(ready["ports"], threads=4) as load:
        load.wait_for_requests(50)
        write_app(tmp_path, "v2-new")
        c.order("reload")
        done = c.wait_event("reloaded")
        load.wait_for_requests(50)
    assert done["ok"] is True
    assert load.failures == []
    assert [w["generation"] for w in done["workers"]] == [2, 2]
    assert [w["port"] for w in done["workers"]] == ready["ports"]
    for port in ready["ports"]:
        assert get(port)[1] == "v2-new"
    old = [w["pid"] for w in ready["workers"]]
    exits = [c.wait_event("worker_exited") for _ in old]
    assert sorted(e["info"]["pid"] for e in exits) == sorted(old)
    assert all(e["exitcode"] == 0 for e in exits)


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_broken_code_keeps_old_workers_serving_and_fix_reloads(cluster, tmp_path, preload):
    c, ready = start(cluster, tmp_path, preload)
    (tmp_path / "versioned.py").write_text("def app(:\n")
    c.order("reload")
    assert c.wait_event("reloaded")["ok"] is False
    for worker in ready["workers"]:
        assert get(worker["port"])[1] == "v1"
    assert "SyntaxError" in c.log()
    write_app(tmp_path, "v3-fixed")
    c.order("reload")
    assert c.wait_event("reloaded")["ok"] is True
    for port in ready["ports"]:
        assert get(port)[1] == "v3-fixed"


def test_reload_requested_during_a_reload_is_queued_not_run_in_parallel(cluster, tmp_path):
    c, ready = start(cluster, tmp_path, False)
    c.order("reload")
    c.order("reload")
    c.order("reload")
    first = c.wait_event("reloaded")
    second = c.wait_event("reloaded")
    assert first["ok"] and second["ok"]
    assert [w["generation"] for w in first["workers"]] == [2, 2]
    assert [w["generation"] for w in second["workers"]] == [3, 3]
    exits = [c.wait_event("worker_exited") for _ in range(4)]
    assert sorted(e["info"]["generation"] for e in exits) == [1, 1, 2, 2]
    with pytest.raises(AssertionError):
        c.wait_event("reloaded", timeout=0.5)


def test_new_worker_that_never_becomes_ready_is_killed_and_the_reload_abandoned(cluster, tmp_path):
    write_app(tmp_path, "v1")
    c = cluster(
        'RecordingMaster("versioned:app", workers=2, base_port=0, boot_timeout=1, graceful_timeout=5).start()',
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    ready = c.ready()
    (tmp_path / "versioned.py").write_text("import time\ntime.sleep(60)\n")
    c.order("reload")
    assert c.wait_event("reloaded", timeout=10)["ok"] is False
    hung = c.wait_event("worker_exited", where=lambda e: e["info"]["generation"] == 2)
    assert hung["exitcode"] == -9
    assert "not ready within boot_timeout (1 s)" in c.log()
    assert [get(w["port"])[1] for w in ready["workers"]] == ["v1", "v1"]
