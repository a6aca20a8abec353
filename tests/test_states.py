"""The slot and worker state machine, and the policies that drive it, on a virtual clock.

A real WorkerPool, SlotReplacer, RollingReload and reconcile pass over fake processes
(tests/virtual_loop.py): time moves only when the test says, so timing is asserted
exactly, with no wall clock of a shared box in it. The cluster tests stay end to end.
"""

import pytest
from virtual_loop import SIGKILL, SIGTERM, Cluster

from prefork_waitress._core.states import (
    SLOT_TRANSITIONS,
    WORKER_TRANSITIONS,
    IllegalTransition,
    SlotState,
    WorkerState,
    move,
)
from prefork_waitress._policies.backoff import BACKOFF_START
from prefork_waitress._policies.recycling import Recycler


@pytest.fixture
def cluster():
    made = []

    def make(n, **options):
        made.append(Cluster(n, **options))
        return made[-1]

    yield make
    for c in made:
        c.close()


class Thing:
    def __init__(self, state):
        self.state = state


@pytest.mark.parametrize("table", [WORKER_TRANSITIONS, SLOT_TRANSITIONS], ids=["worker", "slot"])
def test_the_table_allows_exactly_its_moves_and_refuses_the_rest(table):
    for old, allowed in table.items():
        for new in type(old):
            thing = Thing(old)
            if new is old:
                assert move(thing, new) is False and thing.state is old  # staying put is no move
            elif new in allowed:
                assert move(thing, new) is True and thing.state is new
            else:
                with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
                    move(thing, new)
                assert thing.state is old


def test_exited_and_closed_are_final_and_a_ready_worker_never_boots_again():
    assert not WORKER_TRANSITIONS[WorkerState.EXITED] and not SLOT_TRANSITIONS[SlotState.CLOSED]
    assert WorkerState.BOOTING not in WORKER_TRANSITIONS[WorkerState.READY]


def test_a_slot_goes_empty_starting_serving_and_its_worker_booting_ready_exited(cluster):
    c = cluster(1)
    slot = c.pool.slots[0]
    worker = slot.current  # the pass forked it
    assert (slot.state, worker.state) == (SlotState.STARTING, WorkerState.BOOTING)
    c.ready(worker)
    assert (slot.state, worker.state) == (SlotState.SERVING, WorkerState.READY)
    assert ("worker_started", worker) in c.events.seen
    assert not c.pool.mark_ready(worker, 0.0)  # ready twice: refused, nothing moves
    c.exit(worker, -9)
    assert worker.state is WorkerState.EXITED and slot.current is not worker
    assert slot.state is SlotState.STARTING and slot.current.generation == 2  # the pass refilled it


def test_a_worker_that_keeps_failing_to_boot_backs_off_0_1_0_2_0_4_0_8_s(cluster):
    c = cluster(1)
    slot = c.pool.slots[0]
    for delay in (0.1, 0.2, 0.4, 0.8):
        failing = slot.current
        c.exit(failing, 3)
        assert slot.state is SlotState.BACKING_OFF and slot.current is None
        c.advance(delay - 0.001)
        assert slot.state is SlotState.BACKING_OFF and not c.workers(slot)  # not one fork early
        c.advance(0.001)
        assert slot.state is SlotState.STARTING and slot.current is not failing
    c.ready(slot.current)
    assert slot.state is SlotState.SERVING and slot.boot_failures == 0  # the next failure starts afresh


def test_the_replacer_replaces_one_slot_at_a_time_successor_first(cluster):
    c = cluster(2)
    c.boot_all()
    first, second = (slot.current for slot in c.pool.slots)
    done = []
    for slot in c.pool.slots:
        c.replacer.add(slot, "recycle", lambda ok, failed, code, s=slot: done.append((s.id, ok)))
    c.turn()
    slot0, slot1 = c.pool.slots
    assert (slot0.state, slot1.state) == (SlotState.REPLACING, SlotState.SERVING)
    successor = c.workers(slot0)[1]
    assert successor.state is WorkerState.BOOTING and slot0.current is first  # the old one serves meanwhile
    c.ready(successor)
    assert slot0.current is successor and slot0.state is SlotState.SERVING
    assert first.state is WorkerState.STOPPING and c.signalled(first) == [SIGTERM]
    assert slot1.state is SlotState.SERVING and done == []  # slot 1 waits until the old worker let go
    c.exit(first)
    assert done == [(0, True)] and slot1.state is SlotState.REPLACING
    c.ready(c.workers(slot1)[1])
    c.exit(second)
    assert done == [(0, True), (1, True)]
    assert [s.state for s in c.pool.slots] == [SlotState.SERVING] * 2
    assert [e[1] for e in c.events.seen if e[0] == "worker_started"][-2:] == [slot0.current, slot1.current]


