"""The scenario registry: each scenario a module here with

- ``NAME`` and ``HELP`` (one line),
- ``add_arguments(parser)``: its own options,
- ``SMOKE``: option defaults for ``--smoke`` (a run of a few seconds that proves it works),
- ``run(args)``: runs it and returns rows (dicts; see bench/results.py); ``args.notes`` is a list
  it may append to (e.g. a contender skipped and why).
"""

import importlib

MODULES = ("peers", "throughput", "cpu_per_request", "affinity", "mixed", "profile_worker", "app_interference",
           # the lifecycle scenarios
           "watcher_latency", "meter_cost", "crash_loop", "soak", "kill_storm", "core", "respawn", "metrics_scrape",
           "faults", "reload", "deploy", "memory", "chaos")


def load(name):
    """The scenario module called ``name`` (KeyError if there is none)."""
    for module_name in MODULES:
        module = importlib.import_module(f"bench.scenarios.{module_name}")
        if module.NAME == name:
            return module
    raise KeyError(name)


def all_scenarios():
    return [importlib.import_module(f"bench.scenarios.{m}") for m in MODULES]
