"""/proc, parsed in one place (the tests read it through this module too)."""

import os

TICK = os.sysconf("SC_CLK_TCK")



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


def cpu_seconds(pid, default=None):
    """User + system CPU time of a process; ``default`` (if given) when it is gone, else OSError."""
    try:
        fields = stat_fields(pid)
    except OSError:
        if default is None:
            raise
        return default
    return (int(fields[11]) + int(fields[12])) / TICK


def children_of(pid):
    """{child pid: state} of every process whose parent is ``pid`` (zombies included), by a /proc scan."""
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


def children(pid):
    """The pids of ``pid``'s children (every thread's /proc children list, cheap); empty if it is gone."""
    kids = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def tree(pid):
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def tree_cpu(pid):
    """CPU seconds of ``pid`` and its live descendants."""
    return sum(cpu_seconds(p, default=0.0) for p in tree(pid))



def pid_alive(pid: int) -> bool:
    """Running and not a zombie."""
    return process_state(pid) not in (None, "Z")
