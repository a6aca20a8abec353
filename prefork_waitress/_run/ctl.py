"""``prefork-waitress ctl --socket PATH ACTION``: drive a running master through its control socket.

Exit status: 0 when the master did what was asked, 1 when it refused or
failed (or cannot be reached), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..integrations.control import MAX_COMMAND_TIMEOUT
from ..integrations.control_client import ControlError, request
from . import top
from .cli import Parser

EXIT_OK, EXIT_FAILED = 0, 1
# The client outwaits the master: a command's reply comes at the latest after its own timeout.
DEFAULT_TIMEOUTS = {"reload": 600.0, "upgrade": 600.0, "stop": 300.0, "command": MAX_COMMAND_TIMEOUT + 10.0}
COLUMNS = ("slot", "port", "state", "pid", "process", "gen", "uptime", "requests", "restarts", "queued")
REFORK_COLUMN = ("refork",)  # the refork generation, once a worker has one (refork_after)


def build_parser() -> Parser:
    """The ``ctl`` parser: global ``--socket`` and ``--timeout``, one sub-command per action."""
    parser = Parser(prog="prefork-waitress ctl", description="Control a running prefork-waitress master.")
    parser.add_argument("--socket", required=True, metavar="PATH", help="the master's --control-socket")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="how long to wait for the reply")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    status = actions.add_parser("status", help="the master and its workers")
    status.add_argument("--json", action="store_true", help="print the raw JSON status")
    actions.add_parser("reload", help="rolling reload; waits until it has finished")
    scale = actions.add_parser("scale", help="grow or shrink to N workers")
    scale.add_argument("workers", type=int, metavar="N")
    stop = actions.add_parser("stop", help="stop the master; waits until it has stopped")
    stop.add_argument("--now", action="store_true", help="do not let in-flight requests finish")
    stop.add_argument("--no-wait", action="store_true", help="return as soon as the stop has begun")
    command = actions.add_parser("command", help="run a worker command and print every worker's reply")
    command.add_argument("name", metavar="NAME")
    command.add_argument("args", nargs="*", metavar="ARG", help="JSON if it parses as JSON, else a string")
    command.add_argument("--worker", type=int, metavar="ID", help="only the worker of this slot")
    command.add_argument("--command-timeout", type=float, default=5.0, metavar="SECONDS")
    actions.add_parser("metrics", help="print the Prometheus metrics (text format 0.0.4)")
    view = actions.add_parser("top", help="live view of the workers (q quits); plain text when not on a terminal")
    view.add_argument("--once", action="store_true", help="print one screen (rates over one interval) and exit")
    view.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh interval (default 1)")
    actions.add_parser(
        "upgrade",
        help="start a new master program on the same sockets; waits until it serves every slot "
        "(then the old one drains and exits), or fails with its error while the old one serves on",
    )
    actions.add_parser("tracebacks", help="every worker writes its threads' tracebacks to its stderr")
    return parser


def _json_or_string(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:
        raise ValueError(f"argument {text[:20]}... is nested too deeply to be sent as JSON") from None


def make_request(args: argparse.Namespace) -> Dict[str, Any]:
    """The JSON request for the parsed command line."""
    if args.action == "scale":
        return {"action": "scale", "workers": args.workers}
    if args.action == "stop":
        return {"action": "stop", "graceful": not args.now, "wait": not args.no_wait}
    if args.action == "command":
        return {
            "action": "command",
            "name": args.name,
            "args": [_json_or_string(arg) for arg in args.args],
            "worker": args.worker,
            "timeout": args.command_timeout,
        }
    return {"action": args.action}


def _uptime(started_at: Optional[float]) -> str:
    if started_at is None:
        return "-"
    seconds = int(max(0.0, time.time() - started_at))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _queued(worker: Dict[str, Any]) -> str:
    """Connections waiting in the slot's accept queue, and its limit ("-" where the OS cannot say)."""
    length, limit = worker.get("accept_queue"), worker.get("accept_queue_limit")
    return "-" if length is None else f"{length}/{limit}"


