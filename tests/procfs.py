"""The one /proc/<pid>/stat reader of the tests (and bench/): state, parent, CPU time, children."""

import os


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime.

    Raises OSError when the process is gone.
    """
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_state(pid):
    """The one-letter state ("R", "S", "Z", ...), or None when there is no such process."""
    try:
        return stat_fields(pid)[0]
    except OSError:
        return None


def cpu_seconds(pid):
    """User + system CPU time of a process."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid):
    """{child pid: state} of every process whose parent is ``pid`` (zombies included)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = stat_fields(entry)
            except OSError:
                continue
            if int(fields[1]) == pid:
                found[int(entry)] = fields[0]
    return found


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
