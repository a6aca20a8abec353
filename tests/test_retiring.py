"""Retirements: slots retire only once every frontend has let go (or the deadline passed)."""

import types

from prefork_waitress._policies.retiring import Retirements


class Timers:
    def __init__(self):
        self.pending = []

    def call_later(self, delay, callback):
        timer = types.SimpleNamespace(delay=delay, callback=callback, cancelled=False)
        timer.cancel = lambda: setattr(timer, "cancelled", True)
        self.pending.append(timer)
        return timer

    def fire(self):
        for timer in [t for t in self.pending if not t.cancelled]:
            timer.callback()


class Frontend:
    def __init__(self):
        self.asked = []

    def release_ports(self, ports, done):
        self.asked.append((ports, done))


def slot(i):
    return types.SimpleNamespace(id=i, port=9000 + i)


def make(frontends, timeout=5.0):
    timers, retired = Timers(), []
    return Retirements(timers.call_later, lambda: frontends, retired.append, timeout), timers, retired


def test_without_frontends_slots_retire_at_once():
    retirements, timers, retired = make([])
    slots = [slot(2), slot(3)]
    retirements.begin(slots)
    assert retired == slots and timers.pending == []


def test_slots_retire_once_every_frontend_is_done_and_done_twice_counts_once():
    a, b = Frontend(), Frontend()
    retirements, timers, retired = make([a, b])
    retirements.begin([slot(2), slot(3)])
    assert a.asked[0][0] == [9002, 9003] and retired == []
    a.asked[0][1]()
    a.asked[0][1]()
    assert retired == [] and [s.id for s in retirements.pending] == [2, 3]
    b.asked[0][1]()
    assert [s.id for s in retired] == [2, 3] and retirements.pending == []
    assert all(t.cancelled for t in timers.pending)


def test_the_deadline_retires_slots_a_frontend_never_released(caplog):
    retirements, timers, retired = make([Frontend()], timeout=7.0)
    retirements.begin([slot(4)])
    assert timers.pending[0].delay == 7.0
    timers.fire()
    assert [s.id for s in retired] == [4]
    assert "did not let go of ports [9004] within 7 s" in caplog.text


def test_a_slot_reclaimed_before_release_never_retires():
    frontend = Frontend()
    retirements, timers, retired = make([frontend])
    retirements.begin([slot(2), slot(3)])
    assert retirements.reclaim(3).id == 3 and retirements.reclaim(3) is None
    frontend.asked[0][1]()
    assert [s.id for s in retired] == [2]


def test_abandon_retires_everything_waiting_and_a_failing_frontend_does_not_hold_slots():
    class Broken:
        def release_ports(self, ports, done):
            raise RuntimeError("socket gone")

    retirements, timers, retired = make([Frontend()])
    retirements.begin([slot(2)])
    retirements.abandon()
    assert [s.id for s in retired] == [2]
    retirements2, _, retired2 = make([Broken()])
    retirements2.begin([slot(5)])
    assert [s.id for s in retired2] == [5]
