"""Master's public names are exactly its documented API (hooks, control methods, state): a new public
name must be documented (docs/, e.g. concepts.rst) and added here, or be private."""

import glob
import os

from prefork_waitress import Master
from prefork_waitress.master import handle_of

HOOKS = {
    "when_ready",
    "worker_started",
    "worker_exited",
    "ports_changed",
    "reloading",
    "reloaded",
    "upgraded",
    "stopping",
}
CONTROL = {
    "start",
    "stop",
    "reload",
    "upgrade",
    "scale",
    "command",
    "command_async",
    "add_io_handler",
    "add_write_handler",
    "remove_io_handler",
    "remove_write_handler",
    "add_signal_handler",
    "call_later",
}
STATE = {"settings", "workers", "ports", "state", "status", "counters", "activity", "unserved_slots"}


def public_names(obj):
    return {name for name in dir(obj) if not name.startswith("_")}


def test_master_has_exactly_the_documented_public_names():
    master = Master("apps:app", workers=1, base_port=0)
    assert public_names(master) == HOOKS | CONTROL | STATE


DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def test_each_documented_name_is_in_the_docs():
    text = ""
    for path in glob.glob(os.path.join(DOCS, "**", "*.rst"), recursive=True):
        with open(path) as f:
            text += f.read()
    missing = sorted(name for name in HOOKS | CONTROL | STATE if f"``{name}" not in text and f".{name}" not in text)
    assert missing == [], f"not documented under docs/: {missing}"


def test_a_subclass_attribute_cannot_shadow_the_master_internals():
    """Attributes a subclass picks for itself (the names the master used to keep) leave the master working."""

    class Mine(Master):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pool = self._loop = self._state = self._events = self._code = "mine"

    master = Mine("apps:app", workers=2, base_port=0)
    assert master.state == "new"
    assert len(master.workers) == 0 and master.status()["master"]["workers"] == 0
    assert handle_of(master).settings.workers == 2
