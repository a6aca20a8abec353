"""/proc for the tests: the /proc/<pid>/stat reader is bench/harness/procfs.py's (shared with the benchmarks);
threads and tgkill are the tests' own."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)  # bench/ is not installed; appended, so an installed prefork_waitress still wins

from bench.harness import children_of, cpu_seconds, process_state, stat_fields  # noqa: E402

__all__ = ["children_of", "cpu_seconds", "process_state", "signal_thread", "stat_fields", "threads_of"]


def threads_of(pid):
    """The thread ids of a process, its main thread (tid == pid) first."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    return sorted(tids, key=lambda tid: tid != pid)


def signal_thread(pid, tid, signum):
    """tgkill(2): hand a signal to one thread of a process, as the kernel may do with any kill()."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(234 if os.uname().machine == "x86_64" else 131, pid, tid, signum) != 0:  # SYS_tgkill
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {signum})")
