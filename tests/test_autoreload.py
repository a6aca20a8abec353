"""Master(reload=True): a saved file reloads exactly what changed and what depends on it."""

import json

import pytest
from conftest import get

FILES = {
    "proj/__init__.py": "",
    "proj/helpers.py": "GREETING = 'hello'\n",
    "proj/views.py": "import uuid\nfrom proj import helpers\nTOKEN = uuid.uuid4().hex\n\n"
    "def greet():\n    return helpers.GREETING\n",
    "proj/unrelated.py": "import uuid\nTOKEN = uuid.uuid4().hex\n",
    "proj/wsgi.py": """
import importlib
import json
from proj import unrelated, views

dynamic = importlib.import_module("proj." + "dynamic")  # invisible to import analysis


def app(environ, start_response):
    body = json.dumps({"greeting": views.greet(), "views": views.TOKEN,
                       "unrelated": unrelated.TOKEN, "dynamic": dynamic.VALUE}).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
""",
    "proj/dynamic.py": "VALUE = 1\n",
}

MASTER = """
RecordingMaster("proj.wsgi:app", workers=2, base_port=0, preload={preload}, reload=True,
                graceful_timeout=5).start()
"""


def start(cluster, tmp_path, preload):
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    c = cluster(MASTER.format(preload=preload), env={"PYTHONDONTWRITEBYTECODE": ""})
    ready = c.ready()
    return c, ready["ports"]


def state(port):
    return json.loads(get(port)[1])


def save(tmp_path, name, text):
    """Save like an editor that writes a temporary file and renames it over the original."""
    target = tmp_path / name
    tmp = target.with_name(target.name + ".swp")
    tmp.write_text(text)
    tmp.replace(target)


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_saved_edit_is_served_by_every_worker(cluster, tmp_path, preload):
    c, ports = start(cluster, tmp_path, preload)
    before = state(ports[0])
    save(tmp_path, "proj/helpers.py", "GREETING = 'bonjour'\n")
    assert c.wait_event("reloaded")["ok"] is True
    after = [state(port) for port in ports]
    assert all(s["greeting"] == "bonjour" for s in after)
    assert all(s["views"] != before["views"] for s in after)


def test_preload_reloads_dependents_but_not_unrelated_modules(cluster, tmp_path):
    c, ports = start(cluster, tmp_path, True)
    before = state(ports[0])
    save(tmp_path, "proj/helpers.py", "GREETING = 'hallo'\n")
    assert c.wait_event("reloaded")["ok"] is True
    after = state(ports[1])
    assert after["greeting"] == "hallo"
    assert after["views"] != before["views"], "views imports helpers: reloaded"
    assert after["unrelated"] == before["unrelated"], "unrelated does not: left alone"
    assert "reloaded modules: proj.helpers, proj.views, proj.wsgi" in c.log()


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_broken_edit_keeps_old_code_and_next_good_save_reloads(cluster, tmp_path, preload):
    c, ports = start(cluster, tmp_path, preload)
    save(tmp_path, "proj/helpers.py", "GREETING = 'broken\n")
    assert c.wait_event("reloaded")["ok"] is False
    assert all(state(port)["greeting"] == "hello" for port in ports)
    assert "SyntaxError" in c.log()
    save(tmp_path, "proj/helpers.py", "GREETING = 'fixed'\n")
    assert c.wait_event("reloaded")["ok"] is True
    assert all(state(port)["greeting"] == "fixed" for port in ports)


def test_lazy_workers_report_dynamically_imported_modules(cluster, tmp_path):
    c, ports = start(cluster, tmp_path, False)
    assert state(ports[0])["dynamic"] == 1
    save(tmp_path, "proj/dynamic.py", "VALUE = 2\n")
    assert c.wait_event("reloaded")["ok"] is True
    assert all(state(port)["dynamic"] == 2 for port in ports)


def test_reload_needs_an_app_string(cluster):
    c = cluster("""
        try:
            RecordingMaster(apps.app, reload=True)
        except ValueError as exc:
            emit("failed", message=str(exc))
    """)
    assert "option reload: needs the app as a 'package.module:attr' string" in c.wait_event("failed")["message"]


def test_a_save_touching_several_files_is_one_reload(cluster, tmp_path):
    c, ports = start(cluster, tmp_path, True)
    save(tmp_path, "proj/helpers.py", "GREETING = 'ciao'\n")
    save(tmp_path, "proj/dynamic.py", "VALUE = 3\n")
    assert c.wait_event("reloaded")["ok"] is True
    assert all(state(port)["greeting"] == "ciao" and state(port)["dynamic"] == 3 for port in ports)
    with pytest.raises(AssertionError, match="no 'reloaded' event"):
        c.wait_event("reloaded", timeout=1)