def format_status(status: Dict[str, Any]) -> str:
    """A readable table: one line for the master, one row per worker slot (its state, its process's)."""
    master = status["master"]
    lines = [
        f"master pid {master['pid']}, {master['state']}{', reloading' if master.get('reloading') else ''}, "
        f"{master['workers']} workers on {master.get('host', '?')}"
    ]
    reforked = any(worker.get("refork_generation") for worker in status["workers"])
    columns = COLUMNS + (REFORK_COLUMN if reforked else ())
    rows: List[Sequence[Any]] = [columns]
    for worker in status["workers"]:
        requests = worker.get("requests_served")
        refork = (worker.get("refork_generation", 0),) if reforked else ()
        rows.append(
            (
                worker["id"],
                worker["port"],
                worker.get("state", "-"),  # the slot's (SlotState)
                worker["pid"] if worker["pid"] is not None else "-",
                worker.get("worker_state") or "-",  # its process's (WorkerState)
                worker["generation"],
                _uptime(worker.get("started_at")),
                requests if requests is not None else "-",
                worker["restarts"],
                _queued(worker),
                *refork,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(columns))]
    for row in rows:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _print_status(args: argparse.Namespace, result: Any) -> int:
    print(json.dumps(result, indent=2) if args.json else format_status(result))
    return EXIT_OK


def _print_command(args: argparse.Namespace, result: Any) -> int:
    """Every reply on stdout (JSON), and each worker's error once more on stderr, by slot."""
    print(json.dumps(result, indent=2, sort_keys=True, default=repr))
    failed = {slot: r for slot, r in result.items() if isinstance(r, dict) and set(r) == {"error", "type"}}
    for slot, reply in failed.items():
        sys.stderr.write(f"prefork-waitress ctl: worker {slot}: {reply['error']}\n")
    return EXIT_FAILED if failed else EXIT_OK


def _print_done(text: Callable[[argparse.Namespace, Any], str]) -> Callable[[argparse.Namespace, Any], int]:
    def printer(args: argparse.Namespace, result: Any) -> int:
        print(text(args, result))
        return EXIT_OK

    return printer


PRINTERS: Dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "status": _print_status,
    "command": _print_command,
    "reload": _print_done(lambda a, r: f"reloaded: {len(r['ports'])} workers on ports {r['ports']}"),
    "scale": _print_done(lambda a, r: f"{r['workers']} workers on ports {r['ports']}"),
    "stop": _print_done(lambda a, r: "stopping" if a.no_wait else "stopped"),
    "metrics": _print_done(lambda a, r: r["text"].rstrip("\n")),
    "upgrade": _print_done(
        lambda a, r: (
            f"upgraded: master {r['pid']} (was {r['old_pid']}) serves ports {r['ports']}; "
            f"master {r['old_pid']} is draining"
        )
    ),
    "tracebacks": _print_done(lambda a, r: f"asked {r['workers']} workers to write their tracebacks to stderr"),
}


def main(argv: Sequence[str]) -> int:
    """Send one request, print the reply, and say by the exit status whether it worked."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUTS.get(args.action, 30.0)
    if args.action == "top":
        if not 0.1 <= args.interval <= 3600:
            parser.error(f"top --interval: expected 0.1 to 3600 seconds, got {args.interval:g}")
        return top.main(args.socket, args.interval, args.once, timeout=min(timeout, 10.0))
    try:
        message = make_request(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        reply = request(args.socket, message, timeout=timeout)
    except ControlError as exc:
        sys.stderr.write(f"prefork-waitress ctl: error: {exc}\n")
        return EXIT_FAILED
    if not reply.get("ok"):
        sys.stderr.write(f"prefork-waitress ctl: {args.action} failed: {reply.get('error')}\n")
        return EXIT_FAILED
    try:
        return PRINTERS[args.action](args, reply.get("result"))
    except (ValueError, TypeError, LookupError, AttributeError, RecursionError) as exc:
        sys.stderr.write(f"prefork-waitress ctl: error: unexpected reply to {args.action}: {exc}\n")
        return EXIT_FAILED
