"""A loop on virtual time, with fake worker processes, to test the master's policies without a wall clock.

``VirtualLoop`` implements the small interface the pool and the policies use (call_later,
call_at, call_soon, add_reader, remove_reader, signal_sockets); time moves only when a test
calls ``advance``. ``Cluster`` builds a real WorkerPool, SlotReplacer, RollingReload and
Reconciler on it, with fake processes given through the pool's constructor: no fork, no signal.
"""

import heapq
import itertools
import os
import signal
import socket
from multiprocessing.connection import Connection

from prefork_waitress._core.commands import CommandChannel
from prefork_waitress._core.lifecycle import State
from prefork_waitress._core.pool import WorkerPool
from prefork_waitress._policies.backoff import CrashLoops, backoff_delay
from prefork_waitress._policies.reconcile import Reconciler
from prefork_waitress._policies.replacing import SlotReplacer
from prefork_waitress._policies.rolling import RollingReload
from prefork_waitress.options import make_settings


class VirtualTimer:
    def __init__(self, deadline, callback):
        self.deadline, self.callback, self.cancelled = deadline, callback, False

    def cancel(self):
        self.cancelled = True

    def __lt__(self, other):
        return self.deadline < other.deadline


class VirtualLoop:
    def __init__(self):
        self.now = 0.0
        self._timers = []
        self._soon = []
        self.readers = {}
        self._order = itertools.count()

    def call_at(self, deadline, callback):
        timer = VirtualTimer(deadline, callback)
        heapq.heappush(self._timers, (deadline, next(self._order), timer))
        return timer

    def call_later(self, delay, callback):
        return self.call_at(self.now + delay, callback)

    def call_soon(self, callback):
        self._soon.append(callback)

    def add_reader(self, obj, callback):
        self.readers[obj] = callback

    def remove_reader(self, obj):
        self.readers.pop(obj, None)

    def signal_sockets(self):
        return []

    def run_soon(self):
        while self._soon:
            self._soon.pop(0)()

    def advance(self, seconds, after_each=lambda: None):
        """Move the clock by ``seconds``, running each timer due on the way at its own time."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            deadline, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, deadline)
            if not timer.cancelled:
                timer.callback()
                after_each()
        self.now = end


class FakeProcess:
    """What the pool needs of a process; it exits when the test says so."""

    _pids = itertools.count(10**8)  # above any real pid_max: no real process has these

    def __init__(self, slot, generation, conn):
        self.slot_id, self.generation = slot.id, generation
        self.pid = next(self._pids)
        self.sentinel = self.pid
        self.exitcode = None
        self.conn = Connection(os.dup(conn.fileno()))  # the worker's end of its Pipe, kept open as a worker does

    def join(self):
        pass

    def close(self):
        self.conn.close()


class Events:
    def __init__(self):
        self.seen = []

    def emit(self, hook, *args):
        self.seen.append((hook, *args))

    def tell(self, point, guarded):
        self.seen.append((point,))


class Cluster:
    """A pool of ``n`` slots on a VirtualLoop, wired as the master wires it (ready, exit, the pass)."""

    def __init__(self, n, **options):
        self.loop = VirtualLoop()
        self.settings = make_settings(base_port=0, **options)
        self.signals = []  # (pid, signal) the pool sent
        self.state = State.BOOTING
        self.events = Events()
        self.commands = CommandChannel(self.loop)
        self.pool = WorkerPool(
            self.settings,
            self.loop,
            self.commands,
            child_options=lambda: {},
            master_objects=lambda: [],
            start_process=FakeProcess,
            send_signal=lambda pid, signum: self.signals.append((pid, signum)),
        )
        self.pool.retry_delay = backoff_delay
        self.pool.on_serving = lambda worker: self.events.emit("worker_started", worker)
        self.pool.on_exit = self._exited
        self.crashes = CrashLoops()
        self.replacer = SlotReplacer(self.pool, lambda: self.state is State.RUNNING)
        self.rolling = RollingReload(self.pool, self.replacer, self.events, lambda: self.state, lambda: None)
        self.reconciler = Reconciler(
            self.pool, self.replacer, self.rolling, lambda: self.state.serving, steps=[self._become_running]
        )
        for _ in range(n):
            self.pool.add_slot(socket.socket())
        self.turn()

    def _become_running(self):
        if self.state is State.BOOTING and self.pool.all_ready():
            self.state = State.RUNNING
            return True
        return False

    def _exited(self, worker, exitcode):
        was_current = self.pool.vacate(worker)
        self.events.emit("worker_exited", worker, exitcode)
        if self.replacer.process_exited(worker, exitcode) or not was_current or self.state.ending:
            return
        delay = 0.0 if worker.ready else self.crashes.failed(worker.slot, worker, exitcode)
        self.pool.respawn(worker.slot, "exit", delay)

    # what a loop turn and the worker processes do ------------------------------------------
    def turn(self):
        """The end of a loop turn: deferred messages, then the reconcile pass."""
        self.loop.run_soon()
        self.reconciler.run()

    def advance(self, seconds):
        self.loop.advance(seconds, after_each=self.turn)
        self.turn()

    def ready(self, worker):
        """``worker`` reports ready (as the master's ``ready`` handler takes it)."""
        if self.pool.mark_ready(worker, self.loop.now):
            self.crashes.recovered(worker.slot)
            self.replacer.successor_ready(worker)
            if worker.slot.current is worker:
                self.pool.settle_slot(worker)
        self.turn()

    def exit(self, worker, exitcode=0):
        """``worker``'s process ends: its sentinel fires."""
        worker.process.exitcode = exitcode
        self.loop.readers[worker.sentinel](worker.sentinel)
        self.turn()

    def boot_all(self):
        for slot in self.pool.slots:
            self.ready(slot.current)
        assert self.state is State.RUNNING

    def workers(self, slot):
        """The live processes of ``slot``, oldest first."""
        return sorted((w for w in self.pool.processes.values() if w.slot is slot), key=lambda w: w.pid)

    def signalled(self, worker):
        return [signum for pid, signum in self.signals if pid == worker.pid]

    def close(self):
        for slot in self.pool.slots:
            slot.sock.close()


SIGTERM, SIGKILL = signal.SIGTERM, signal.SIGKILL
