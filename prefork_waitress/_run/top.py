"""``prefork-waitress ctl --socket PATH top``: a live view of the slots, refreshed every interval.

In a terminal it draws with curses (``q`` quits); otherwise (a pipe, a file)
it prints plain text screens, one per interval, and ``--once`` prints one and
exits. Each screen comes from two ``top`` snapshots of the control socket:
requests per second and the p50/p99 latencies are over the time between them.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..integrations.control_client import ControlError, request

__all__ = ["format_screen", "main", "quantile"]

EXIT_OK, EXIT_FAILED = 0, 1
COLUMNS = ("SLOT", "PORT", "PID", "STATE", "GEN", "BUSY", "REQ/S", "P50", "P99", "RSS", "RESTARTS", "QUEUE")
# restarts by reason, shortest first letters: crash, killed, timeout, recycled, reload, refork
SHORT_REASONS = {"crash": "c", "killed": "k", "timeout": "t", "recycled": "rc", "reload": "rl", "refork": "rf"}
QUIT_KEYS = (ord("q"), ord("Q"))

Snapshot = Dict[str, Any]


def quantile(bounds: Sequence[float], buckets: Sequence[int], q: float) -> Optional[float]:
    """The ``q`` quantile (seconds) of a non-cumulative histogram, interpolated in its bucket."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(bounds):  # +Inf: all that can be said is "above the last bound"
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.1f}ms" if value < 0.1 else f"{value * 1000:.0f}ms"
    return f"{value:.1f}s"


def _mib(value: Optional[int]) -> str:
    return "-" if value is None else f"{value / 1048576:.1f}M"


def _printable(text: str) -> str:
    """A path as a terminal may show it: control and non-ASCII characters as \\xhh (no escape sequences)."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in text)


def _window(prev: Optional[Snapshot], cur: Snapshot) -> Tuple[float, Dict[int, Dict[str, Any]]]:
    """Seconds between the snapshots, and each slot's entry in the previous one."""
    if prev is None:
        return 0.0, {}
    return max(0.0, cur["monotonic"] - prev["monotonic"]), {w["id"]: w for w in prev["workers"]}


def _delta(now: Sequence[int], before: Optional[Sequence[int]]) -> List[int]:
    if before is None or len(before) != len(now):
        return [0] * len(now)
    return [max(0, a - b) for a, b in zip(now, before)]


def _restarts(worker: Dict[str, Any]) -> str:
    """``3 (k1 rl2)``: the slot's new processes since the start, and how many for each reason (SHORT_REASONS)."""
    reasons = worker.get("restarts_by_reason")
    if reasons is None:
        return str(worker["restarts"])
    detail = " ".join(f"{SHORT_REASONS.get(reason, reason)}{n}" for reason, n in reasons.items() if n)
    return f"{sum(reasons.values())} ({detail})" if detail else "0"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def _row(worker: Dict[str, Any], window: List[int], seconds: float, bounds: Sequence[float]) -> Tuple[str, ...]:
    """One slot's cells, in COLUMNS order (``window``: its duration histogram over the last interval)."""
    queue = worker.get("accept_queue")
    return (
        str(worker["id"]),
        str(worker["port"]),
        str(worker["pid"] or "-"),
        worker["state"],
        str(worker["generation"]),
        "busy" if worker["busy"] else "idle",
        _rate(sum(window), seconds),
        _seconds(quantile(bounds, window, 0.5)),
        _seconds(quantile(bounds, window, 0.99)),
        _mib(worker.get("rss")),
        _restarts(worker),
        "-" if queue is None else f"{queue}/{worker.get('accept_queue_limit')}",
    )


def _running(worker: Dict[str, Any]) -> str:
    """``  4.7s  GET /slow`` for a busy worker (safe to print on a terminal), "" for an idle one."""
    current = worker.get("request")
    if not current:
        return ""
    return f"  {_seconds(current['elapsed']):>7}  " + _printable(f"{current['method']} {current['path']}")