def test_an_old_worker_that_ignores_sigterm_is_killed_after_graceful_timeout_not_before(cluster):
    c = cluster(1, graceful_timeout=30)
    c.boot_all()
    slot = c.pool.slots[0]
    old = slot.current
    c.replacer.add(slot, "recycle", lambda ok, failed, code: None)
    c.turn()
    c.ready(c.workers(slot)[1])
    c.advance(29.999)
    assert c.signalled(old) == [SIGTERM]
    c.advance(0.001)
    assert c.signalled(old) == [SIGTERM, SIGKILL]


def test_a_reload_whose_successor_cannot_start_is_abandoned_and_the_old_workers_serve(cluster):
    c = cluster(2)
    c.boot_all()
    old = [slot.current for slot in c.pool.slots]
    c.rolling.request()
    c.turn()
    assert ("reloading",) in c.events.seen
    successor = c.workers(c.pool.slots[0])[1]
    c.exit(successor, 3)
    assert ("reloaded", False) in c.events.seen and not c.rolling.active
    assert [slot.current for slot in c.pool.slots] == old
    assert [slot.state for slot in c.pool.slots] == [SlotState.SERVING] * 2  # slot 1 was never touched
    assert "could not start" in c.pool.counters.last_reload_error


def test_a_reload_asked_during_another_runs_once_it_ends(cluster):
    c = cluster(1)
    c.boot_all()
    c.rolling.request()
    c.rolling.request()  # queued
    c.turn()
    slot = c.pool.slots[0]
    for _ in range(2):
        old, successor = c.workers(slot)
        c.ready(successor)
        c.exit(old)
    assert [e for e in c.events.seen if e[0].startswith("reload")] == [
        ("reloading",), ("reloaded", True), ("reloading",), ("reloaded", True)
    ]  # fmt: skip
    assert slot.current.generation == 3 and slot.state is SlotState.SERVING


def test_a_recycle_whose_successor_fails_is_retried_after_the_backoff(cluster):
    c = cluster(1)
    c.boot_all()
    recycler = Recycler(c.replacer, c.crashes, c.loop.call_later)
    slot = c.pool.slots[0]
    worker = slot.current
    recycler.request(worker, "served max_requests")
    c.turn()
    c.exit(c.workers(slot)[1], 3)
    assert slot.current is worker and slot.state is SlotState.SERVING  # it keeps serving meanwhile
    c.advance(BACKOFF_START - 0.001)
    assert c.workers(slot) == [worker]
    c.advance(0.001)
    assert slot.state is SlotState.REPLACING  # asked again, at the backoff's end exactly


def test_a_scale_down_retires_the_slot_and_closes_it_once_its_worker_is_gone(cluster):
    c = cluster(2)
    c.boot_all()
    (retiring,) = c.pool.remove_slots(1)
    worker = retiring.current
    assert retiring.state is SlotState.RETIRING and worker.state is WorkerState.READY  # serves until released
    c.pool.retire(retiring)
    assert worker.state in (WorkerState.RETIRING, WorkerState.STOPPING)
    c.exit(worker)
    c.pool.close_slot(retiring)
    assert retiring.state is SlotState.CLOSED and len(c.pool.slots) == 1
    with pytest.raises(IllegalTransition):
        move(retiring, SlotState.SERVING)


def test_a_command_gets_each_reply_a_timeout_at_its_deadline_not_before_and_an_exit_at_once(cluster):
    c = cluster(3)
    c.boot_all()
    got = []
    request = c.commands.send(c.pool.slots, "ping", (), 5.0, got.append)
    seq = {process.slot.id: s for s, process in request.pending.items()}
    c.commands.reply(seq[0], True, "pong")
    c.exit(c.pool.slots[2].current, -9)  # its sentinel fires: what it owed is an error now, not at the deadline
    c.advance(4.999)
    assert got == []
    c.advance(0.001)
    c.turn()
    (replies,) = got
    assert replies[0] == "pong"
    assert replies[1].exc_type == "Timeout" and "within 5 s" in replies[1].message
    assert replies[2].exc_type == "WorkerExited"
