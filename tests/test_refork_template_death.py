"""A refork template that dies is noticed at once, though the workers forked from it live on (chaos seed 1).

The master watched a worker it forked through its multiprocessing sentinel, a
pipe every descendant inherits: the workers reforked from a template held it
open, so the template's death went unnoticed (its slot unserved, its port's
queue growing) until they all exited too.
"""

import os
import signal
import sys

import pytest
from conftest import get, pid_alive
from test_refork import refork_from_slot_0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reforking is Linux only")


@pytest.mark.timeout(60)
def test_a_killed_template_is_reaped_and_its_slot_refilled_while_its_reforked_workers_serve(cluster):
    c, ready, infos = refork_from_slot_0(cluster, workers_count=2)
    template = ready["workers"][0]["pid"]
    assert infos[1]["reforked_from"] == template and pid_alive(infos[1]["pid"])
    os.kill(template, signal.SIGKILL)
    exited = c.wait_event("worker_exited", 5, where=lambda e: e["info"]["pid"] == template)
    assert exited["exitcode"] == -signal.SIGKILL
    respawned = c.wait_event(
        "worker_started", 10, where=lambda e: e["info"]["id"] == 0 and e["info"]["pid"] != template
    )
    respawned = respawned["info"]
    assert get(ready["ports"][0])[1].split()[0] == str(respawned["pid"])
    assert pid_alive(infos[1]["pid"]), "the reforked worker of slot 1 was left alone"
    c.signal(signal.SIGTERM)
    assert c.wait_exit() == 0
