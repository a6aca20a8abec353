"""--reload on real frameworks: code imported after a worker booted is watched, and
after the reload every port serves the new code (Django, Flask, Pyramid, Trac)."""

import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import get, wait_until

pytestmark = pytest.mark.timeout(120)  # Django boots in ~0.2 s, but 8 s were seen on a loaded box

MASTER = """
logging.getLogger("prefork_waitress").setLevel(logging.DEBUG)  # lists every file it starts watching
RecordingMaster({app!r}, workers=2, base_port=0, preload={preload}, reload=True,
                graceful_timeout=5).start()
"""


def write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def save(path, text):
    """Save like an editor that writes a temporary file and renames it over the original."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(textwrap.dedent(text))
    tmp.replace(path)


def start(cluster, app, preload=False, env=None):
    c = cluster(MASTER.format(app=app, preload=preload), env={"PYTHONDONTWRITEBYTECODE": "", **(env or {})})
    return c, c.ready(timeout=60)["ports"]


def body(port, path):
    status, text, _ = get(port, path)
    assert status == 200, (port, path, status, text)
    return text


def wait_watched(c, name):
    """The master logs (DEBUG) each module or data file a worker reported once it watches it."""
    pattern = re.compile(r"now watching: (.*[ /])?" + re.escape(name) + r"(,|$)", re.M)
    wait_until(lambda: pattern.search(c.log()), timeout=30, message=f"the master to watch {name}")


def edit_and_check_every_port(c, ports, path, url, old, new, text):
    """Save the edit, wait for the reload, then every port must serve ``new``."""
    save(path, text)
    assert c.wait_event("reloaded", timeout=60)["ok"] is True
    for port in ports:
        served = body(port, url)
        assert new in served and old not in served, (port, served)


# Django: the project's URLconf includes the app's urls lazily ("polls.urls"), so the
# view module is imported by the first request, not at boot.

DJANGO_VIEW = """
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render

def greeting(request):
    return HttpResponse(settings.GREETING)

def index(request):
    return HttpResponse("polls {version}")

def page(request):
    return render(request, "polls/page.html")
"""


@pytest.fixture(scope="module")
def generated_django_project(tmp_path_factory):
    """``django-admin startproject mysite`` + ``startapp polls``, once for this module."""
    pytest.importorskip("django")
    root = tmp_path_factory.mktemp("django")
    run = [sys.executable, "-m", "django"]
    subprocess.run([*run, "startproject", "mysite", str(root)], check=True, timeout=60)
    subprocess.run([*run, "startapp", "polls"], cwd=str(root), check=True, timeout=60)
    return root


@pytest.fixture
def django_project(generated_django_project, tmp_path):
    """A fresh copy of the generated project in the test's directory, the app behind a lazy include."""
    shutil.copytree(generated_django_project, tmp_path, dirs_exist_ok=True)
    settings = tmp_path / "mysite" / "settings.py"
    text = settings.read_text()
    text = text.replace("ALLOWED_HOSTS = []", "ALLOWED_HOSTS = ['*']")
    text = text.replace("'django.contrib.staticfiles',", "'django.contrib.staticfiles',\n    'polls',")
    settings.write_text(text + "\nGREETING = 'hello'\n")
    write(
        tmp_path,
        {
            "polls/views.py": DJANGO_VIEW.format(version="v1"),
            "polls/urls.py": """
                from django.urls import path
                from . import views
                urlpatterns = [path("", views.index), path("page", views.page), path("greeting", views.greeting)]
            """,
            "polls/templates/polls/page.html": "template v1",
            "mysite/urls.py": """
                from django.urls import include, path
                urlpatterns = [path("polls/", include("polls.urls"))]
            """,
        },
    )
    return tmp_path


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_django_view_behind_lazy_include(cluster, django_project, preload):
    c, ports = start(cluster, "mysite.wsgi:application", preload)
    assert body(ports[0], "/polls/") == "polls v1"  # only worker 0 imported the view
    wait_watched(c, "polls.views")
    view = django_project / "polls" / "views.py"
    edit_and_check_every_port(c, ports, view, "/polls/", "v1", "polls v2", DJANGO_VIEW.format(version="v2"))
    # the new generation reports the view again, and a second edit is seen as well
    edit_and_check_every_port(c, ports, view, "/polls/", "v2", "polls v3", DJANGO_VIEW.format(version="v3"))


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_django_template_edit(cluster, django_project, preload):
    """Django caches templates in the process (DEBUG or not): a template change needs fresh workers."""
    c, ports = start(cluster, "mysite.wsgi:application", preload)
    assert all(body(port, "/polls/page") == "template v1" for port in ports)  # every cache holds v1
    wait_watched(c, "page.html")
    template = django_project / "polls" / "templates" / "polls" / "page.html"
    edit_and_check_every_port(c, ports, template, "/polls/page", "v1", "template v2", "template v2")


