"""Results as JSON, tables as Markdown: every run writes bench/results/<scenario>-<UTC>.json and
prints its tables; ``python -m bench report FILE.json...`` prints the same tables again from the files.

A row is a dict; rows with the same ``table`` value form one table, whose columns are the other
keys in the order they first appear.
"""

import datetime
import json
import os
import platform
import sys
from importlib import metadata

from bench import harness

RESULTS_DIR = os.path.join(harness.REPO_ROOT, "bench", "results")
VERSIONED = ("prefork_waitress", "waitress", "gunicorn", "uwsgi", "granian", "bjoern", "flask", "django")


def machine():
    """What the figures were measured on."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": sys.version.split()[0], "versions": versions, "hostname": platform.node()}


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def write(record, directory=None):
    """Write ``record`` as <directory>/<scenario>-<UTC timestamp>.json; return the path."""
    directory = directory or RESULTS_DIR
    os.makedirs(directory, exist_ok=True)
    stamp = record["started"].replace(":", "").replace("-", "")
    path = os.path.join(directory, f"{record['scenario']}-{stamp}.json")
    count = 1
    while os.path.exists(path):  # two runs in one second
        count += 1
        path = os.path.join(directory, f"{record['scenario']}-{stamp}-{count}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
        f.write("\n")
    return path


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(rows):
    """Markdown for rows of one table (numbers right-aligned)."""
    columns = []
    for row in rows:
        columns += [k for k in row if k != "table" and k not in columns]
    cells = [columns] + [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def markdown(record):
    """The Markdown of one run: its command, machine and load, notes, then one table per ``table`` value."""
    m = record["machine"]
    out = [f"### {record['scenario']}: {record['started']}",
           "",
           f"Command: `{record['command']}`",
           "",
           f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, Python {m['python']}, "
           + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
           + f"; load average before {record['load_before']}, after {record['load_after']}"]
    for note in record.get("notes", []):
        out.append(f"- {note}")
    groups = {}
    for row in record["rows"]:
        groups.setdefault(row.get("table", ""), []).append(row)
    for title, rows in groups.items():
        out += ["", f"#### {title}" if title else "", table(rows)] if title else ["", table(rows)]
    if not record["rows"]:
        out += ["", "(no rows)"]
    return "\n".join(out) + "\n"


def report(paths):
    """The Markdown of several result files, in the order given."""
    parts = []
    for path in paths:
        try:
            with open(path) as f:
                record = json.load(f)
            parts.append(markdown(record))
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"{path}: not a result file of python -m bench ({type(exc).__name__}: {exc})") from None
    return "\n".join(parts)
