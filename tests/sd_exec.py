"""Pass sockets to a program exactly as systemd does: fds from 3, LISTEN_FDS, LISTEN_PID (this pid,
kept by exec) and, with --names, LISTEN_FDNAMES.

    python sd_exec.py [--names a:b] FD [FD...] -- PROGRAM [ARG...]
"""

import fcntl
import os
import sys


def main(argv):
    names = None
    if argv[0] == "--names":
        names, argv = argv[1], argv[2:]
    split = argv.index("--")
    fds, program = [int(fd) for fd in argv[:split]], argv[split + 1 :]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
    for fd in fds:
        os.close(fd)
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index)  # dup2 leaves the new fd inheritable, as systemd passes it
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    if names is not None:
        os.environ["LISTEN_FDNAMES"] = names
    os.execvp(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
