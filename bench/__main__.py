"""``python -m bench SCENARIO [options]``: run one benchmark scenario, write its JSON, print its tables.

    python -m bench list                      # the scenarios
    python -m bench SCENARIO --help           # its options
    python -m bench SCENARIO --smoke          # a run of a few seconds that proves it works
    python -m bench report FILE.json...       # the Markdown tables again, from result files
"""

import argparse
import os
import shlex
import sys

from bench import harness, results, scenarios


def _list():
    for module in scenarios.all_scenarios():
        print(f"{module.NAME:18s} {module.HELP}")


def _shown(value):
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _parser(module):
    p = argparse.ArgumentParser(prog=f"python -m bench {module.NAME}", description=module.HELP)
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds per scenario, to prove it runs (defaults: "
                   + " ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in module.SMOKE.items()) + ")")
    p.add_argument("--results-dir", default=results.RESULTS_DIR, help="where the JSON goes (default: %(default)s)")
    module.add_arguments(p)
    return p


def run_scenario(module, argv):
    """Parse ``argv`` for ``module``, run it, write the JSON, print the Markdown; return the JSON's path."""
    parser = _parser(module)
    if "--smoke" in argv:
        parser.set_defaults(**module.SMOKE)
    args = parser.parse_args(argv)
    args.notes = []
    args.failures = []  # a scenario with a verdict appends what failed: the JSON is written, then exit 1
    args.details = {}  # anything else a scenario keeps (e.g. chaos's report), under "details" in the JSON
    harness.install_exit_handlers()
    record = {
        "scenario": module.NAME,
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in [module.NAME, *argv]),
        "argv": [module.NAME, *argv],
        "started": results.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": results.machine(),
        "load_before": results.loadavg(),
    }
    try:
        rows = module.run(args)
    finally:
        harness.stop_all()
    record.update(
        finished=results.utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        load_after=results.loadavg(),
        options={k: v for k, v in vars(args).items() if k not in ("notes", "results_dir", "failures", "details")},
        notes=args.notes,
        rows=rows,
    )
    if args.failures:
        record["failures"] = args.failures
    if args.details:
        record["details"] = args.details
    path = results.write(record, args.results_dir)
    print(results.markdown(record))
    print(f"(written to {os.path.relpath(path)})")
    if args.failures:
        print(f"{module.NAME} FAILED:", *args.failures, sep="\n  ", file=sys.stderr)
        raise SystemExit(1)
    return path


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        _list()
        return 0
    command, rest = argv[0], argv[1:]
    if command == "list":
        _list()
        return 0
    if command == "report":
        parser = argparse.ArgumentParser(prog="python -m bench report",
                                         description="the Markdown of runs, regenerated from their JSON")
        parser.add_argument("files", nargs="+", metavar="FILE.json", help="written by a run (bench/results/)")
        print(results.report(parser.parse_args(rest).files), end="")
        return 0
    try:
        module = scenarios.load(command)
    except KeyError:
        sys.exit(f"unknown scenario {command!r}; `python -m bench list` lists them")
    run_scenario(module, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