def test_django_settings_edit(cluster, django_project):
    """Lazy mode only: Django reads settings.py once per process (see README)."""
    c, ports = start(cluster, "mysite.wsgi:application")
    wait_watched(c, "mysite.settings")
    settings = django_project / "mysite" / "settings.py"
    text = settings.read_text().replace("GREETING = 'hello'", "GREETING = 'bonjour'")
    edit_and_check_every_port(c, ports, settings, "/polls/greeting", "hello", "bonjour", text)


def test_django_with_preload_warns_that_settings_cannot_be_reloaded(cluster, django_project):
    c, _ = start(cluster, "mysite.wsgi:application", preload=True)
    assert "Django reads settings.py and registers models once per process" in c.log()


# Flask: a blueprint in its own module, found by a dotted string at app creation.

FLASK_VIEWS = """
from flask import Blueprint

bp = Blueprint("hello", __name__)

@bp.route("/hello")
def hello():
    return "blueprint {version}"
"""


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_flask_blueprint(cluster, tmp_path, preload):
    pytest.importorskip("flask")
    write(
        tmp_path,
        {
            "flaskapp/__init__.py": "",
            "flaskapp/views.py": FLASK_VIEWS.format(version="v1"),
            "flaskapp/wsgi.py": """
                from flask import Flask
                from werkzeug.utils import import_string

                app = Flask(__name__)
                app.register_blueprint(import_string("flaskapp.views:bp"))
            """,
        },
    )
    c, ports = start(cluster, "flaskapp.wsgi:app", preload)
    assert body(ports[1], "/hello") == "blueprint v1"
    wait_watched(c, "flaskapp.views")
    views = tmp_path / "flaskapp" / "views.py"
    edit_and_check_every_port(c, ports, views, "/hello", "v1", "blueprint v2", FLASK_VIEWS.format(version="v2"))


# Pyramid: views are found by config.scan(); no module imports them.

PYRAMID_VIEWS = """
from pyramid.view import view_config

@view_config(route_name="hello", renderer="string")
def hello(request):
    return "scanned {version}"
"""


@pytest.mark.parametrize("preload", [False, True], ids=["lazy", "preload"])
def test_pyramid_config_scan(cluster, tmp_path, preload):
    pytest.importorskip("pyramid")
    write(
        tmp_path,
        {
            "pyrapp/__init__.py": """
                from pyramid.config import Configurator

                def main(global_config, **settings):
                    with Configurator(settings=settings) as config:
                        config.add_route("hello", "/hello")
                        config.scan()
                    return config.make_wsgi_app()
            """,
            "pyrapp/views.py": PYRAMID_VIEWS.format(version="v1"),
            "pyrapp/wsgi.py": "from pyrapp import main\n\napp = main({})\n",
        },
    )
    c, ports = start(cluster, "pyrapp.wsgi:app", preload)
    wait_watched(c, "pyrapp.views")
    views = tmp_path / "pyrapp" / "views.py"
    edit_and_check_every_port(c, ports, views, "/hello", "v1", "scanned v2", PYRAMID_VIEWS.format(version="v2"))


# Trac: the environment (and its plugins/ directory) is opened by the first request;
# a plugin is a top-level module loaded from a file outside sys.path.

TRAC_PLUGIN = """
from trac.core import Component, implements
from trac.web.api import IRequestHandler

class Hello(Component):
    implements(IRequestHandler)

    def match_request(self, req):
        return req.path_info == "/hello"

    def process_request(self, req):
        req.send(b"plugin {version}", "text/plain")
"""


@pytest.fixture
def trac_env(tmp_path):
    pytest.importorskip("trac.web.main")
    env = tmp_path / "tracenv"
    admin = [sys.executable, "-c", "from trac.admin.console import run; import sys; sys.exit(run())"]
    subprocess.run(
        [*admin, str(env), "initenv", "demo", "sqlite:db/trac.db"], check=True, timeout=90, stdout=subprocess.DEVNULL
    )
    write(env, {"plugins/hello.py": TRAC_PLUGIN.format(version="v1")})
    return env


def test_trac_env_plugin(cluster, trac_env):
    c, ports = start(cluster, "trac.web.main:dispatch_request", env={"TRAC_ENV": str(trac_env)})
    assert body(ports[1], "/hello") == "plugin v1"  # the first request opens the env
    wait_watched(c, "hello")
    plugin = trac_env / "plugins" / "hello.py"
    edit_and_check_every_port(c, ports, plugin, "/hello", "v1", "plugin v2", TRAC_PLUGIN.format(version="v2"))
