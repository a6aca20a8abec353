"""Every benchmark scenario runs for a few seconds (``python -m bench NAME --smoke``), so the tool cannot rot.

Marked serial: a smoke run starts servers and wrk that take both of CI's cores, and beside the parallel
pass it starved other tests' processes for 20 s (a CLI that had printed its error took that long to exit).
Alone, after the parallel pass, the 20 runs take ~130 s on 3.13. ``list`` runs in the parallel pass on
every Python: it imports every scenario. It checks that a scenario does not crash (the
servers it started are stopped by its harness at exit), that its JSON is written and that
``python -m bench report`` prints the same tables from it; the figures themselves mean nothing on
a loaded box. Contenders that are not installed are skipped by the scenario, with a note.
"""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ENV, ROOT, missing

from bench import scenarios

SCENARIOS = [module.NAME for module in scenarios.all_scenarios()]


def _bench(*args, timeout, check):
    """``python -m bench ARGS`` from the repo root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@pytest.mark.serial
@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_smoke_run(name, tmp_path):
    if shutil.which("wrk") is None:
        missing("wrk not installed (apt-get install -y wrk)")
    run = _bench(name, "--smoke", "--results-dir", str(tmp_path), timeout=120, check=False)
    assert run.returncode == 0, f"{name} --smoke failed ({run.returncode}):\n{run.stdout}\n{run.stderr[-4000:]}"
    written = list(tmp_path.glob(f"{name}-*.json"))
    assert len(written) == 1, f"expected one {name}-*.json in {tmp_path}, found {written}"
    record = json.loads(written[0].read_text())
    assert record["scenario"] == name and record["load_before"] and record["load_after"]
    assert record["rows"] or record["notes"], f"{name}: no rows and no note saying why:\n{run.stdout}"
    report = _bench("report", str(written[0]), timeout=60, check=True)
    assert report.stdout.strip() in run.stdout, "report does not reprint the run's tables"


def test_list_names_every_scenario():
    listed = _bench("list", timeout=60, check=True).stdout.split()
    assert all(name in listed for name in SCENARIOS), listed
