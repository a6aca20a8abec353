#!/usr/bin/env bash
# Per-thread evidence for bench/AFFINITY.md: one plain waitress threads=1
# process under wrk -c32 for 4 s, once per pinning mode, alternating.
# For each: req/s, then per request served: futex and pselect6 syscalls,
# context switches and CPU time per thread (perf stat --per-thread), and the
# I/O-loop counters of waitress_server.py --count-loop.
#
#   bash bench/probe_threads.sh [ROUNDS]        (run from the repo root)
#
# Needs: wrk, perf (linux-perf; syscall tracepoints), curl, and a python with
# waitress (PY, default /tmp/dev/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/tmp/dev/bin/python}
ROUNDS=${1:-2}
PORT=${PORT:-18100}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT

probe() {  # probe LABEL [waitress_server.py pin args...]
    local label=$1; shift
    "$PY" bench/waitress_server.py --port "$PORT" --count-loop "$@" 2>"$OUT/server.err" &
    local pid=$!
    local deadline=$((SECONDS + 15))
    until curl -fs -o /dev/null "http://127.0.0.1:$PORT/"; do
        [ $SECONDS -lt $deadline ] || { echo "server did not start"; cat "$OUT/server.err"; exit 1; }
        sleep 0.05
    done
    perf stat --per-thread -x, -o "$OUT/perf.csv" \
        -e syscalls:sys_enter_futex,syscalls:sys_enter_pselect6,context-switches,task-clock \
        -p "$pid" -- sleep 4 &
    local perfpid=$!
    wrk -t2 -c32 -d4s "http://127.0.0.1:$PORT/" >"$OUT/wrk.txt"
    wait $perfpid || true
    kill -TERM "$pid"; wait "$pid" || true
    local served
    served=$(sed -n 's/.*loopcount requests=\([0-9]*\).*/\1/p' "$OUT/server.err")
    echo "== $label: $(grep Requests/sec "$OUT/wrk.txt")  (served $served)"
    sed -n 's/^loopcount requests=[0-9]* /   I\/O loop: /p' "$OUT/server.err"
    # perf -x, csv: thread,count,unit,event,...
    awk -F, -v n="$served" -v main="python-$pid" '
        /^python-/ { t = ($1 == main) ? "I/O-loop thread" : "task thread    ";
                     if ($4 == "task-clock") printf "   %s task-clock %7.1f us/request\n", t, $2 * 1000 / n;
                     else printf "   %s %-28s %6.2f /request\n", t, $4, $2 / n }' "$OUT/perf.csv" | sort
}

for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    probe "unpinned"
    probe "pinned to CPU 0 before threads start" --pin early --cpus 0
    probe "split: I/O thread CPU 0, task thread CPU 1" --pin split --cpus 0,1
done