def format_screen(prev: Optional[Snapshot], cur: Snapshot) -> List[str]:
    """The lines of one screen: the master and cluster totals, then a row per slot."""
    master, bounds, workers = cur["master"], cur["bounds"], cur["workers"]
    seconds, before = _window(prev, cur)
    rows: List[Sequence[str]] = [COLUMNS]
    total = [0] * (len(bounds) + 1)
    for worker in workers:
        old = before.get(worker["id"])
        window = _delta(worker["buckets"], old["buckets"] if old else None)
        total = [a + b for a, b in zip(total, window)]
        rows.append(_row(worker, window, seconds, bounds))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    table[0] += "  ELAPSED  REQUEST"
    for i, worker in enumerate(workers, 1):
        table[i] += _running(worker)
    restarts = " ".join(f"{reason}({SHORT_REASONS.get(reason, '?')}) {n}" for reason, n in master["restarts"].items())
    reloads = master["reloads"]
    state = master["state"] + (", reloading" if master.get("reloading") else "")
    busy = sum(bool(worker["busy"]) for worker in workers)
    header = [
        f"prefork-waitress master {master['pid']}: {state}, {master['workers']} workers on {master.get('host', '?')}, "
        f"RSS {_mib(master.get('rss'))}, {time.strftime('%H:%M:%S', time.localtime(cur['time']))}",
        f"requests {sum(w['requests'] for w in workers)} total, {_rate(sum(total), seconds)}/s, "
        f"busy {busy}/{len(workers)}, p50 {_seconds(quantile(bounds, total, 0.5))}, "
        f"p99 {_seconds(quantile(bounds, total, 0.99))}" + (f" (last {seconds:.1f} s)" if seconds else ""),
        f"restarts: {restarts}; reloads: ok {reloads.get('ok', 0)}, failed {reloads.get('failed', 0)}",
        "",
    ]
    return [line.rstrip() for line in header + table]


class Source:
    """Snapshots from the master's control socket, each one paired with the one before."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.previous: Optional[Snapshot] = None

    def fetch(self) -> Snapshot:
        reply = request(self.path, {"action": "top"}, timeout=self.timeout)
        if not reply.get("ok"):
            raise ControlError(f"top failed: {reply.get('error')}")
        snapshot: Snapshot = reply["result"]
        return snapshot

    def screen(self) -> List[str]:
        """The next screen (the first one has no rates yet); ControlError if the master cannot be reached."""
        current = self.fetch()
        lines = format_screen(self.previous, current)
        self.previous = current
        return lines


def _plain(source: Source, interval: float, once: bool) -> int:
    """Text screens on stdout: one (``--once``, after one interval for the rates), or one per interval."""
    while True:
        time.sleep(interval)  # the interval the rates are measured over, not a synchronisation
        print("\n".join(source.screen()) + "\n", flush=True)
        if once:
            return EXIT_OK


def _curses(source: Source, interval: float, first: List[str]) -> int:
    import curses

    def draw(screen: Any, lines: List[str]) -> None:
        """The lines cut to the window (a tiny one shows what fits), and the key help below them."""
        height, width = screen.getmaxyx()
        screen.erase()
        try:
            for row, line in enumerate(lines[: height - 1]):
                screen.addnstr(row, 0, line, max(0, width - 1))
            screen.addnstr(min(len(lines), height - 1), 0, "q: quit", max(0, width - 1), curses.A_DIM)
        except curses.error:
            pass
        screen.refresh()

    def loop(screen: Any) -> int:
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        shown = first
        draw(screen, shown)
        due = time.monotonic() + interval
        while True:
            if time.monotonic() >= due:
                try:
                    shown = source.screen()
                except ControlError as exc:
                    shown = [f"prefork-waitress ctl top: {exc}; retrying every {interval:g} s"]
                draw(screen, shown)
                due = time.monotonic() + interval
            screen.timeout(max(1, int((due - time.monotonic()) * 1000)))
            key = screen.getch()
            if key in QUIT_KEYS:
                return EXIT_OK
            if key == curses.KEY_RESIZE:
                draw(screen, shown)

    try:
        result: int = curses.wrapper(loop)
    except curses.error as exc:  # no usable terminal description (TERM unset, unknown, "dumb")
        sys.stderr.write(f"prefork-waitress ctl top: cannot draw on this terminal ({exc}); printing text\n")
        return _plain(source, interval, once=False)
    return result


def main(
    socket_path: str, interval: float, once: bool, timeout: float, tty: Optional[Callable[[], bool]] = None
) -> int:
    """Run the view; 0 when quit (or once printed), 1 when the master cannot be reached at the start."""
    source = Source(socket_path, timeout)
    try:
        first = source.screen()  # no rates yet: they need a second snapshot
        if once or not (tty or sys.stdout.isatty)():
            return _plain(source, interval, once)
        return _curses(source, interval, first)
    except ControlError as exc:
        sys.stderr.write(f"prefork-waitress ctl: error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK
